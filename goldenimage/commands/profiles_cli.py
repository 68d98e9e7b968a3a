"""`golden profiles`: list the profiles, their roles, releases and descriptions."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("profiles", help="list the profiles, their roles and what they are")
    p.set_defaults(func=_cmd_profiles)
    return p


def _cmd_profiles(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ..core.log import console
    from ..model.profiles import describe, list_profiles, supported_releases

    table = Table(title="goldenimage profiles", show_lines=False)
    table.add_column("profile", style="bold")
    table.add_column("roles")
    table.add_column("debian")
    table.add_column("description")
    for name in list_profiles():
        roles, description = describe(name)
        releases = " ".join(str(n) for n in supported_releases(name))
        table.add_row(name, ", ".join(roles), releases, escape(description))
    Console(width=max(120, console.width)).print(table)
    return 0
