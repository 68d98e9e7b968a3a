"""`golden base`: build (or reuse) a base qcow2 from the Debian mirror, or fetch an official one."""

from __future__ import annotations

import argparse
from typing import Any

from .options import add_base_options


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from ..model.disk_layout import DiskLayout

    p = subparsers.add_parser("base", help="build (or reuse) a cloud-ready base qcow2 from the Debian mirror")
    add_base_options(p)
    p.add_argument("--kernel", choices=["cloud", "generic"], default="cloud",
                   help="cloud kernel (VMs) or generic (bare metal)")
    p.add_argument("--layout", choices=[str(x) for x in DiskLayout], default=str(DiskLayout.SINGLE),
                   help="disk layout: one root filesystem, or /var, /var/log, /var/log/audit, /home and /tmp apart")
    p.set_defaults(func=_cmd_base)
    return p


def _cmd_base(args: argparse.Namespace) -> int:
    from ..bake.base_image import build_base, check_official_base, fetch_base
    from ..model.disk_layout import DiskLayout
    from ..model.releases import matrix

    release = matrix().get(args.debian)
    layout = DiskLayout(args.layout)
    if args.base_url:
        base = fetch_base(args.base_url, check_official_base(args.base_checksum, layout, "--layout"), release)
    else:
        base = build_base(release, mirror=args.mirror, flavour=args.kernel, force=args.force, layout=layout)
    print(base.path)
    return 0
