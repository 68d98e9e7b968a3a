"""`golden audit` end to end on the banking-hardened artifact: a throw-away clone boots, OpenSCAP and Lynis
run in it from the tools disk, the figures come back. One audit (Lynis takes most of its time), checked from
several sides.

Boots a virtual machine (markers `vm`, `audit`): `make test-audit` runs it; `make test` leaves it out, as its
Lynis run takes half an hour under TCG (the banking targets are still what `make audit` prints).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from goldenimage.bake.pipeline import bake
from goldenimage.core.fs import sha256_file
from goldenimage.core.run import run
from tests.conftest import ROOT

pytestmark = [pytest.mark.vm, pytest.mark.audit]
PROFILE = "banking-hardened"  # the profile the targets are for (tests/e2e/test_hardened.py bakes it too)
MIN_RULES = 45
MIN_LYNIS = 80


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """The banking-hardened artifact for Debian 12 (baked, or found in the store by its key), audited once by
    the CLI with a target it cannot meet, so that the failing exit is checked along with the figures."""
    artifact = bake(PROFILE, 12)
    tmp = tmp_path_factory.mktemp("audit")
    proc = subprocess.run([sys.executable, "-m", "goldenimage.cli", "audit", str(artifact.qcow2),
                           "--json", str(tmp / "audit.json"), "--out", str(tmp / "raw"), "--min-rules", "51"],
                          cwd=ROOT, capture_output=True, text=True, timeout=7200)
    report = json.loads((tmp / "audit.json").read_text()) if (tmp / "audit.json").is_file() else None
    return artifact, proc, report, tmp


def test_a_missed_target_exits_1_with_one_line_after_printing_the_figures(audited):
    _, proc, report, _ = audited
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("golden: error:")]
    assert len(errors) == 1 and "is below target: ANSSI" in errors[0] and "target 51" in errors[0]
    assert f"ANSSI DAT-NT28 high: {report['anssi']['passed']}/50 pass" in proc.stdout
    assert f"Lynis hardening index: {report['lynis']['hardening_index']} " in proc.stdout


def test_the_50_rules_are_evaluated_on_debian_12(audited):
    _, _, report, _ = audited
    anssi = report["anssi"]
    assert anssi["total"] == 50 and len(anssi["rules"]) == 50
    assert anssi["passed"] == sum(r["result"] == "pass" for r in anssi["rules"])
    # the widened platform check: without it every rule would be notapplicable on Debian 12
    assert anssi["counts"].get("notapplicable", 0) <= 5
    assert anssi["counts"].get("error", 0) == 0
    assert {c["item"] for c in report["content"]["changes"]} >= {"oval:ssg-obj_debian_11:obj:1"}


def test_package_rules_agree_with_the_manifest(audited):
    artifact, _, report, _ = audited
    packages = set(artifact.manifest().packages)
    results = {r["id"]: r["result"] for r in report["anssi"]["rules"]}
    for rule, package in (("package_rsyslog_installed", "rsyslog"), ("package_audit_installed", "auditd"),
                          ("package_cron_installed", "cron")):
        assert results[rule] == ("pass" if package in packages else "fail"), rule
    for rule, package in (("package_nis_removed", "nis"), ("package_telnetd_removed", "telnetd")):
        assert results[rule] == ("fail" if package in packages else "pass"), rule


def test_lynis_ran_in_full_from_the_tools_disk(audited):
    _, _, report, tmp = audited
    lynis = report["lynis"]
    assert 0 < lynis["hardening_index"] <= 100 and lynis["tests_done"] > 150
    host_version = run(["lynis", "show", "version"]).stdout.strip()
    assert lynis["version"] == host_version
    raw = (tmp / "raw" / "lynis-report.dat").read_text()
    assert "plugin_enabled_phase1[]=debian" in raw and f"hardening_index={lynis['hardening_index']}" in raw
    # the audit's profile kept Lynis from waiting for a mirror the guest cannot reach
    assert "using a possibly outdated repository" in (tmp / "raw" / "lynis.log").read_text()


def test_the_artifact_is_not_written(audited):
    artifact, _, _, _ = audited
    assert sha256_file(artifact.qcow2) == artifact.sha256()


def test_banking_hardened_meets_the_issue_targets_and_the_readme_explains_every_failing_rule(audited):
    _, _, report, _ = audited
    assert report["anssi"]["passed"] >= MIN_RULES, report["anssi"]["counts"]
    assert report["lynis"]["hardening_index"] >= MIN_LYNIS
    failing = {r["id"] for r in report["anssi"]["rules"] if r["result"] != "pass"}
    readme = (ROOT / "README.md").read_text()
    hardening = readme[readme.index("## Hardening"):]
    assert all(f"`{rule}`" in hardening for rule in failing), failing
