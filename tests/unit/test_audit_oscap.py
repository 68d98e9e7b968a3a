"""OpenSCAP results read back per rule, checked against a real `oscap xccdf eval` of this host.

The host is Debian 12 like the guests: the run is the real thing (a few seconds), and oscap's own
console output is the reference the parsed results are compared with.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import etree

from goldenimage.audit.content import PROFILE_ID, content_for, selected_rules
from goldenimage.audit.oscap import EVAL_OK, Result, eval_argv, parse_results
from goldenimage.core.errors import GoldenError
from goldenimage.core.run import run
from goldenimage.model.releases import matrix

HOST_RELEASE = int(Path("/etc/debian_version").read_text().split(".")[0])


def _console_results(stdout: str) -> dict[str, tuple[str, str]]:
    """rule id -> (title, result) from oscap's console output: Title/Rule/Result lines, where oscap writes a
    carriage return and a tab between label and value (text mode reads the carriage return as a line break)."""
    found = {}
    for title, rule, result in re.findall(r"^Title\s+(.*)\nRule\s+(.*)\nResult\s+(.*)$", stdout, re.M):
        found[rule.strip()] = (" ".join(title.split()), result.strip())
    return found


def _evaluate(datastream: Path, out: Path) -> tuple[Path, str]:
    results = out / f"{datastream.stem}-results.xml"
    proc = run(eval_argv(str(datastream), PROFILE_ID, str(results)), check=False, timeout=600)
    assert proc.returncode in EVAL_OK, proc.stderr
    return results, proc.stdout


@pytest.fixture(scope="module")
def host_scan(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("oscap")
    content = content_for(matrix().get(HOST_RELEASE), cache=tmp / "cache")
    results, stdout = _evaluate(content.path, tmp)
    return content, results, stdout


def test_every_selected_rule_is_read_with_oscaps_own_result_and_title(host_scan):
    content, results, stdout = host_scan
    scan = parse_results(results, PROFILE_ID)
    selected = selected_rules(etree.parse(str(content.path)).getroot())
    assert sorted(r.id for r in scan.rules) == sorted(selected)
    console = _console_results(stdout)
    assert {r.id: (r.title, str(r.result)) for r in scan.rules} == console
    assert scan.total == len(selected)
    assert scan.passed == sum(result == "pass" for _, result in console.values())
    assert sum(scan.counts().values()) == scan.total
    assert scan.profile_id == PROFILE_ID and scan.scanner.startswith("cpe:/a:redhat:openscap:")


def test_the_widened_content_applies_to_this_debian_12_host(host_scan, tmp_path):
    content, results, _ = host_scan
    if content.changes:
        # the same run with Debian's unchanged content: every rule is out of its platform
        _, original = _evaluate(content.source, tmp_path)
        assert {result for _, result in _console_results(original).values()} == {"notapplicable"}
    scan = parse_results(results)
    assert scan.count(Result.PASS) + scan.count(Result.FAIL) > 0
    # file ownership rules are platform-independent: on this host /etc/passwd belongs to root
    owner = next(r for r in scan.rules if r.name == "file_owner_etc_passwd")
    assert owner.result is (Result.PASS if Path("/etc/passwd").stat().st_uid == 0 else Result.FAIL)


def test_results_of_another_profile_are_refused(host_scan):
    _, results, _ = host_scan
    with pytest.raises(GoldenError, match="not xccdf_org.ssgproject.content_profile_standard"):
        parse_results(results, "xccdf_org.ssgproject.content_profile_standard")


def test_a_truncated_results_file_is_an_error_not_a_score(host_scan, tmp_path):
    _, results, _ = host_scan
    data = results.read_bytes()
    cut = tmp_path / "cut.xml"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(GoldenError, match="cannot read the OpenSCAP results"):
        parse_results(cut)
    root = etree.fromstring(data)
    for test_result in root.iter("{http://checklists.nist.gov/xccdf/1.2}TestResult"):
        test_result.getparent().remove(test_result)
    with pytest.raises(GoldenError, match="no TestResult"):
        parse_results(etree.tostring(root))


def test_eval_command_reads_as_oscap_expects():
    argv = eval_argv("/d/ds.xml", PROFILE_ID, "/o/r.xml", oscap=("/l/ld.so", "--library-path", "/l", "/b/oscap"),
                     validate=False)
    assert argv[:4] == ["/l/ld.so", "--library-path", "/l", "/b/oscap"]
    assert argv[4:7] == ["xccdf", "eval", "--skip-valid"]
    assert argv[argv.index("--profile") + 1] == PROFILE_ID and argv[argv.index("--results") + 1] == "/o/r.xml"
    assert argv[-1] == "/d/ds.xml"
