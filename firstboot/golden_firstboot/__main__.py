"""golden-firstboot command line: run (the default), early, status, lb-add, lb-remove, galera-health, share-watch,
facts, converge, backup."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__, agent
from .steps import Context
from .system import FirstbootError, failure_fields, log

#: Options accepted before or after the command, with their values when given nowhere.
COMMON_DEFAULTS = {"rerun": False, "root": "/", "host_settings": None}


def add_common(parser: argparse.ArgumentParser, top: bool) -> None:
    """The options every command takes, added to each parser as its own actions: argparse's `parents` shares one
    action object between parsers, so the top parser's defaults became the subcommand's and a `--rerun` given
    before the command was reset by it. A subcommand's copy has no default (SUPPRESS): it sets a value only
    when the option comes after the command."""
    def default(name: str) -> object:
        return COMMON_DEFAULTS[name] if top else argparse.SUPPRESS

    parser.add_argument("--rerun", action="store_true", default=default("rerun"),
                        help="run again although first boot has completed")
    parser.add_argument("--root", default=default("root"), help=argparse.SUPPRESS)  # tests: a fake root
    parser.add_argument("--host-settings", metavar="FILE", default=default("host_settings"),
                        help="this host's cluster settings from FILE instead of /etc/golden/host.json, which "
                             "then holds a copy (root only) for later runs (`golden apply` uses it)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="golden-firstboot",
        description="Finish this golden image's role on its first boot, from /etc/golden/image.json and "
                    "/etc/golden/host.json. Runs once; every step checks before it acts.")
    add_common(p, top=True)
    p.add_argument("--version", action="version", version="golden-firstboot " + __version__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run the first-boot steps (the default)")
    run.add_argument("--check", action="store_true",
                     help="change nothing: each step's plan, what it would change (a step without one: unplanned)")
    run.add_argument("--json", action="store_true",
                     help="print the run's result (the status file's form) as JSON on stdout at the end")
    early = sub.add_parser("early",
                           help="make this instance's keys and certificates (every boot, before the services that "
                                "use them)")
    status = sub.add_parser("status", help="print each step's state")
    status.add_argument("--json", action="store_true", help="the status file as it is")
    add = sub.add_parser("lb-add", help="(lb) put a web node into a spare backend slot")
    add.add_argument("name")
    add.add_argument("address")
    add.add_argument("--port", type=int)
    add.add_argument("--backend")
    remove = sub.add_parser("lb-remove", help="(lb) take a node added by lb-add out again")
    remove.add_argument("name")
    remove.add_argument("--backend")
    health = sub.add_parser("galera-health",
                            help="(sql-galera) serve this node's health to the load balancers (a service, never "
                                 "returns)")
    share = sub.add_parser("share-watch",
                           help="(web) probe the shared docroot for the health endpoint (a service, never returns)")
    facts = sub.add_parser("facts", help="write this host's facts for node-exporter's textfile collector "
                                         "(golden-facts.timer runs it every 15 s)")
    facts.add_argument("--json", action="store_true",
                       help="print this host's state (roles, first boot, health checks, replication or Galera, "
                            "backup age, certificate expiry) as JSON instead, for `golden cluster status`")
    env = sub.add_parser("env", help="(web, sql writer) apply, check or list hosting environments (golden env)")
    env.add_argument("action", choices=["apply", "list", "certs"])
    env.add_argument("--data", metavar="FILE", help="apply: the batch golden sent (JSON, golden-env/1); certs: the "
                                                     "folder of NAME/fullchain.pem and NAME/privkey.pem")
    env.add_argument("--part", choices=["web", "sql"], required=True, help="this host's part of each environment")
    env.add_argument("--check", action="store_true", help="change nothing; report the drift")
    env.add_argument("--prune", action="store_true", help="remove the environments the batch no longer declares")
    for command in (run, early, status, add, remove, health, share, facts, env):
        add_common(command, top=False)
    try:
        from .backup_command import add_parser as add_backup_parser
    except ModuleNotFoundError as exc:  # an image of a role that backs nothing up
        if exc.name != __package__ + ".backup_command":
            raise
    else:
        add_backup_parser(sub, add_common)
    converge = sub.add_parser(
        "converge", help="apply a cloud-config (JSON form) to a tree or to this host, with cloud-init's semantics",
        description="Apply the cloud-config goldenimage renders, with cloud-init's semantics, comparing before "
                    "each change: to a tree (--root DIR: files written under DIR, commands chrooted, services "
                    "enabled, never started; packages must be there) or to this host (the default: missing "
                    "packages installed, services enabled and started). One line per change, then the summary.")
    converge.add_argument("--user-data", required=True, metavar="FILE",
                          help="the cloud-config, as JSON (optionally after a #cloud-config line)")
    converge.add_argument("--root", default=argparse.SUPPRESS, metavar="DIR",
                          help="converge the tree under DIR instead of this host")
    converge.add_argument("--check", action="store_true", help="change nothing; report what would change")
    converge.add_argument("--verbose", action="store_true", help="also list what is unchanged, and each command")
    converge.add_argument("--json", action="store_true",
                          help="print one JSON object at the end instead of the lines: the changes, the counts and "
                               "the error, if any (its command and stderr tail)")
    return p


def context(root: str, host_settings: str | None = None, check: bool = False) -> Context:
    image = agent.load_json(root, agent.IMAGE_INFO, required=True)
    if host_settings:
        host = agent.install_host_settings(root, host_settings, install=not check)
    else:
        host = agent.check_host_settings(agent.load_json(root, agent.HOST_SETTINGS, required=False),
                                         agent.HOST_SETTINGS)
    if not host:
        log(f"{agent.HOST_SETTINGS} is absent or empty: only steps that need no cluster settings run")
    return Context(image, host, root=root, check=check)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command = args.command or "run"
    try:
        if command == "status":
            data = agent.Status(args.root).load()
            sys.stdout.write(json.dumps(data, indent=2) + "\n" if args.json else agent.format_status(data))
            backups_ok = True
            if not args.json:
                try:
                    from .backup_jobs import print_status
                except ModuleNotFoundError as exc:  # no backup modules in this image
                    if exc.name != __package__ + ".backup_jobs":
                        raise
                else:
                    backups_ok = print_status(args.root, sys.stdout)
            return 0 if (data is None or data.get("result") != "failed") and backups_ok else 1
        if command == "galera-health":
            from . import galera_health

            return galera_health.serve(args.root.rstrip("/") + galera_health.CONF)
        if command == "share-watch":
            from . import share_watch

            root = args.root.rstrip("/")
            return share_watch.serve(root + share_watch.CONF, root + share_watch.STATUS)
        if command == "facts":
            if args.json:
                try:
                    from . import host_summary
                except ImportError:
                    raise FirstbootError("this agent carries no host summary (the one installed in images)",
                                         hint="golden cluster status ships a zipapp with it") from None

                return host_summary.main(args.root)
            from . import facts as host_facts

            return host_facts.main(args.root)
        if command == "converge":
            try:
                from . import converge
            except ImportError:
                raise FirstbootError("this agent carries no converge engine (the one installed in images)",
                                     hint="golden apply and the native bake ship a zipapp with it") from None

            return converge.main(args.user_data, args.root, args.check, args.verbose, sys.stdout, args.json)
        # `golden-firstboot [--rerun]` with no command is `run`: the top parser has no --check or --json
        check = command == "run" and getattr(args, "check", False)
        if command == "run" and getattr(args, "json", False):
            return _run_json(args.root, args.host_settings, args.rerun, check)
        ctx = context(args.root, args.host_settings, check)
        if command == "env":
            try:
                from . import env_command
            except ImportError:
                raise FirstbootError("this agent carries no env role (the one installed in images)",
                                     hint="golden env apply ships a zipapp with it") from None

            return env_command.main(ctx, args, sys.stdout)
        if command == "run":
            return agent.run(ctx, rerun=args.rerun)
        if command == "early":
            return agent.run_early(ctx)
        if command == "backup":
            from . import backup_command

            return backup_command.main(ctx, args)
        from .roles import lb

        if command == "lb-add":
            slot = lb.pool_add(ctx, args.name, args.address, args.port, args.backend)
            sys.stdout.write(f"{args.name} is in slot {slot}\n")
        else:
            lb.pool_remove(ctx, args.name, args.backend)
        return 0
    except FirstbootError as exc:
        log("error: " + exc.message)
        if exc.hint:
            log("hint: " + exc.hint)
        return exc.exit_status


def _run_json(root: str, host_settings: str | None, rerun: bool, check: bool) -> int:
    """`run --json`: the run (or check), then its result as one JSON object on stdout, a failure included."""
    status = agent.Status(root, persist=not check)
    try:
        code = agent.run(context(root, host_settings, check), rerun=rerun, status=status)
    except FirstbootError as exc:  # host.json or image.json refused before any step
        status.finish("failed", exc.message, failure_fields(exc))
        sys.stdout.write(json.dumps(status.data, sort_keys=True) + "\n")
        raise
    sys.stdout.write(json.dumps(status.data, sort_keys=True) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
