"""`golden-firstboot env apply|list --part web|sql`: one batch of environments on this host, the report as one
JSON document on stdout (golden reads it; the log goes to stderr)."""

from __future__ import annotations

import json
from typing import IO, Any

from .roles import env, env_sql
from .steps import Context
from .system import FirstbootError


def main(ctx: Context, args: Any, out: IO[str]) -> int:
    if args.action == "list":
        if args.part == "web":
            report = {"environments": env.show(ctx), "certificates": env.certificates(ctx)}
        else:
            report = {"environments": {name: {} for name in env_sql.undeclared(ctx, set())}}
    elif args.action == "certs":
        if not args.data or args.part != "web":
            raise FirstbootError("env certs: --part web --data FOLDER is required")
        report = env.install_certificates(ctx, args.data)
    else:
        if not args.data:
            raise FirstbootError("env apply: --data FILE is required")
        data = env.load_batch(args.data, web=args.part == "web")
        if args.part == "web":
            report = env.apply_web(ctx, data, check=args.check, prune_removed=args.prune)
        else:
            report = env_sql.apply_sql(ctx, data, check=args.check, prune_removed=args.prune)
    out.write(json.dumps(report, sort_keys=True) + "\n")
    return 1 if report.get("failed") else 0
