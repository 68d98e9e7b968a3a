"""`golden audit IMAGE|PROFILE`: argument parsing and the printed figures; the work is in audit/artifact.py."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..model.releases import release_help

if TYPE_CHECKING:
    from rich.console import Console


def print_report(report: Any, console: Console | None = None) -> None:
    """The rule table and the totals, on stdout."""
    # imported here: the parser (every `golden` start) needs none of them
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ..audit.content import PROFILE_TITLE
    from ..audit.oscap import Result

    result_style = {Result.PASS: "green", Result.FAIL: "red", Result.ERROR: "magenta", Result.NOTAPPLICABLE: "dim"}
    console = console or Console(width=max(110, Console().width))
    if report.scan:
        table = Table(title=f"{PROFILE_TITLE} on {report.artifact}")
        table.add_column("rule", style="bold")
        table.add_column("title")
        table.add_column("result")
        for rule in report.scan.rules:
            style = result_style.get(rule.result, "yellow")
            table.add_row(rule.name, escape(rule.title), f"[{style}]{rule.result}[/{style}]")
        console.print(table)
        others = ", ".join(f"{n} {k}" for k, n in sorted(report.scan.counts().items()) if k != "pass")
        console.print(f"{PROFILE_TITLE}: {report.scan.passed}/{report.scan.total} pass" + (f" ({others})" if others
                                                                                            else ""))
    if report.lynis:
        lynis = report.lynis
        console.print(f"Lynis hardening index: {lynis.hardening_index} ({lynis.tests_done} tests, "
                      f"{len(lynis.warnings)} warnings, {len(lynis.suggestions)} suggestions; Lynis {lynis.version})")
        for finding in lynis.warnings:
            console.print(f"  warning {escape(finding.line())}")


def _cmd_audit(args: argparse.Namespace) -> int:
    from ..audit.artifact import audit_artifact, check_targets

    report = audit_artifact(args.target, debian=args.debian, out=args.out, oscap=not args.no_oscap,
                            lynis=not args.no_lynis)
    print_report(report)
    if args.json:
        report.write_json(args.json)
    check_targets(report, args.min_rules, args.min_lynis)
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `golden audit` on the `golden` command's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "audit",
        help="boot an artifact and score it: OpenSCAP ANSSI DAT-NT28 high, Lynis hardening index",
        description="Boot a throw-away clone of the artifact (never the artifact itself), run OpenSCAP's ANSSI "
        "DAT-NT28 high profile and Lynis in it from a read-only tools disk, print every rule's result, the "
        "totals and the Lynis hardening index. Exit 0 when the audit ran, whatever the figures, unless "
        "--min-rules or --min-lynis is given and missed (exit 1).",
    )
    p.add_argument("target", help="a profile (its newest artifact in images/) or a path to an artifact's qcow2")
    p.add_argument("--debian", help=release_help("Debian release of the profile's artifact"))
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the report as JSON to PATH")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="keep the raw results in DIR (oscap-results.xml, lynis-report.dat, lynis.log)")
    p.add_argument("--min-rules", type=int, metavar="N", help="fail (exit 1) when fewer than N ANSSI rules pass")
    p.add_argument("--min-lynis", type=int, metavar="N", help="fail (exit 1) when the Lynis index is below N")
    p.add_argument("--no-lynis", action="store_true", help="OpenSCAP only (Lynis takes most of the time)")
    p.add_argument("--no-oscap", action="store_true", help="Lynis only")
    p.set_defaults(func=_cmd_audit)
    return p
