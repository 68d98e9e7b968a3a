"""`golden cluster upgrade` and `golden cluster reboot --rolling`: argument parsing and printing only; the work is
in rolling/."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..core.errors import InputError
from ..core.inert import inert
from .apply_cli import _add_ssh_arguments, _ssh_options


def _progress(line: str) -> None:
    print(inert(f"{time.strftime('%H:%M:%S')} {line}"), file=sys.stderr, flush=True)


def _run(args: argparse.Namespace, mode: str) -> int:
    from ..core.outdir import out_dir_arg
    from ..model.cluster import load_cluster
    from ..rolling.hosts import Waits
    from ..rolling.upgrade import UpgradeStopped, rolling_cluster, summary

    if args.health_timeout is not None and args.health_timeout <= 0:
        raise InputError(f"--health-timeout {args.health_timeout}: must be more than 0 seconds")
    out = out_dir_arg(args.out) or Path("rendered") / f"cluster-{load_cluster(args.file).name}"
    waits = Waits(health=args.health_timeout) if args.health_timeout else Waits()
    try:
        done = rolling_cluster(args.file, args.inventory, mode, out_dir=out, options=_ssh_options(args),
                               images=getattr(args, "image", None) or (), waits=waits, progress=_progress)
    except UpgradeStopped as exc:
        print(inert(f"rolling {mode} stopped: {exc.message}"), flush=True)
        if exc.hint:
            print(inert(f"hint: {exc.hint}"), flush=True)
        return 1
    print("\n".join(inert(line) for line in summary(done, mode)), flush=True)
    return 0


def _cmd_upgrade(args: argparse.Namespace) -> int:
    return _run(args, "apply" if args.apply else "image")


def _cmd_reboot(args: argparse.Namespace) -> int:
    if not args.rolling:
        raise InputError("golden cluster reboot needs --rolling (one node at a time, drained first)")
    return _run(args, "reboot")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, metavar="FILE", help="the cluster file (see examples/cluster-ha.yaml)")
    p.add_argument("--inventory", type=Path, required=True, metavar="FILE",
                   help="YAML: hosts: {NAME: [USER@]HOST[:PORT]}, optional user: (default root)")
    p.add_argument("--out", metavar="DIR",
                   help="where the cluster's rendering and generated secrets are kept (default rendered/cluster-NAME)")
    p.add_argument("--health-timeout", type=float, metavar="SECONDS",
                   help="how long a changed node may take to pass its health checks (default 1200)")
    _add_ssh_arguments(p, check=False)


ORDER = ("Node by node: the keepalived BACKUP load balancer first, then the one holding the floating address "
         "(the address moved off it first: keepalived stopped there), then the SQL nodes, then the web nodes. Each is "
         "drained from every load balancer's pool through HAProxy's runtime API until its connections end, changed, "
         "waited for (first boot done, health checks passing, Galera Synced), then put back. A failed health check "
         "stops the run (exit status 1, the node and the check named) with the node out of its pools.")


def add_parsers(cluster_subparsers: Any) -> None:
    """Register `golden cluster upgrade` and `golden cluster reboot`."""
    p = cluster_subparsers.add_parser(
        "upgrade", help="change a running cluster one node at a time with no request lost",
        description="--apply converges each node to its profile (what `golden cluster apply` does); --image boots "
                    "each on a new image. " + ORDER)
    _common(p)
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--apply", action="store_true", help="converge each node (golden cluster apply, one node)")
    how.add_argument("--image", type=Path, metavar="QCOW2", action="append",
                     help="boot each node of this artifact's profile on it (again for each profile); the "
                          "inventory's platform: section says where each host runs (openstack: a Nova rebuild, "
                          "proxmox: the boot disk replaced); on a failed health check the node goes back to its "
                          "previous image")
    p.set_defaults(func=_cmd_upgrade)
    p = cluster_subparsers.add_parser(
        "reboot", help="reboot the nodes that need it (/run/reboot-required, needrestart), one at a time",
        description="Reboot each node that needs it (/run/reboot-required, or needrestart: a newer kernel or "
                    "microcode, services on replaced libraries); a node no other stands in for is named, not "
                    "rebooted. " + ORDER)
    _common(p)
    p.add_argument("--rolling", action="store_true", help="one node at a time, drained first (required)")
    p.set_defaults(func=_cmd_reboot)
