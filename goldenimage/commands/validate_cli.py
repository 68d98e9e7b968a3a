"""`golden validate [PROFILE...]`: render each profile and check it with `packer validate` and cloud-init."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from ..render.targets import TARGET_NAMES

    p = subparsers.add_parser("validate", help="render and check with `packer validate` and `cloud-init schema`")
    p.add_argument("profiles", nargs="*", help="profiles to check (default: all)")
    p.add_argument("--all", action="store_true", help="every profile")
    p.add_argument("--debian", action="append", help="only this release (repeatable)")
    p.add_argument("--target", action="append", choices=TARGET_NAMES)
    p.add_argument("--overlay", action="append", default=[], type=Path)
    p.set_defaults(func=_cmd_validate)
    return p


def _cmd_validate(args: argparse.Namespace) -> int:
    from ..bake.validate import validate_all
    from ..model.profiles import list_profiles
    from ..render.packer_template import Target
    from .options import release_number

    names = list_profiles() if args.all or not args.profiles else args.profiles
    targets = [Target(t) for t in args.target] if args.target else None
    releases = [release_number(d) for d in args.debian] if args.debian else None
    failures = total = 0
    for check in validate_all(names, releases, targets, tuple(args.overlay)):
        total += 1
        failures += not check.ok
        print(check.line(), flush=True)
        if not check.ok and args.debug and check.detail:
            print("\n".join("    " + line for line in check.detail.splitlines()))
    print(f"{total - failures} passed, {failures} failed")
    return 1 if failures else 0
