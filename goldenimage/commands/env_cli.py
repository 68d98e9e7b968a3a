"""`golden env apply|list|show`: argument parsing and printing only; the work is in hosting/."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..core.errors import InputError
from ..core.inert import inert


def _ssh(args: argparse.Namespace) -> Any:
    from .apply_cli import _ssh_options

    return _ssh_options(args)


def _cmd_apply(args: argparse.Namespace) -> int:
    from ..hosting.apply import apply_environments

    certificates = None
    if args.acme_directory:
        from ..hosting.certs import AcmeSettings, certificate_pass

        if args.acme_account_key is None:
            raise InputError("--acme-directory needs --acme-account-key FILE (made there on first use, 0600)")
        certificates = certificate_pass(AcmeSettings(
            directory=args.acme_directory, account_key=args.acme_account_key,
            ca_bundle=str(args.acme_ca_bundle) if args.acme_ca_bundle else None,
            workers=args.acme_workers, orders_per_run=args.acme_orders_per_run))
    report = apply_environments(args.envs, args.cluster, args.inventory, options=_ssh(args), check=args.check,
                                prune=args.prune, certificates=certificates)
    for line in report.lines(args.check):  # what hosts report is input too: one inert line each
        print(inert(line), flush=True)
    return 0 if report.ok else 1


def _cmd_list(args: argparse.Namespace) -> int:
    from ..hosting.apply import infrastructure, list_environments

    found = list_environments(args.cluster, args.inventory, options=_ssh(args))
    web = infrastructure(args.cluster).web
    if getattr(args, "name", None) is not None:
        if args.name not in found:
            print(inert(f"{args.name}: no such environment on the web nodes"))
            return 1
        print(json.dumps(found[args.name], indent=2, sort_keys=True))
        return 0
    for name, env in found.items():
        missing = [n for n in web if n not in env["nodes"]]
        state = "certificate" if env.get("certificate") else "snakeoil"
        line = f"{name}  {' '.join(env.get('domains') or [])}  databases: {env.get('databases')}  {state}"
        print(inert(line + (f"  MISSING on {', '.join(missing)}" if missing else "")))
    print(f"{len(found)} environment(s) on {len(web)} web node(s)")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    from .apply_cli import _add_ssh_arguments

    p.add_argument("--cluster", type=Path, required=True, metavar="FILE", help="the cluster file")
    p.add_argument("--inventory", type=Path, required=True, metavar="FILE",
                   help="how to reach each host over SSH (as for `golden cluster apply`)")
    _add_ssh_arguments(p)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `golden env apply|list|show` on the `golden` command's subparsers."""
    env = subparsers.add_parser("env", help="hosting environments (account, sites, PHP pool, database, "
                                            "certificate) on a running cluster")
    sub = env.add_subparsers(dest="env_command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "apply", help="make the declared environments exist on the cluster (idempotent; batched)",
        description="Check every environment file, the cluster file and the inventory, then make each environment "
        "exist: the SQL writer's databases and account, then every web node's account (SFTP only, chrooted), "
        "PHP-FPM pool and Apache site, one reload per service and node; with --acme-directory, the certificates "
        "that are missing or due. One environment's failure never stops the others; rerun to retry it.")
    p.add_argument("envs", type=Path, nargs="+", metavar="ENVS",
                   help="environment files (YAML: one or `environments:`; CSV), or folders of them")
    _common(p)
    p.add_argument("--prune", action="store_true",
                   help="remove the environments no longer declared (after a dump of their databases and an "
                        "archive of their files, kept on the hosts)")
    p.add_argument("--acme-directory", metavar="URL",
                   help="issue and renew certificates from this ACME directory (Let's Encrypt: "
                        "https://acme-v02.api.letsencrypt.org/directory)")
    p.add_argument("--acme-account-key", type=Path, metavar="FILE",
                   help="the ACME account's key (made there, 0600, on first use)")
    p.add_argument("--acme-ca-bundle", type=Path, metavar="FILE", help="CA bundle the ACME server's TLS is checked "
                                                                       "with (Pebble's in tests)")
    p.add_argument("--acme-workers", type=int, default=4, metavar="N", help="orders in flight at once (default 4)")
    p.add_argument("--acme-orders-per-run", type=int, default=300, metavar="N",
                   help="new orders one run may place (Let's Encrypt's limit: 300 per 3 hours); the rest wait")
    p.set_defaults(func=_cmd_apply)
    p = sub.add_parser("list", help="the environments the web nodes have (read from the hosts)")
    _common(p)
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("show", help="one environment as the web nodes have it (read from the hosts)")
    p.add_argument("name", metavar="NAME")
    _common(p)
    p.set_defaults(func=_cmd_list)
    return env
