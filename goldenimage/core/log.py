"""Logging and nested, timed steps: `with step("Baking web on Debian 12"):`."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

from .inert import inert

if TYPE_CHECKING:
    from rich.console import Console

log = logging.getLogger("goldenimage")


@cache
def _stderr_console() -> Console:
    from rich.console import Console  # on first use: `golden --help` starts without rich

    return Console(stderr=True, highlight=False, soft_wrap=True)


def __getattr__(name: str) -> Any:
    """`console`, the shared stderr console (rich), made on first import of the name (PEP 562)."""
    if name == "console":
        return _stderr_console()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
_depth = 0


class InertFormatter(logging.Formatter):
    """Each log line inert: control characters escaped and URL credentials redacted (input may reach a log
    message); the line breaks the message itself holds (a command's output with --debug) stay."""

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(inert(line) for line in super().format(record).split("\n"))


def setup_logging(debug: bool = False) -> None:
    """Send goldenimage's log to stderr; commands and details show with --debug."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(InertFormatter("  %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if debug else logging.WARNING)
    log.propagate = False


@contextmanager
def step(title: str) -> Iterator[None]:
    """Announce a step, nest inner steps under it, and print its elapsed time (or its failure)."""
    from rich.markup import escape

    global _depth
    indent = "  " * _depth
    title = escape(inert(title))  # a title names input (a profile, a host): never markup, never a control
    _stderr_console().print(f"{indent}[bold]▶[/bold] {title}")
    start = time.monotonic()
    _depth += 1
    try:
        yield
    except BaseException:
        _depth -= 1
        _stderr_console().print(f"{indent}[red]✗[/red] {title} [dim]failed after {time.monotonic() - start:.1f}s[/dim]")
        raise
    _depth -= 1
    _stderr_console().print(f"{indent}[green]✓[/green] {title} [dim]{time.monotonic() - start:.1f}s[/dim]")


def info(message: str, markup: bool = False) -> None:
    """A progress line at the current step depth; inert (no markup, no control character) unless the caller
    asks for markup, having escaped what it interpolates."""
    if not markup:
        message = inert(message)
    _stderr_console().print("  " * _depth + message, markup=markup, highlight=False)


def warning(message: str) -> None:
    """A warning line ("  warning: ..."): the message inert, whatever it quotes (a service's error text)."""
    from rich.text import Text

    _stderr_console().print(Text.assemble(("  warning:", "yellow"), " ", inert(message)), highlight=False)
