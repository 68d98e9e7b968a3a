"""`golden-firstboot backup`: run one job (what the timers start), check freshness, print the state, list
the repository's snapshots, restore this (fresh) SQL host to a time, put a file or folder back as of a time (in
place or under another folder), restore one environment's databases or site files.
`list` and the restores print JSON, which `golden backup` reads over SSH."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import backup_jobs, backup_restore, backup_restore_env, backup_restore_files
from .steps import Context


def add_parser(sub: Any, add_common: Any) -> None:
    backup = sub.add_parser("backup", help="this host's backups: run a job, check, status, list, restore")
    add_common(backup, top=False)
    actions = backup.add_subparsers(dest="backup_action", metavar="ACTION")
    actions.required = True
    run = actions.add_parser("run", help="run one backup job now (the timers' command)")
    run.add_argument("kind", choices=backup_jobs.JOBS)
    actions.add_parser("check", help="fail when a kind's last good backup is too old or its last run failed")
    actions.add_parser("status", help="each kind's last good backup")
    listing = actions.add_parser("list", help="the repository's snapshots, as JSON")
    listing.add_argument("--host", help="this host's name in the repository (default: every host)")
    restore = actions.add_parser("restore", help="restore this fresh SQL host's database to a time (JSON report)")
    restore.add_argument("--at", required=True, metavar="TIME", help="UTC, such as 2026-12-07T04:42:43Z")
    restore.add_argument("--source", metavar="HOST", help="the host whose backups to read (default: this one)")
    files = actions.add_parser("restore-files", help="put a backed-up file or folder back as of a time, the live "
                                                     "one archived first, or under --to DIR (JSON report)")
    files.add_argument("--at", required=True, metavar="TIME", help="UTC, such as 2026-12-07T04:42:43Z")
    files.add_argument("--path", required=True, help="a file or folder inside one of this host's backed-up folders")
    files.add_argument("--to", "--target", dest="to", metavar="DIR",
                       help="an empty folder to restore under, nothing live touched (default: in place)")
    files.add_argument("--source", metavar="HOST", help="the host whose backups to read (default: this one; "
                                                        "another host's with --to only)")
    env = actions.add_parser("restore-env", help="restore one environment's databases (on the writer) or site "
                                                 "files (on a web node) as of a time (JSON report)")
    env.add_argument("--name", required=True, help="the environment")
    env.add_argument("--at", required=True, metavar="TIME", help="UTC, such as 2026-12-07T04:42:43Z")
    env.add_argument("--part", required=True, choices=("databases", "files"))
    env.add_argument("--source", metavar="HOST", help="the host whose backups to read (default: this one)")
    for parser in (run, restore, listing, files, env) + tuple(actions.choices[n] for n in ("check", "status")):
        add_common(parser, top=False)


def main(ctx: Context, args: argparse.Namespace) -> int:
    action = args.backup_action
    if action == "run":
        snapshot = backup_jobs.run(ctx, args.kind)
        ctx.log("backup {} done{}".format(args.kind, ": snapshot " + snapshot if snapshot else ""))
        return 0
    if action == "check":
        backup_jobs.check(ctx)
        return 0
    if action == "status":
        verdicts = backup_jobs.verdicts(ctx)
        sys.stdout.write(backup_jobs.format_verdicts(verdicts) or "this host backs nothing up\n")
        return 0 if all(v["ok"] for v in verdicts) else 1
    if action == "list":
        sys.stdout.write(json.dumps(backup_restore.list_snapshots(ctx, args.host), indent=2) + "\n")
        return 0
    if action == "restore-files":
        report = backup_restore_files.restore_path(ctx, backup_restore.parse_time(args.at), args.path, args.to,
                                                   args.source)
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return 0
    if action == "restore-env":
        restore = backup_restore_env.restore_env_databases if args.part == "databases" else \
            backup_restore_env.restore_env_files
        report = restore(ctx, args.name, backup_restore.parse_time(args.at), args.source)
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return 0
    report = backup_restore.restore_here(ctx, backup_restore.parse_time(args.at), args.source)
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0
