"""The audit's report: the printed table and totals, the JSON file, the targets, the command line."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from goldenimage.audit.artifact import AuditReport, check_targets
from goldenimage.audit.content import PROFILE_ID, content_for
from goldenimage.audit.lynis import parse_report
from goldenimage.audit.oscap import EVAL_OK, eval_argv, parse_results
from goldenimage.commands.audit_cli import print_report
from goldenimage.core.errors import GoldenError
from goldenimage.core.run import run
from goldenimage.model.releases import matrix
from tests.conftest import ROOT

HOST_RELEASE = int(Path("/etc/debian_version").read_text().split(".")[0])
LYNIS_REPORT = "lynis_version=3.0.8\nwarning[]=SSH-7412|Root can log in|-|-|\nsuggestion[]=AUTH-9262|PAM|-|-|\n" \
               "lynis_tests_done=240\nhardening_index=64\n"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> AuditReport:
    tmp = tmp_path_factory.mktemp("report")
    content = content_for(matrix().get(HOST_RELEASE), cache=tmp)
    results = tmp / "results.xml"
    assert run(eval_argv(str(content.path), PROFILE_ID, str(results)), check=False).returncode in EVAL_OK
    return AuditReport("web-debian12-x.qcow2", "web", HOST_RELEASE, content, parse_results(results),
                       parse_report(LYNIS_REPORT), "done", {"boot": 90.0, "oscap": 20.0})


def _printed(report: AuditReport) -> str:
    out = io.StringIO()
    print_report(report, Console(file=out, width=160, color_system=None))
    return out.getvalue()


def test_every_rule_and_both_totals_are_printed(report):
    text = _printed(report)
    for rule in report.scan.rules:
        assert rule.name in text
    assert f"ANSSI DAT-NT28 high: {report.scan.passed}/{report.scan.total} pass" in text
    assert "Lynis hardening index: 64 (240 tests, 1 warnings, 1 suggestions; Lynis 3.0.8)" in text
    assert "warning SSH-7412: Root can log in" in text


def test_the_json_report_carries_the_same_figures(report, tmp_path):
    path = tmp_path / "sub" / "audit.json"
    report.write_json(path)
    data = json.loads(path.read_text())
    assert data["anssi"]["passed"] == report.anssi_passed == sum(r["result"] == "pass" for r in data["anssi"]["rules"])
    assert data["anssi"]["total"] == len(data["anssi"]["rules"]) == report.anssi_total
    assert data["lynis"]["hardening_index"] == report.lynis_index == 64
    assert data["content"]["changes"] == [{"item": c.item, "before": c.before, "after": c.after}
                                          for c in report.content.changes]
    assert data["seconds"] == {"boot": 90.0, "oscap": 20.0} and data["firstboot"] == "done"


def test_targets_met_are_silent_and_missed_ones_are_one_line(report):
    check_targets(report, report.anssi_passed, report.lynis_index)
    check_targets(report, None, None)
    with pytest.raises(GoldenError) as err:
        check_targets(report, report.anssi_passed + 1, 80)
    message = err.value.message
    assert "\n" not in message and err.value.exit_status == 1
    assert f"ANSSI {report.anssi_passed}/{report.anssi_total} pass, target {report.anssi_passed + 1}" in message
    assert "Lynis index 64, target 80" in message


def test_a_target_without_its_figure_is_missed(report):
    no_lynis = AuditReport(report.artifact, report.profile, report.debian, report.content, report.scan, None,
                           "done")
    with pytest.raises(GoldenError, match="Lynis index None, target 1"):
        check_targets(no_lynis, None, 1)


def test_audit_of_a_profile_without_an_artifact_says_how_to_bake_it(tmp_path):
    env = {"GOLDEN_IMAGES_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "goldenimage.cli", "audit", "web", "--debian", "12"], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=60)
    assert proc.returncode == 2
    assert "no artifact of profile web for Debian 12" in proc.stderr
    assert "make image PROFILE=web DEBIAN=12" in proc.stderr
