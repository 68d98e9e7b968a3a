"""A cluster drill's outcome, recorded against the content key of every artifact it booted: `golden images promote
KEY --to candidate` needs a passed one (bake/channels.py). The last run of each drill counts; a drill that fails,
for whatever reason, records a failure."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from goldenimage.bake import shared_store

#: the qcow2 files the drill running now booted (tests/e2e/ha_scenario.py's image() adds to it)
BOOTED: list[Path] = []


@contextmanager
def recorded(drill: str, booted: list[Path] = BOOTED) -> Iterator[list[Path]]:
    """Record `drill` passed for every image in `booted` when the block ends without an error, failed otherwise
    (with the error's first line)."""
    booted.clear()
    try:
        yield booted
    except Exception as exc:
        shared_store.record_drill_run(booted, drill, False, (str(exc).splitlines() or [type(exc).__name__])[0][:300])
        raise
    names = shared_store.record_drill_run(booted, drill, True)
    print(f"drill {drill} passed: recorded for {', '.join(names) or 'no artifact'}")
