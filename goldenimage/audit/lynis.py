"""Lynis: the `lynis audit system` command line, and its report file (lynis-report.dat) read back."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import GoldenError

#: Lynis settings for a guest without network: refreshing the apt lists (PKGS-7392) would wait minutes for a
#: mirror the guest cannot reach and then carry on with the lists it has, which is what this does at once.
PROFILE_TEXT = "# goldenimage audit: the guest has no network\nrefresh-repositories=no\n"


@dataclass(frozen=True)
class Finding:
    """A warning or suggestion: the Lynis test id and what it says."""

    test: str
    text: str
    details: str = ""

    def line(self) -> str:
        return f"{self.test}: {self.text}" + (f" ({self.details})" if self.details else "")


@dataclass(frozen=True)
class LynisReport:
    """What an audit run reported: the hardening index and what it is made of."""

    hardening_index: int
    tests_done: int
    version: str
    warnings: tuple[Finding, ...]
    suggestions: tuple[Finding, ...]
    plugins: tuple[str, ...] = ()


#: The Lynis directory of the tools disk holds this profile beside Lynis's own default.prf.
PROFILE_NAME = "golden-audit.prf"


def audit_argv(report: str, log: str) -> list[str]:
    """The non-interactive audit of the whole system, run from a Lynis directory laid out as its release
    tarball (--usecwd: includes, database, plugins and profiles from there), report and log where asked."""
    return ["sh", "./lynis", "audit", "system", "--quick", "--no-colors", "--usecwd", "--plugindir", "./plugins",
            "--profile", f"./{PROFILE_NAME}", "--report-file", report, "--log-file", log]


def _finding(value: str) -> Finding:
    # TEST-ID|text|details|solution| ; "-" marks an empty field
    parts = [p if p != "-" else "" for p in value.split("|")]
    parts += [""] * 3
    return Finding(parts[0], parts[1], parts[2])


def parse_report(text: str) -> LynisReport:
    """Read lynis-report.dat: `key=value` lines, `key[]=value` for lists; GoldenError if incomplete."""
    scalars: dict[str, str] = {}
    lists: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if key.endswith("[]"):
            lists.setdefault(key[:-2], []).append(value)
        else:
            scalars[key] = value
    try:
        index = int(scalars["hardening_index"])
        tests_done = int(scalars.get("lynis_tests_done", "0"))
    except (KeyError, ValueError):
        raise GoldenError("the Lynis report has no hardening index: the audit did not finish",
                          hint="run with --out DIR and read lynis.log there") from None
    return LynisReport(
        hardening_index=index,
        tests_done=tests_done,
        version=scalars.get("lynis_version", ""),
        warnings=tuple(_finding(v) for v in lists.get("warning", [])),
        suggestions=tuple(_finding(v) for v in lists.get("suggestion", [])),
        plugins=tuple(v.split("|")[0] for v in lists.get("plugin_enabled_phase1", [])),
    )
