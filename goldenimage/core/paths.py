"""Where goldenimage keeps its artifacts and caches (overridable by environment)."""

from __future__ import annotations

import os
from pathlib import Path

from .. import SOURCE_ROOT


def images_dir() -> Path:
    """Finished artifacts: $GOLDEN_IMAGES_DIR, or images/ in the source tree."""
    return Path(os.environ.get("GOLDEN_IMAGES_DIR") or SOURCE_ROOT / "images")


def cache_dir() -> Path:
    """Reusable, regenerable data (base images): $GOLDEN_CACHE_DIR or ~/.cache/goldenimage.

    Kept outside the checkout so that CI's fresh clones on the same machine reuse the base image.
    """
    env = os.environ.get("GOLDEN_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "goldenimage"
