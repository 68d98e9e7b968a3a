"""`golden apply` and `golden cluster apply`: argument parsing and printing only; the work is in apply/."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..core.errors import GoldenError, InputError
from ..core.inert import inert


def _ssh_options(args: argparse.Namespace) -> Any:
    from ..apply.transport import SSHOptions

    for option, path in (("--identity", args.identity), ("--known-hosts", args.known_hosts)):
        if path is not None and not path.is_file() and not (option == "--known-hosts" and args.accept_new_host_key):
            raise InputError(f"{option} {path}: no such file")
    return SSHOptions(identity=args.identity, known_hosts=args.known_hosts, accept_new=args.accept_new_host_key)


def _print_report(report: Any, check: bool, prefix: str = "") -> None:
    for line in report.changes:  # what a host reports is input too: one inert line each
        print(inert(f"{prefix}{line}"), flush=True)


def _cmd_apply(args: argparse.Namespace) -> int:
    from ..apply.apply import apply_host
    from ..apply.host_settings import read_host_settings
    from ..apply.target import TargetError, parse_target
    from ..apply.transport import SSHTransport
    from ..core.log import step

    try:
        target = parse_target(args.host)
    except TargetError as exc:
        raise InputError(f"--host: {exc}", hint="write [USER@]HOST[:PORT], e.g. debian@203.0.113.10:22") from None
    settings = None if args.host_settings is None else read_host_settings(args.host_settings, "--host-settings")
    options = _ssh_options(args)
    verb = "Checking" if args.check else "Applying"
    with step(f"{verb} {args.profile} on {target}"), SSHTransport(target, options) as transport:
        report = apply_host(target.host, args.profile, transport, overlays=tuple(args.overlay), check=args.check,
                            settings=settings)
        _print_report(report, args.check)
        if not report.ok:
            for line in report.detail:  # the failed command and its stderr tail, above the one-line error
                print(inert(f"  {line}"), flush=True)
            raise GoldenError(f"{target}: {report.error}", hint="what changed before it stopped is listed above; "
                                                                "fix the cause and apply again: it converges")
    print(f"{'would change' if args.check else 'changed'}: {report.changed}, unchanged: {report.unchanged}")
    return 0


def _cmd_cluster_apply(args: argparse.Namespace) -> int:
    from ..apply.cluster import DEFAULT_PARALLEL, apply_cluster, cluster_summary
    from ..core.outdir import out_dir_arg
    from ..model.cluster import load_cluster

    out = out_dir_arg(args.out) or Path("rendered") / f"cluster-{load_cluster(args.file).name}"
    if args.parallel is not None and args.parallel < 1:
        raise InputError(f"--parallel {args.parallel}: must be 1 or more")
    reports = apply_cluster(args.file, args.inventory, out_dir=out, options=_ssh_options(args), check=args.check,
                            parallel=args.parallel or DEFAULT_PARALLEL)
    for report in reports:
        _print_report(report, args.check, prefix=f"{report.name}: ")
    lines, status = cluster_summary(reports, args.check)
    print("\n".join(inert(line) for line in lines), flush=True)
    return status


def _add_ssh_arguments(p: argparse.ArgumentParser, check: bool = True) -> None:
    if check:
        p.add_argument("--check", action="store_true", help="report what would change (drift) and change nothing")
    p.add_argument("--identity", type=Path, metavar="KEY", help="SSH private key (default: ssh's own choice)")
    p.add_argument("--known-hosts", type=Path, metavar="FILE",
                   help="known_hosts file to check host keys against (default: ~/.ssh/known_hosts)")
    p.add_argument("--accept-new-host-key", action="store_true",
                   help="trust a host key seen for the first time and record it (a changed key is still refused)")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `golden apply PROFILE --host [USER@]HOST[:PORT]`."""
    p = subparsers.add_parser(
        "apply", help="converge a running Debian host to a profile over SSH",
        description="Converge a running Debian 10-13 host to PROFILE over SSH (key-based; sudo -n when the user "
                    "is not root): apt sources, packages, files, users, sysctls, services, bake commands and the "
                    "first-boot agent's role steps. Prints each change, then `changed: N, unchanged: M`.")
    p.add_argument("profile", help="profile name (profiles/NAME.yaml) or path to a profile file")
    p.add_argument("--host", required=True, metavar="[USER@]HOST[:PORT]", help="the host (default user root)")
    p.add_argument("--overlay", action="append", default=[], type=Path, help="customer overlay (repeatable)")
    p.add_argument("--host-settings", type=Path, metavar="FILE",
                   help="this host's cluster settings (host.json) for the role steps; `golden cluster apply` "
                        "passes each host's own")
    _add_ssh_arguments(p)
    p.set_defaults(func=_cmd_apply)
    return p


def add_cluster_apply_parser(cluster_subparsers: Any) -> argparse.ArgumentParser:
    """Register `golden cluster apply FILE --inventory INVENTORY`."""
    p = cluster_subparsers.add_parser(
        "apply", help="converge every host of a cluster file over SSH, in parallel",
        description="Apply each host's profile with its cluster settings over SSH, hosts in parallel. A failing "
                    "host stops no other; the summary names the hosts that failed and why (exit status 1).")
    p.add_argument("file", type=Path, metavar="FILE", help="the cluster file (see examples/cluster.yaml)")
    p.add_argument("--inventory", type=Path, required=True, metavar="FILE",
                   help="YAML: hosts: {NAME: [USER@]HOST[:PORT]}, optional user: (default root)")
    p.add_argument("--out", metavar="DIR",
                   help="where the cluster's rendering and generated secrets are kept (default rendered/cluster-NAME)")
    p.add_argument("--parallel", type=int, metavar="N", help="hosts converged at once (default 8)")
    _add_ssh_arguments(p)
    p.set_defaults(func=_cmd_cluster_apply)
    return p


def _cmd_cluster_status(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..apply.status import DEFAULT_PARALLEL, cluster_status, status_summary, status_table

    if args.parallel is not None and args.parallel < 1:
        raise InputError(f"--parallel {args.parallel}: must be 1 or more")
    statuses = cluster_status(args.file, args.inventory, options=_ssh_options(args),
                              parallel=args.parallel or DEFAULT_PARALLEL)
    Console(width=max(120, Console().width)).print(status_table(statuses))
    line, status = status_summary(statuses)
    print(inert(line), flush=True)
    return status


def add_cluster_status_parser(cluster_subparsers: Any) -> argparse.ArgumentParser:
    """Register `golden cluster status FILE --inventory INVENTORY`."""
    p = cluster_subparsers.add_parser(
        "status", help="one table of every host's role, first boot, health, replication or Galera, backup and "
                       "certificate, read from the hosts over SSH",
        description="Ask each host's agent (golden-firstboot facts --json, as root) over SSH, hosts in parallel, and "
                    "print one table: role, first boot, health checks, replication or Galera state, backup age, "
                    "nearest certificate expiry, judged with the cluster file's monitoring thresholds. Exit status "
                    "1 names the hosts to look at.")
    p.add_argument("file", type=Path, metavar="FILE", help="the cluster file (see examples/cluster.yaml)")
    p.add_argument("--inventory", type=Path, required=True, metavar="FILE",
                   help="YAML: hosts: {NAME: [USER@]HOST[:PORT]}, optional user: (default root)")
    p.add_argument("--parallel", type=int, metavar="N", help="hosts asked at once (default 16)")
    _add_ssh_arguments(p, check=False)
    p.set_defaults(func=_cmd_cluster_status)
    return p
