"""The release matrix for real: web on Debian 11, 12 and 13 and banking-hardened on 12 and 13, each baked from
the mirror and verified by `golden verify --all-firmwares`: three clones, under BIOS, UEFI, and UEFI with
Secure Boot enforced, each passing its suites.

Hours under TCG (markers `vm`, `matrix`): `make test-matrix` runs it, CI does not. Pick cells with
`-k`, e.g. `make test-matrix ARGS="-k web-13"`. Debian 10 is not here: its archive is not reachable from
this kind of machine.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from goldenimage.bake.pipeline import bake
from goldenimage.model.profiles import resolve
from goldenimage.model.releases import matrix
from tests.conftest import ROOT

pytestmark = [pytest.mark.vm, pytest.mark.matrix]

#: In the order they are worth running on a busy machine: the releases CI never bakes first.
CELLS = [("web", 13), ("web", 11), ("banking-hardened", 12), ("banking-hardened", 13), ("web", 12)]


@pytest.mark.parametrize(("profile", "debian"), CELLS, ids=[f"{p}-{d}" for p, d in CELLS])
def test_bakes_and_passes_its_suites_under_every_firmware(profile: str, debian: int) -> None:
    artifact = bake(profile, debian)
    manifest = artifact.manifest().data
    release = matrix().get(debian)
    assert manifest["release"]["number"] == debian
    assert manifest["firmware"] == ["bios", "uefi", "uefi-secureboot"]
    # the release's own names made it into the image: PHP for web, the NTP daemon for the hardening layer
    resolved = resolve(profile, debian)
    assert set(resolved.packages) <= set(manifest["packages"]), set(resolved.packages) - set(manifest["packages"])
    if profile == "web":
        assert f"php{release.vars['php']}-fpm" in manifest["packages"]
    else:
        assert {"ntpsec", release.vars["ntp_package"]} <= set(manifest["packages"])
        assert not {"chrony", "systemd-timesyncd"} & set(manifest["packages"])
    assert manifest["cloud_init"].startswith(release.cloud_init_version)

    proc = subprocess.run([sys.executable, "-m", "goldenimage.cli", "verify", "--all-firmwares",
                           str(artifact.qcow2)], cwd=ROOT, capture_output=True, text=True, timeout=3 * 3600)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-3000:]
    assert "(bios, uefi and uefi-secureboot)" in proc.stderr
    assert proc.stdout.count(" passed") == 3 and " failed" not in proc.stdout  # the suites ran on each clone
