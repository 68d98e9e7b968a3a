"""`golden images list|promote|prune`: the artifact store's channels, of the local store or of the shared one
($GOLDEN_STORE) (argument parsing only; bake/channels.py and bake/shared_store.py do the work)."""

from __future__ import annotations

import argparse
import time
from typing import Any

#: As bake/channels.py has them (a test checks): the parser is built at every start, without the store's imports.
CHANNELS = ("edge", "candidate", "stable")
SOAK_DAYS = 7.0


def _cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ..bake import channels, shared_store
    from ..core.log import console

    shared = shared_store.configured()
    found = shared.entries() if shared else channels.entries()
    table = Table(title=f"goldenimage artifacts in {shared.url if shared else 'images/'}", show_lines=False)
    for column in ("channel", "artifact", "key", "age", "published"):
        table.add_column(column)
    now = time.time()
    for entry in found:
        if args.channel and entry.channel != args.channel:
            continue
        table.add_row(entry.channel, escape(entry.name), entry.key, channels.age(now - entry.built),
                      escape(", ".join(entry.published) or "-"))
    Console(width=max(140, console.width)).print(table)
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    from ..bake import channels, shared_store

    shared = shared_store.configured()
    if shared:
        name, before, after = shared.promote(args.artifact, args.to, soak_days=args.soak_days,
                                             skip_soak=args.skip_soak)
    else:
        artifact = channels.find_artifact(args.artifact)
        name, before = artifact.name, channels.channel_of(artifact)
        after = channels.promote(artifact, args.to, soak_days=args.soak_days, skip_soak=args.skip_soak)["channel"]
    print(f"{name}: on {before} already" if before == after else f"{name}: {before} -> {after}")
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    from ..bake import channels, shared_store

    shared = shared_store.configured()
    if shared:
        removed, held = shared.prune(args.keep, args.dry_run)
    elif args.dry_run:
        removed, held = channels.prune_plan(args.keep)
    else:
        removed, held = channels.prune(args.keep)
    verb = "would remove" if args.dry_run else "removed"
    for entry in removed:
        print(f"{verb} {entry.name} ({entry.channel})")
    for entry in held:
        print(f"kept {entry.name} ({entry.channel}): published as {', '.join(entry.published)}")
    if not removed:
        print("nothing to remove")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `golden images` on the `golden` command's subparsers."""
    p = subparsers.add_parser(
        "images", help="the artifact store: channels (edge, candidate, stable), promotion, pruning",
        description="Artifacts move edge (every bake) -> candidate (a passed golden verify and a passed cluster "
                    "drill recorded for its content key) -> stable (a soak period as candidate). Records live beside "
                    "each artifact in images/ (NAME.channel.json), "
                    "or in the shared store when $GOLDEN_STORE names one (s3://BUCKET/PREFIX).")
    sub = p.add_subparsers(dest="images_command", required=True, metavar="ACTION")

    q = sub.add_parser("list", help="each artifact's channel, content key, age and where it was published")
    q.add_argument("--channel", choices=CHANNELS, help="only this channel")
    q.set_defaults(func=_cmd_list)

    q = sub.add_parser("promote", help="move an artifact to candidate (needs a passed verify and a passed cluster "
                                       "drill for its content key) or stable (needs candidate and the soak period)")
    q.add_argument("artifact", metavar="ARTIFACT", help="an artifact's name, content key or path")
    q.add_argument("--to", required=True, choices=CHANNELS[1:])
    q.add_argument("--soak-days", type=float, default=SOAK_DAYS, metavar="DAYS",
                   help=f"days as candidate before stable (default {SOAK_DAYS:g})")
    q.add_argument("--skip-soak", action="store_true",
                   help="promote to stable before the soak period ends (recorded in the artifact's history)")
    q.set_defaults(func=_cmd_promote)

    q = sub.add_parser("prune", help="keep the N newest artifacts per profile, release, kind and channel; never "
                                     "one a published image still uses")
    q.add_argument("--keep", type=int, required=True, metavar="N")
    q.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    q.set_defaults(func=_cmd_prune)
    return p
