"""Output directories golden replaces whole: it owns only what it wrote, known by a marker file inside.

An existing directory is replaced only when it holds the marker (or is empty); anything else (a file, the
user's own directory, the current directory) is refused with one line, before any work is done.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

from .errors import InputError

#: Written into every directory golden renders; its presence is what allows the next render to replace it.
MARKER = ".golden-output"


def out_dir_arg(value: str | None, option: str = "--out") -> Path | None:
    """The --out value as a path (None when not given); an empty value is refused, not taken as '.'."""
    if value is None:
        return None
    if not value.strip() or "\0" in value:
        raise InputError(f"{option}: empty: give a directory to write into", hint=f"{option} DIR")
    return Path(value)


def check_replaceable(out_dir: Path, *, also_owned_if: str | None = None, option: str = "--out") -> None:
    """Refuse (InputError) an out_dir golden may not replace or cannot create; nothing is written."""
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise InputError(f"{out_dir}: exists and is not a directory", hint=f"choose another {option}")
    if out_dir.is_dir():
        try:
            entries = {e.name for e in out_dir.iterdir()}
        except OSError as exc:
            raise InputError(f"{out_dir}: cannot read: {exc.strerror}", hint=f"choose another {option}") from None
        owned = MARKER in entries or (also_owned_if is not None and also_owned_if in entries)
        if entries and not owned:
            raise InputError(
                f"{out_dir}: not empty and not written by golden (no {MARKER}): it would be replaced whole",
                hint=f"choose a new or empty {option} directory (or remove this one yourself)",
            )
    if out_dir.resolve() == Path(out_dir.resolve().anchor):
        raise InputError(f"{out_dir}: is the root directory", hint=f"choose another {option}")
    ancestor = out_dir.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{out_dir}: {ancestor} is not a directory", hint=f"choose another {option}")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"{out_dir}: cannot write in {ancestor}", hint=f"choose another {option}")


def mark(directory: Path, what: str) -> None:
    """Write the marker that lets a later render replace `directory`."""
    (directory / MARKER).write_text(f"written by {what}: golden replaces this directory whole on the next run\n")


def stage_dir(out_dir: Path) -> Path:
    """A new private staging folder beside `out_dir` (renamed into place by replace_dir when complete);
    InputError in one line when the parent cannot be written."""
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as exc:
        raise InputError(f"{out_dir}: cannot write: {exc.strerror}", hint="choose another --out") from None


def replace_dir(stage: Path, out_dir: Path) -> None:
    """Put the staged directory in out_dir's place (renames only; the old one goes once the new one is there)."""
    if not out_dir.exists():
        os.rename(stage, out_dir)
        return
    old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(out_dir, old)
    try:
        os.rename(stage, out_dir)
    except BaseException:
        os.rename(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
