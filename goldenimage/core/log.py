"""Logging and nested, timed steps: `with step("Baking web on Debian 12"):`."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

log = logging.getLogger("goldenimage")
console = Console(stderr=True, highlight=False, soft_wrap=True)
_depth = 0


def setup_logging(debug: bool = False) -> None:
    """Send goldenimage's log to stderr; commands and details show with --debug."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("  %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if debug else logging.WARNING)
    log.propagate = False


@contextmanager
def step(title: str) -> Iterator[None]:
    """Announce a step, nest inner steps under it, and print its elapsed time (or its failure)."""
    global _depth
    indent = "  " * _depth
    console.print(f"{indent}[bold]▶[/bold] {title}")
    start = time.monotonic()
    _depth += 1
    try:
        yield
    except BaseException:
        _depth -= 1
        console.print(f"{indent}[red]✗[/red] {title} [dim]failed after {time.monotonic() - start:.1f}s[/dim]")
        raise
    _depth -= 1
    console.print(f"{indent}[green]✓[/green] {title} [dim]{time.monotonic() - start:.1f}s[/dim]")


def info(message: str) -> None:
    """A progress line at the current step depth."""
    console.print("  " * _depth + message)
