"""File helpers every layer uses: atomic writes, file digests, the canonical JSON that content keys hash, and
work directories that carry their process id so that the next run can remove those of a killed one."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def canonical_json(data: Any) -> str:
    """Stable JSON used for hashing (content keys)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write `path` whole or not at all: a temporary file beside it (0644), renamed over it when complete."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's content, hex, read in 1 MiB blocks (images are gigabytes)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def work_dir(directory: Path, prefix: str, tag: str = "") -> Path:
    """A new work directory in `directory`, named PREFIX-PID-[TAG-]...: `orphans` knows it by its process."""
    directory.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-{os.getpid()}-{tag + '-' if tag else ''}", dir=directory))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        pass
    return True


def orphans(directory: Path, prefix: str) -> list[Path]:
    """The work directories `work_dir(directory, prefix)` made for processes that are gone (killed outright:
    SIGKILL, a power loss, no `finally` ran). One named before the process id was in the name is an orphan too;
    one whose process lives belongs to a run still going and is never listed."""
    found = []
    for work in sorted(directory.glob(f"{prefix}-*")):
        pid = work.name[len(prefix) + 1:].split("-")[0]
        if work.is_dir() and not work.is_symlink() and (not pid.isdigit() or not pid_alive(int(pid))):
            found.append(work)
    return found


def private_dir(prefix: str, directory: Path | None = None) -> Path:
    """A new private directory (0700, in $TMPDIR unless `directory` is given) named for this process, once the
    ones that killed processes left with the same prefix are removed; the caller removes it."""
    directory = directory or Path(tempfile.gettempdir())
    for orphan in orphans(directory, prefix):
        shutil.rmtree(orphan, ignore_errors=True)  # another user's is not ours to remove: left as it is
    return work_dir(directory, prefix)


@contextmanager
def scratch(prefix: str, directory: Path | None = None) -> Iterator[Path]:
    """A private temporary directory (0700, in $TMPDIR unless `directory` is given), removed when the block ends,
    and by the next run with the same prefix when this process is killed outright: what such a directory holds
    (a throwaway SSH key, a cluster's host data with its passwords, a TLS key) does not stay behind."""
    work = private_dir(prefix, directory)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
