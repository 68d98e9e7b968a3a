"""`golden doctor`: what a newcomer needs to know about this build host, on one screen; the checks are in
bake/build_host.py."""

from __future__ import annotations

import argparse

from ..bake.build_host import Check, diagnose


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("doctor", help="what this build host has and lacks: cores, accelerator, tools, mirrors, space")
    p.add_argument("--no-network", action="store_true", help="skip the mirror checks")
    p.set_defaults(func=_cmd_doctor)


def _cmd_doctor(args: argparse.Namespace) -> int:
    checks = diagnose(network=not args.no_network)
    print_report(checks)
    return 0 if all(c.ok or not c.blocking for c in checks) else 1


def print_report(checks: list[Check]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="golden doctor", show_header=False, box=None, pad_edge=False)
    table.add_column("", no_wrap=True)
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("found")
    for c in checks:
        mark = "[green]ok[/green]" if c.ok else "[red]!![/red]"
        table.add_row(mark, escape(c.what), escape(c.found) + (f"\n[yellow]fix:[/yellow] {escape(c.fix)}"
                                                               if c.fix else ""))
    Console(width=max(100, Console().width)).print(table)
    missing = sum(not c.ok for c in checks)
    print(f"{missing} thing{'s' if missing != 1 else ''} to fix" if missing else "nothing to fix")
