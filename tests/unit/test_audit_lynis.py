"""Lynis: the report file read back, checked against a real Lynis run on this host.

Lynis runs from a copy of the tools disk's Lynis directory with the audit's own command line (plus a
short list of tests, so that it takes seconds, not minutes); its console output is the reference.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from goldenimage.audit import lynis
from goldenimage.audit.lynis import Finding, audit_argv, parse_report
from goldenimage.core.errors import GoldenError
from goldenimage.core.run import run

TESTS = "AUTH-9262 FILE-6310 KRNL-6000 SSH-7408 PKGS-7392"


@pytest.fixture(scope="module")
def host_run(tmp_path_factory):
    from goldenimage.audit.guest_tools import _lynis_files

    tmp = tmp_path_factory.mktemp("lynis")
    workdir = tmp / "tools" / "lynis"
    for name, source in _lynis_files().items():
        target = tmp / "tools" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    (workdir / lynis.PROFILE_NAME).write_text(lynis.PROFILE_TEXT)
    report, log = tmp / "lynis-report.dat", tmp / "lynis.log"
    argv = audit_argv(str(report), str(log)) + ["--tests", TESTS]
    proc = run(argv, cwd=workdir, timeout=900)
    return report.read_text(), proc.stdout, log.read_text()


def test_the_index_and_test_count_are_the_ones_lynis_prints(host_run):
    text, stdout, _ = host_run
    report = parse_report(text)
    assert report.hardening_index == int(re.search(r"Hardening index : (\d+)", stdout).group(1))
    assert report.tests_done == int(re.search(r"Tests performed : (\d+)", stdout).group(1))
    assert 0 <= report.hardening_index <= 100 and report.tests_done > 0
    assert stdout.startswith("\n") or "Lynis" in stdout
    assert report.version and report.version in stdout


def test_suggestions_and_warnings_are_the_ones_lynis_lists(host_run):
    text, stdout, _ = host_run
    report = parse_report(text)
    # the console lists them as "! text [TEST-ID]" and "* text [TEST-ID]" under "Warnings (N):" and "Suggestions (N):"
    listed = re.findall(r"^\s+[*!] (.*?) \[([A-Z0-9-]+)\]\s*$", stdout, re.M)
    assert sorted((f.text, f.test) for f in report.warnings + report.suggestions) == sorted(listed)
    count = re.search(r"Suggestions \((\d+)\)", stdout)
    assert len(report.suggestions) == (int(count.group(1)) if count else 0)


def test_the_audit_profile_and_the_tarball_layout_are_used(host_run):
    text, _, log = host_run
    report = parse_report(text)
    assert "debian" in report.plugins  # plugins from the layout's ./plugins
    profiles = re.search(r"Profiles:\s+(.*)$", log, re.M).group(1).split()
    assert [Path(p).name for p in profiles] == ["default.prf", lynis.PROFILE_NAME]
    assert all(Path(p).is_relative_to(Path(profiles[0]).parent) for p in profiles[:1])
    if os.geteuid() == 0:
        # PKGS-7392 (root only) reads the lists it has instead of running apt-get update
        assert "using a possibly outdated repository" in log and "updating package repository" not in log


def test_report_lines_are_read_field_by_field():
    text = "\n".join([
        "# Lynis Report",
        "lynis_version=3.0.8",
        "warning[]=SSH-7412|Root can log in|PermitRootLogin=yes|-|",
        "suggestion[]=AUTH-9262|Install a PAM module|-|-|",
        "suggestion[]=KRNL-6000|sysctl differs||Change sysctl value|",
        "plugin_enabled_phase1[]=debian|1.0.1|",
        "lynis_tests_done=251",
        "hardening_index=65",
        "hardening_index_unrelated_line_without_equals",
    ])
    report = parse_report(text)
    assert (report.hardening_index, report.tests_done, report.version) == (65, 251, "3.0.8")
    assert report.warnings == (Finding("SSH-7412", "Root can log in", "PermitRootLogin=yes"),)
    assert [f.test for f in report.suggestions] == ["AUTH-9262", "KRNL-6000"]
    assert report.suggestions[0].details == "" and report.plugins == ("debian",)


def test_a_report_without_an_index_is_an_error_not_a_zero():
    with pytest.raises(GoldenError, match="no hardening index"):
        parse_report("lynis_version=3.0.8\nlynis_tests_done=12\n")


def test_the_command_line_stays_on_the_tools_layout():
    argv = audit_argv("/out/r.dat", "/out/l.log")
    assert argv[:4] == ["sh", "./lynis", "audit", "system"]
    assert {"--quick", "--no-colors", "--usecwd"} <= set(argv)
    assert argv[argv.index("--plugindir") + 1] == "./plugins"
    assert argv[argv.index("--profile") + 1] == f"./{lynis.PROFILE_NAME}"
    assert argv[argv.index("--report-file") + 1] == "/out/r.dat" and argv[argv.index("--log-file") + 1] == "/out/l.log"


def test_the_audit_profile_only_stops_the_apt_refresh():
    settings = [line for line in lynis.PROFILE_TEXT.splitlines() if line and not line.startswith("#")]
    assert settings == ["refresh-repositories=no"]
    assert Path("/etc/lynis/default.prf").read_text().count("refresh-repositories=") == 1
