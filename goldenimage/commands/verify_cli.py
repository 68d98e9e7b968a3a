"""`golden verify ARTIFACT`: boot fresh clones of an artifact and run its testinfra suites (verify/artifact.py)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from ..model.releases import release_help
    from ..verify.datasources import DATASOURCES
    from ..verify.vm import FIRMWARES, HARDWARE

    p = subparsers.add_parser("verify", help="boot an artifact fresh (twice) and run its testinfra suites")
    p.add_argument("target", help="a profile (its newest artifact in images/) or a path to an artifact's qcow2")
    p.add_argument("--debian", help=release_help("Debian release of the profile's artifact"))
    firmware = p.add_mutually_exclusive_group()
    firmware.add_argument("--all-firmwares", action="store_true",
                          help="one clone per firmware the artifact boots (BIOS, UEFI, UEFI with Secure Boot) "
                               "instead of two (BIOS, and UEFI with Secure Boot)")
    firmware.add_argument("--firmware", action="append", default=[], choices=FIRMWARES, metavar="FIRMWARE",
                          help=f"boot clones under this firmware only ({', '.join(FIRMWARES)}; repeatable): one "
                               "clone per firmware named, two when one is named (the hygiene suite compares two)")
    p.add_argument("--datasource", choices=DATASOURCES,
                   help="hand the clones their data as a cloud does: configdrive (Nova, OVH BYOI), metadata "
                        "(the OpenStack metadata service), proxmox (qemu-server's NoCloud drive), nocloud (our "
                        "seed); with a static address, and the datasource suite checks what the clone took")
    p.add_argument("--hardware", choices=HARDWARE, default="virt",
                   help="boot the clones on a target's hardware: virt (virtio), proxmox-bios and proxmox-uefi "
                        "(the published template's machine, firmware and buses), metal (q35, UEFI, AHCI disk "
                        "and config drive, e1000e NIC; needs an image for metal)")
    p.add_argument("--parallel", type=int, default=2, metavar="N", help="clones booting at a time (default 2)")
    p.set_defaults(func=_cmd_verify)
    return p


def _cmd_verify(args: argparse.Namespace) -> int:
    from ..verify.artifact import verify

    verify(args.target, args.debian, all_firmwares=args.all_firmwares, firmwares_only=args.firmware,
           datasource=args.datasource, hardware=args.hardware, parallel=args.parallel)
    return 0
