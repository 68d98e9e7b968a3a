"""OpenSCAP: the `oscap xccdf eval` command line, and its XCCDF results read back per rule."""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from ..core.errors import GoldenError

XCCDF_NS = "http://checklists.nist.gov/xccdf/1.2"
NS = {"xccdf": XCCDF_NS}
RULE_PREFIX = "xccdf_org.ssgproject.content_rule_"
#: `oscap xccdf eval` exits 0 when every rule passed and 2 when one failed; anything else is an error.
EVAL_OK = (0, 2)


class Result(enum.StrEnum):
    """XCCDF 1.2 rule results (the `result` element of a rule-result)."""

    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"
    UNKNOWN = "unknown"
    NOTAPPLICABLE = "notapplicable"
    NOTCHECKED = "notchecked"
    NOTSELECTED = "notselected"
    INFORMATIONAL = "informational"
    FIXED = "fixed"


@dataclass(frozen=True)
class RuleResult:
    """One rule of the profile and what the scan found."""

    id: str
    title: str
    severity: str
    result: Result

    @property
    def name(self) -> str:
        """The rule id without the SSG prefix (sshd_disable_root_login)."""
        return self.id.removeprefix(RULE_PREFIX)


@dataclass(frozen=True)
class ScanResult:
    """The rules a profile selects and their results, in the content's order."""

    profile_id: str
    scanner: str
    rules: tuple[RuleResult, ...]

    @property
    def total(self) -> int:
        return len(self.rules)

    @property
    def passed(self) -> int:
        return self.count(Result.PASS)

    def count(self, result: Result) -> int:
        return sum(r.result is result for r in self.rules)

    def counts(self) -> dict[str, int]:
        return dict(Counter(str(r.result) for r in self.rules))

    def failing(self) -> list[RuleResult]:
        """Every rule that did not pass (fail, error, notapplicable...)."""
        return [r for r in self.rules if r.result is not Result.PASS]


def eval_argv(datastream: str, profile_id: str, results: str, *, oscap: Sequence[str] = ("oscap",),
              validate: bool = True) -> list[str]:
    """The command that evaluates `profile_id` of `datastream` and writes XCCDF results to `results`."""
    return [*oscap, "xccdf", "eval", *([] if validate else ["--skip-valid"]), "--profile", profile_id,
            "--results", results, datastream]


def parse_results(xml: bytes | Path, profile_id: str | None = None) -> ScanResult:
    """The selected rules' results from an XCCDF 1.2 results document (`oscap xccdf eval --results`)."""
    try:
        root = etree.parse(str(xml)).getroot() if isinstance(xml, Path) else etree.fromstring(xml)
    except (OSError, etree.XMLSyntaxError) as exc:
        raise GoldenError(f"cannot read the OpenSCAP results: {exc}") from exc
    tests = root.xpath("//xccdf:TestResult", namespaces=NS)
    if not tests:
        raise GoldenError("the OpenSCAP results have no TestResult: the scan did not complete")
    test = tests[-1]
    profile = test.find("xccdf:profile", NS)
    found_profile = profile.get("idref", "") if profile is not None else ""
    if profile_id and found_profile != profile_id:
        raise GoldenError(f"the OpenSCAP results are for profile {found_profile or '(none)'}, not {profile_id}")
    titles = {r.get("id"): (r.findtext("xccdf:title", default="", namespaces=NS) or "").strip()
              for r in root.iter(f"{{{XCCDF_NS}}}Rule")}
    rules = []
    for rr in test.iterfind("xccdf:rule-result", NS):
        text = (rr.findtext("xccdf:result", namespaces=NS) or "").strip()
        try:
            result = Result(text)
        except ValueError:
            raise GoldenError(f"unknown OpenSCAP result {text!r} for {rr.get('idref')}") from None
        if result is Result.NOTSELECTED:
            continue
        ident = rr.get("idref", "")
        rules.append(RuleResult(ident, " ".join(titles.get(ident, "").split()), rr.get("severity", ""), result))
    return ScanResult(found_profile, test.get("test-system", ""), tuple(rules))
