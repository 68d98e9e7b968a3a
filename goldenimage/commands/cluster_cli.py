"""`golden cluster`: argument parsing only; the work is in cluster.render."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _cmd_render(args: argparse.Namespace) -> int:
    from ..core.outdir import out_dir_arg
    from ..model.cluster import load_cluster
    from ..render.cluster import render_cluster

    out = out_dir_arg(args.out)
    if out is None:
        out = Path("rendered") / f"cluster-{load_cluster(args.file).name}"
    for host in render_cluster(args.file, out):
        print(host.line())  # names, addresses, roles and paths only: never a secret
    return 0


def _cmd_monitoring(args: argparse.Namespace) -> int:
    from ..core.outdir import check_replaceable, out_dir_arg
    from ..model.cluster import load_cluster
    from ..render.monitoring import write_monitoring

    out = out_dir_arg(args.out)
    if out is not None:
        check_replaceable(out)  # before any work: a bad --out is refused at once
    else:
        out = Path("rendered") / f"monitoring-{load_cluster(args.file).name}"
    for path in write_monitoring(args.file, out):
        print(path)
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `golden cluster render|monitoring FILE --out DIR` on the `golden` command's subparsers."""
    cluster = subparsers.add_parser("cluster", help="render or apply a whole cluster from one file")
    sub = cluster.add_subparsers(dest="cluster_command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "render",
        help="write each host's user-data, meta-data, network-config and seed ISO",
        description="Validate a cluster file and write DIR/<host>/{user-data,meta-data,network-config,seed.iso}, "
        "DIR/hosts.json and DIR/secrets.json (0600: generated secrets, reused by the next render).",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="the cluster file (see examples/cluster.yaml)")
    p.add_argument("--out", metavar="DIR",
                   help="output directory, replaced whole (default rendered/cluster-NAME)")
    p.set_defaults(func=_cmd_render)
    p = sub.add_parser(
        "monitoring",
        help="write a Prometheus scrape configuration and alert rules for the cluster's hosts",
        description="Validate a cluster file (it needs a monitoring section) and write DIR/prometheus.yml (a scrape "
        "job per exporter: node, mysqld, apache, haproxy, on each host's cluster address) and DIR/alerts.yml (the "
        "alert rules, each with its threshold, runbook and first command; README: Watching a fleet).",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="the cluster file (see examples/cluster.yaml)")
    p.add_argument("--out", metavar="DIR",
                   help="output directory, replaced whole (default rendered/monitoring-NAME)")
    p.set_defaults(func=_cmd_monitoring)
    from .apply_cli import add_cluster_apply_parser, add_cluster_status_parser

    add_cluster_apply_parser(sub)
    add_cluster_status_parser(sub)
    from .rolling_cli import add_parsers as add_rolling_parsers

    add_rolling_parsers(sub)
    return cluster
