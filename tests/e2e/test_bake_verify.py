"""The whole chain on a real bake: base from the mirror, packer + QEMU, the artifact store, verify.

These boot virtual machines (marker `vm`); CI runs them, `make test-fast` leaves them out.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from goldenimage.bake import store
from goldenimage.commands.bake import bake, layer_packages
from goldenimage.core.run import run
from goldenimage.model.profiles import resolve
from tests.conftest import ROOT

pytestmark = pytest.mark.vm
PROFILE = "web"


@pytest.fixture(scope="session")
def web_artifact() -> store.Artifact:
    """The web artifact for Debian 12, baked once per session (or found in the store by its key)."""
    return bake(PROFILE, 12)


def test_bake_leaves_a_compressed_qcow2_its_checksum_and_a_manifest(web_artifact):
    qcow2 = web_artifact.qcow2
    assert qcow2.name.startswith("web-debian12-") and qcow2.name.endswith(f"-{web_artifact.key}.qcow2")
    info = json.loads(run(["qemu-img", "info", "--output=json", qcow2]).stdout)
    assert info["format"] == "qcow2"
    # compressed and trimmed: far smaller than the virtual disk
    assert info["actual-size"] < info["virtual-size"] / 3
    # zlib, which every consumer's qemu-img reads (the package layer below it is zstd: only ours reads that)
    assert info["format-specific"]["data"]["compression-type"] == "zlib"
    digest, name = web_artifact.sha256_file.read_text().split()
    assert name == qcow2.name and digest == store.sha256_of(qcow2)
    manifest = web_artifact.manifest()
    assert manifest["content_key"] == web_artifact.key
    assert {"apache2", "php8.2-fpm", "cloud-init", "openssh-server"} <= set(manifest["packages"])
    assert manifest["cloud_init"].startswith("22.4")
    assert manifest["build"]["packer"] and manifest["build"]["qemu"].startswith("QEMU emulator")
    assert manifest["base"]["sha256"] and manifest["release"]["number"] == 12
    assert manifest["image"]["sha256"] == digest
    assert manifest["firmware"] == ["bios", "uefi", "uefi-secureboot"]  # the mirror-built base is hybrid


def test_the_vm_pass_installed_no_package(web_artifact):
    """The package layer (mmdebstrap, natively) holds every package: dpkg's log of the VM pass, collected
    before the cleanup empties it, shows no install and no upgrade, while cloud-init's `packages:` ran."""
    manifest = web_artifact.manifest()
    assert manifest["base"]["source"] == "mmdebstrap"
    assert manifest["vm_pass_dpkg"] == []
    assert set(layer_packages(resolve(PROFILE, 12))) <= set(manifest["packages"])


def test_second_bake_returns_the_cached_artifact(web_artifact):
    before = web_artifact.manifest_file.stat().st_mtime_ns
    proc = subprocess.run([sys.executable, "-m", "goldenimage.cli", "build", PROFILE], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(web_artifact.qcow2)
    assert "cached:" in proc.stderr and "packer build" not in proc.stderr
    assert web_artifact.manifest_file.stat().st_mtime_ns == before


def test_verify_boots_two_clones_and_the_web_suite_passes(web_artifact):
    # golden verify: hygiene (host keys and machine-id differ between the two boots, no build user,
    # no leftover key, no build cloud-init data) plus the web suite (health endpoint answers 200), on a
    # BIOS clone and on a UEFI clone with Secure Boot enforced.
    proc = subprocess.run([sys.executable, "-m", "goldenimage.cli", "verify", str(web_artifact.qcow2)],
                          cwd=ROOT, capture_output=True, text=True, timeout=2400)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout
    assert "(bios and uefi-secureboot)" in proc.stderr
    assert proc.stdout.count(" passed") == 2  # the suites ran on both clones


def _qemu_pids_under(path: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "qemu-system" in cmdline and str(path) in cmdline:
                pids.append(int(proc.name))
    return pids


def test_interrupted_bake_kills_qemu_and_leaves_nothing_that_looks_complete(tmp_path, web_artifact):
    images = tmp_path / "images"
    env = {**os.environ, "GOLDEN_IMAGES_DIR": str(images)}
    proc = subprocess.Popen([sys.executable, "-m", "goldenimage.cli", "build", "nfs", "--force"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not _qemu_pids_under(images):
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(2)
    assert _qemu_pids_under(images), "the bake never started QEMU"
    time.sleep(5)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    time.sleep(2)
    assert _qemu_pids_under(images) == [], out
    leftovers = sorted(p.name for p in images.iterdir()) if images.exists() else []
    assert leftovers == [], leftovers
