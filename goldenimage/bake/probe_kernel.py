"""The Linux kernel the accelerator probe boots: the one the images carry, when a package layer has it.

Looked for, first found wins: $GOLDEN_PROBE_KERNEL; a kernel taken earlier from a package layer
(`CACHE/probe-kernel/`); the newest package layer in the cache (its `boot/vmlinuz-*`, extracted once); the
host's own `/boot/vmlinuz-*`. None when there is none yet: on a fresh machine the first bake makes a layer.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from ..core.fs import scratch
from ..core.log import log
from ..core.paths import cache_dir
from ..core.run import run

KERNEL_ENV = "GOLDEN_PROBE_KERNEL"
LAYER_SUFFIX = ".tree.tar.zst"


def kernel_dir() -> Path:
    return cache_dir() / "probe-kernel"


def find_probe_kernel() -> Path | None:
    """A readable Linux kernel image to boot, or None."""
    forced = os.environ.get(KERNEL_ENV)
    if forced:
        path = Path(forced)
        return path if path.is_file() else None
    kept = _newest(kernel_dir().glob("vmlinuz-*"))
    if kept is not None:
        return kept
    layers = sorted((cache_dir() / "base").glob(f"*{LAYER_SUFFIX}"), key=lambda p: p.stat().st_mtime, reverse=True)
    for layer in layers:
        extracted = kernel_from_layer(layer)
        if extracted is not None:
            return extracted
    return _newest(p for p in Path("/boot").glob("vmlinuz-*") if os.access(p, os.R_OK))


def kernel_from_layer(layer: Path) -> Path | None:
    """Copy the kernel out of a package layer tarball into the probe's folder; None if it has none."""
    dest_dir = kernel_dir()
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        with scratch("golden-probe-kernel", dest_dir) as tmp:
            proc = run(["tar", "--zstd", "-xf", layer, "-C", tmp, "--wildcards", "--no-anchored",
                        "boot/vmlinuz-*"], check=False, timeout=300)
            found = _newest(Path(tmp).glob("**/boot/vmlinuz-*"))
            if proc.returncode != 0 or found is None:
                log.debug("probe kernel: none in %s", layer.name)
                return None
            final = dest_dir / found.name
            shutil.move(str(found), final)  # same file system: a rename, whole or not at all
            return final
    except OSError as exc:
        log.debug("probe kernel: cannot take it from %s: %s", layer.name, exc)
        return None


def _newest(paths: Iterable[Path]) -> Path | None:
    files = [p for p in paths if p.is_file()]
    return max(files, key=lambda p: p.name) if files else None
