"""`golden build PROFILE`: bake a profile into the store (bake/pipeline.py), or rebuild its stable artifact."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .options import add_base_options


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("build", help="bake PROFILE into images/: compressed qcow2, .sha256 and manifest")
    p.add_argument("profile", help="profile name or path to a profile file")
    add_base_options(p)
    p.add_argument("--overlay", action="append", default=[], type=Path, help="customer overlay (repeatable)")
    p.add_argument("--kind", choices=["cloud", "metal"], default="cloud",
                   help="cloud: for virtual machines (virtio, Debian's cloud kernel); metal: for dedicated servers "
                        "(the generic kernel with AHCI, NVMe and RAID HBA drivers, server NIC firmware, mdadm)")
    p.add_argument("--channel", choices=["stable"],
                   help="stable: rebuild the newest stable artifact of the profile taking only the security and "
                        "-updates suites' newer versions (none: the stable artifact itself, no rebuild)")
    p.set_defaults(func=_cmd_build)
    return p


def _cmd_build(args: argparse.Namespace) -> int:
    if args.channel == "stable":
        from ..bake.stable_build import build_stable

        print(build_stable(args.profile, args.debian, tuple(args.overlay), mirror=args.mirror, kind=args.kind).qcow2)
        return 0
    from ..bake.pipeline import bake

    artifact = bake(args.profile, args.debian, tuple(args.overlay), force=args.force, base_url=args.base_url,
                    base_checksum=args.base_checksum, mirror=args.mirror, kind=args.kind)
    print(artifact.qcow2)
    return 0
