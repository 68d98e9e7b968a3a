"""`golden backup list|restore|restore-files|restore-env`: argument parsing and printing only; the work is in
apply/backup.py (and hosting/restore_env.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..core.errors import InputError
from ..core.inert import inert


def _transport(args: argparse.Namespace) -> Any:
    from ..apply.target import TargetError, parse_target
    from ..apply.transport import SSHTransport
    from .apply_cli import _ssh_options

    try:
        target = parse_target(args.host)
    except TargetError as exc:
        raise InputError(f"HOST: {exc}", hint="write [USER@]HOST[:PORT], e.g. root@10.10.0.12") from None
    return SSHTransport(target, _ssh_options(args))


def _cmd_list(args: argparse.Namespace) -> int:
    from ..apply.backup import list_backups

    with _transport(args) as transport:
        snapshots = list_backups(transport, args.of)
    print(f"{'TIME (UTC)':<21} {'KIND':<7} {'HOST':<16} ID")
    for snap in snapshots:
        print(inert(snap.line()))
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    from ..apply.backup import parse_at, restore_host
    from ..core.log import step

    at = parse_at(args.at)
    with step(f"Restoring {args.source or args.host} as of {at:%Y-%m-%dT%H:%M:%SZ} onto {args.host}"), \
            _transport(args) as transport:
        report = restore_host(transport, at, args.source)
    for line in report.lines():
        print(inert(line))
    return 0


def _cmd_restore_files(args: argparse.Namespace) -> int:
    from ..apply.backup import parse_at, remote_path, restore_files
    from ..core.log import step

    at = parse_at(args.at)
    path = remote_path(args.path, "--path")
    to = remote_path(args.to, "--to") if args.to is not None else None
    where = f" under {to}" if to else " in place"
    with step(f"Restoring {path} on {args.host} as of {at:%Y-%m-%dT%H:%M:%SZ}{where}"), \
            _transport(args) as transport:
        report = restore_files(transport, path, at, to)
    for line in report.lines():
        print(inert(line))
    return 0


def _cmd_restore_env(args: argparse.Namespace) -> int:
    from ..apply.backup import parse_at
    from ..core.log import step
    from ..hosting.restore_env import restore_environment
    from .apply_cli import _ssh_options

    at = parse_at(args.at)
    with step(f"Restoring environment {args.name} as of {at:%Y-%m-%dT%H:%M:%SZ}"):
        report = restore_environment(args.name, at, args.cluster, args.inventory, options=_ssh_options(args))
    for line in report.lines():
        print(inert(line))
    return 0 if report.ok else 1


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `golden backup`."""
    p = subparsers.add_parser("backup", help="list backups, restore a database host to a second, "
                                                      "a file or folder, an environment",
                              description="The cluster's backups (README: Backups and restores). HOST is a "
                                          "[USER@]ADDRESS[:PORT] reached over SSH; its agent does the work.")
    actions = p.add_subparsers(dest="backup_action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="the snapshots in the cluster's repository, oldest first")
    listing.add_argument("host", metavar="HOST", help="any host holding the repository key (a SQL host)")
    listing.add_argument("--of", metavar="NAME", help="only this host's backups (its name in the cluster file)")
    restore = actions.add_parser("restore", help="restore a fresh SQL host's database to a second, then check it")
    restore.add_argument("host", metavar="HOST", help="the fresh SQL host to restore onto (booted from the image)")
    restore.add_argument("--at", required=True, metavar="TIMESTAMP",
                         help="ISO 8601 with its zone (2026-12-07T04:42:43Z), or `now` for the latest state")
    restore.add_argument("--source", metavar="NAME",
                         help="the host whose backups to read (its name in the cluster file; default: HOST's own)")
    files = actions.add_parser("restore-files", help="put a file or folder of a host's files backups back as of a time",
                               description="PATH (inside one of HOST's backed-up folders: its docroot, NFS export "
                                           "or /srv/env) as it was in HOST's newest files backup at or before "
                                           "TIMESTAMP. In place, the live version moved into "
                                           "/var/lib/golden/files-archive/ on the host first; or under --to DIR, "
                                           "nothing live touched. Each restored file is checked against the "
                                           "snapshot before it is put in place.")
    files.add_argument("host", metavar="HOST", help="the host whose files to restore (a web or nfs host)")
    files.add_argument("--path", required=True, metavar="PATH", help="the file or folder, an absolute path")
    files.add_argument("--at", required=True, metavar="TIMESTAMP",
                       help="ISO 8601 with its zone (2026-12-07T04:42:43Z), or `now` for the latest backup")
    files.add_argument("--to", metavar="DIR", help="an empty folder on the host to restore under (outside the "
                                                   "backed-up folders) instead of in place")
    env = actions.add_parser("restore-env", help="restore one environment's databases and site files to a second",
                             description="NAME's databases on the cluster's SQL writer (restored beside the live "
                                         "server, then swapped in) and its site files on every web node; what they "
                                         "replace is kept in /var/lib/golden/env-archive/. Other environments are "
                                         "not touched.")
    env.add_argument("name", metavar="NAME")
    env.add_argument("--at", required=True, metavar="TIMESTAMP",
                     help="ISO 8601 with its zone (2026-12-07T04:42:43Z), or `now` for the latest state")
    env.add_argument("--cluster", type=Path, required=True, metavar="FILE", help="the cluster file")
    env.add_argument("--inventory", type=Path, required=True, metavar="FILE", help="how to reach each host over SSH")
    for sub, func in ((listing, _cmd_list), (restore, _cmd_restore), (files, _cmd_restore_files),
                      (env, _cmd_restore_env)):
        sub.add_argument("--identity", type=Path, metavar="KEY", help="SSH private key (default: ssh's own choice)")
        sub.add_argument("--known-hosts", type=Path, metavar="FILE",
                         help="known_hosts file to check host keys against (default: ~/.ssh/known_hosts)")
        sub.add_argument("--accept-new-host-key", action="store_true",
                         help="trust a host key seen for the first time and record it (a changed key is refused)")
        sub.set_defaults(func=func)
    return p
