"""banking-hardened on a real bake: the separate-mounts base, two clones through the testinfra suites
(base, hygiene, hardened). Its audit targets are checked by tests/e2e/test_audit.py on the same artifact.

Boots virtual machines (markers `vm`, `audit`): `make test-audit` runs them with the audit; `make test` leaves
them out to keep CI well inside its time budget (the hardened bake is still made and booted there, by the
encryption-at-rest test's banking-sql hosts).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from goldenimage.bake import store
from goldenimage.bake.pipeline import bake
from goldenimage.core.run import run
from tests.conftest import ROOT

pytestmark = [pytest.mark.vm, pytest.mark.audit]
PROFILE = "banking-hardened"


@pytest.fixture(scope="module")
def hardened_artifact() -> store.Artifact:
    """The banking-hardened artifact for Debian 12, baked once (or found in the store by its key)."""
    return bake(PROFILE, 12)


def _golden(*args: str, timeout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "goldenimage.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_the_artifact_has_six_filesystems_in_its_partition_table(hardened_artifact):
    manifest = hardened_artifact.manifest().data
    assert manifest["profile"]["disk_layout"] == "separate-mounts"
    info = json.loads(run(["qemu-img", "info", "--output=json", hardened_artifact.qcow2]).stdout)
    assert info["virtual-size"] == 8 * 2**30
    assert not {"chrony", "systemd-timesyncd"} & set(manifest["packages"])
    assert {"auditd", "aide", "ntpsec", "rsyslog", "nftables"} <= set(manifest["packages"])


def test_verify_runs_the_hardened_suite_on_two_clones(hardened_artifact):
    proc = _golden("verify", str(hardened_artifact.qcow2), timeout=3600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "test_hardened.py" in proc.stderr + proc.stdout
    assert " passed" in proc.stdout and " failed" not in proc.stdout

