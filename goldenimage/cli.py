"""The `golden` command line: argument parsing only; the work happens in the modules it calls."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .core.errors import GoldenError
from .core.log import setup_logging
from .core.paths import PROFILES_ENV


def build_parser() -> argparse.ArgumentParser:
    """Every command is one module of commands/ with its add_parser; `golden --help` lists them in this order."""
    from .commands import (
        apply_cli,
        audit_cli,
        backup_cli,
        base_cli,
        build_cli,
        cluster_cli,
        doctor,
        env_cli,
        images_cli,
        profiles_cli,
        publish_cli,
        render_cli,
        validate_cli,
        verify_cli,
    )

    parser = argparse.ArgumentParser(prog="golden", description="Golden images for Debian server fleets.")
    parser.add_argument("--debug", action="store_true", help="show commands run and tracebacks")
    parser.add_argument("--profiles-dir", type=Path, metavar="DIR",
                        help=f"your profiles and role fragments, searched before the shipped ones "
                             f"(default: ${PROFILES_ENV}, else ./profiles when it exists)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (profiles_cli, render_cli, validate_cli, base_cli, build_cli, verify_cli, apply_cli, cluster_cli,
                    images_cli, env_cli, publish_cli, audit_cli, backup_cli, doctor):
        command.add_parser(sub)
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
