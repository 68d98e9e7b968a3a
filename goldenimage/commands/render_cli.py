"""`golden render PROFILE`: write the Packer template, user-data and seed of a profile into a directory."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from ..model.releases import release_help
    from ..render.targets import TARGET_NAMES

    p = subparsers.add_parser("render", help="write the Packer template, user-data and seed for a profile")
    p.add_argument("profile", help="profile name (profiles/NAME.yaml) or path to a profile file")
    p.add_argument("--debian", help=release_help())
    p.add_argument("--target", choices=TARGET_NAMES, default="qemu")
    p.add_argument("--overlay", action="append", default=[], type=Path, help="customer overlay (repeatable)")
    p.add_argument("--out", help="output directory (default rendered/PROFILE-debianN-TARGET)")
    p.add_argument("--packer-version", metavar="X.Y",
                   help="the Packer that will run the template (default: the installed one, else the newest "
                        "supported); 1.7 and later get required_plugins and the plugins' options")
    p.set_defaults(func=_cmd_render)
    return p


def _cmd_render(args: argparse.Namespace) -> int:
    from ..bake.render_dir import render
    from ..core.outdir import check_replaceable, out_dir_arg
    from ..model.profiles import resolve
    from ..render.packer_template import Target

    out = out_dir_arg(args.out)
    if out is not None:
        check_replaceable(out)  # before any work: a bad --out is refused at once
    profile = resolve(args.profile, args.debian, tuple(args.overlay))
    out = out or Path(f"rendered/{profile.name}-debian{profile.release.number}-{args.target}")
    rendered = render(profile, Target(args.target), out, packer_version=args.packer_version)
    for path in sorted(rendered.directory.iterdir()):
        print(path)
    return 0
