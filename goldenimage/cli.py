"""The `golden` command line: argument parsing only; the work happens in the modules it calls."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .core.errors import GoldenError
from .core.log import setup_logging
from .core.paths import PROFILES_ENV


def _cmd_profiles(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from .core.log import console
    from .model.profiles import describe, list_profiles, supported_releases

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


def _cmd_render(args: argparse.Namespace) -> int:
    from .commands.render import render
    from .core.outdir import check_replaceable, out_dir_arg
    from .model.profiles import resolve
    from .render.packer_template import Target

    out = out_dir_arg(args.out)
    if out is not None:
        check_replaceable(out)  # before any work: a bad --out is refused at once
    profile = resolve(args.profile, args.debian, tuple(args.overlay))
    out = out or Path(f"rendered/{profile.name}-debian{profile.release.number}-{args.target}")
    rendered = render(profile, Target(args.target), out, packer_version=args.packer_version)
    for path in sorted(rendered.directory.iterdir()):
        print(path)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from .commands.validate import validate_all
    from .model.profiles import list_profiles
    from .render.packer_template import Target

    if args.all or not args.profiles:
        names = list_profiles()
    else:
        names = args.profiles
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


def _cmd_base(args: argparse.Namespace) -> int:
    from .bake.base_image import build_base, check_official_base, fetch_base
    from .model.disk_layout import DiskLayout
    from .model.releases import matrix

    release = matrix().get(args.debian)
    layout = DiskLayout(args.layout)
    if args.base_url:
        base = fetch_base(args.base_url, check_official_base(args.base_checksum, layout, "--layout"), release)
    else:
        base = build_base(release, mirror=args.mirror, flavour=args.kernel, force=args.force, layout=layout)
    print(base.path)
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from .commands.bake import bake

    if args.channel == "stable":
        from .commands.stable import build_stable

        print(build_stable(args.profile, args.debian, tuple(args.overlay), mirror=args.mirror, kind=args.kind).qcow2)
        return 0
    artifact = bake(args.profile, args.debian, tuple(args.overlay), force=args.force, base_url=args.base_url,
                    base_checksum=args.base_checksum, mirror=args.mirror, kind=args.kind)
    print(artifact.qcow2)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from .commands.verify import verify

    verify(args.target, args.debian, all_firmwares=args.all_firmwares, firmwares_only=args.firmware,
           datasource=args.datasource, hardware=args.hardware, parallel=args.parallel)
    return 0


def release_number(value: str) -> int:
    """A --debian value as a release number of the matrix; one-line InputError otherwise."""
    from .model.releases import matrix

    return matrix().get(value).number


def _add_base_options(p: argparse.ArgumentParser) -> None:
    from .model.releases import release_help

    p.add_argument("--debian", help=release_help())
    p.add_argument("--mirror", help="Debian mirror URL for the base image (default: the release's; $GOLDEN_MIRROR)")
    p.add_argument("--base-url", help="start from an official Debian cloud image at this URL instead")
    p.add_argument("--base-checksum", help="checksum of --base-url: sha256:HEX or sha512:HEX (required with it)")
    p.add_argument("--force", action="store_true", help="rebuild even if a cached result exists")


def build_parser() -> argparse.ArgumentParser:
    from .model.releases import release_help
    from .render.targets import TARGET_NAMES
    from .verify.vm import FIRMWARES

    parser = argparse.ArgumentParser(prog="golden", description="Golden images for Debian server fleets.")
    parser.add_argument("--debug", action="store_true", help="show commands run and tracebacks")
    parser.add_argument("--profiles-dir", type=Path, metavar="DIR",
                        help=f"your profiles and role fragments, searched before the shipped ones "
                             f"(default: ${PROFILES_ENV}, else ./profiles when it exists)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("profiles", help="list the profiles, their roles and what they are")
    p.set_defaults(func=_cmd_profiles)

    p = sub.add_parser("render", help="write the Packer template, user-data and seed for a profile")
    p.add_argument("profile", help="profile name (profiles/NAME.yaml) or path to a profile file")
    p.add_argument("--debian", help=release_help())
    p.add_argument("--target", choices=TARGET_NAMES, default="qemu")
    p.add_argument("--overlay", action="append", default=[], type=Path, help="customer overlay (repeatable)")
    p.add_argument("--out", help="output directory (default rendered/PROFILE-debianN-TARGET)")
    p.add_argument("--packer-version", metavar="X.Y",
                   help="the Packer that will run the template (default: the installed one, else the newest "
                        "supported); 1.7 and later get required_plugins and the plugins' options")
    p.set_defaults(func=_cmd_render)

    p = sub.add_parser("validate", help="render and check with `packer validate` and `cloud-init schema`")
    p.add_argument("profiles", nargs="*", help="profiles to check (default: all)")
    p.add_argument("--all", action="store_true", help="every profile")
    p.add_argument("--debian", action="append", help="only this release (repeatable)")
    p.add_argument("--target", action="append", choices=TARGET_NAMES)
    p.add_argument("--overlay", action="append", default=[], type=Path)
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("base", help="build (or reuse) a cloud-ready base qcow2 from the Debian mirror")
    _add_base_options(p)
    p.add_argument("--kernel", choices=["cloud", "generic"], default="cloud",
                   help="cloud kernel (VMs) or generic (bare metal)")
    from .model.disk_layout import DiskLayout

    p.add_argument("--layout", choices=[str(x) for x in DiskLayout], default=str(DiskLayout.SINGLE),
                   help="disk layout: one root filesystem, or /var, /var/log, /var/log/audit, /home and /tmp apart")
    p.set_defaults(func=_cmd_base)

    p = sub.add_parser("build", help="bake PROFILE into images/: compressed qcow2, .sha256 and manifest")
    p.add_argument("profile", help="profile name or path to a profile file")
    _add_base_options(p)
    p.add_argument("--overlay", action="append", default=[], type=Path, help="customer overlay (repeatable)")
    p.add_argument("--kind", choices=["cloud", "metal"], default="cloud",
                   help="cloud: for virtual machines (virtio, Debian's cloud kernel); metal: for dedicated servers "
                        "(the generic kernel with AHCI, NVMe and RAID HBA drivers, server NIC firmware, mdadm)")
    p.add_argument("--channel", choices=["stable"],
                   help="stable: rebuild the newest stable artifact of the profile taking only the security and "
                        "-updates suites' newer versions (none: the stable artifact itself, no rebuild)")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("verify", help="boot an artifact fresh (twice) and run its testinfra suites")
    p.add_argument("target", help="a profile (its newest artifact in images/) or a path to an artifact's qcow2")
    p.add_argument("--debian", help=release_help("Debian release of the profile's artifact"))
    firmware = p.add_mutually_exclusive_group()
    firmware.add_argument("--all-firmwares", action="store_true",
                          help="one clone per firmware the artifact boots (BIOS, UEFI, UEFI with Secure Boot) "
                               "instead of two (BIOS, and UEFI with Secure Boot)")
    firmware.add_argument("--firmware", action="append", default=[], choices=FIRMWARES, metavar="FIRMWARE",
                          help=f"boot clones under this firmware only ({', '.join(FIRMWARES)}; repeatable): one "
                               "clone per firmware named, two when one is named (the hygiene suite compares two)")
    from .verify.datasources import DATASOURCES
    from .verify.vm import HARDWARE

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

    from .commands.apply_cli import add_parser as add_apply_parser

    add_apply_parser(sub)

    from .commands.cluster_cli import add_parser as add_cluster_parser

    add_cluster_parser(sub)

    from .commands.images_cli import add_parser as add_images_parser

    add_images_parser(sub)

    from .commands.env_cli import add_parser as add_env_parser

    add_env_parser(sub)

    from .commands.publish_cli import add_parser as add_publish_parser

    add_publish_parser(sub)

    from .commands.audit_cli import add_parser as add_audit_parser

    add_audit_parser(sub)

    from .commands.backup_cli import add_parser as add_backup_parser

    add_backup_parser(sub)

    from .commands.doctor import add_parser as add_doctor_parser

    add_doctor_parser(sub)
    return parser


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (kill, systemd, a CI timeout) unwinds like Ctrl-C: Packer's process group and the QEMU guests of
    verify and audit are stopped by the context managers that own them, and staging folders are removed."""
    raise KeyboardInterrupt


def _say(message: str, prefix: str = "", style: str = "") -> None:
    """One line on stderr, inert: control characters and line breaks escaped, URL credentials redacted, never
    read as markup (rich is imported only when there is something to say)."""
    from rich.text import Text

    from .core.inert import inert
    from .core.log import console

    console.print(Text.assemble((prefix, style), inert(message)), markup=False, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.debug)
    if args.profiles_dir is not None:
        if not args.profiles_dir.is_dir():
            _say(f"--profiles-dir {args.profiles_dir}: no such directory", "golden: error: ")
            return 2
        os.environ[PROFILES_ENV] = str(args.profiles_dir.resolve())
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args))
    except GoldenError as exc:
        if args.debug:
            raise
        first, *more = exc.lines or [exc.message]
        _say(first, "golden: error: ", "red")
        for line in more:
            _say(line)
        if exc.hint:
            _say(exc.hint, "  hint: ")
        return exc.exit_status
    except OSError as exc:
        # Anything the file system refuses that no module turned into a GoldenError: one line, no traceback.
        if args.debug:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        _say(f"{exc.strerror or exc}{where}", "golden: error: ")
        return 1
    except KeyboardInterrupt:
        _say("golden: interrupted")
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
