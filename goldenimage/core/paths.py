"""Where goldenimage finds its shipped data (profiles, the first-boot agent) and keeps its artifacts and caches.

Shipped data lives beside the sources in a checkout (profiles/, firstboot/) and inside the package in a wheel
(goldenimage/_data/, copied there by setup.py's build step): `shipped()` finds either. User profiles and
overlays come first from $GOLDEN_PROFILES_DIR (`golden --profiles-dir`), else ./profiles when present.
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import SOURCE_ROOT

#: Where a built wheel carries profiles/ and firstboot/ (absent in a checkout).
PACKAGE_DATA = Path(__file__).resolve().parent.parent / "_data"
PROFILES_ENV = "GOLDEN_PROFILES_DIR"


def shipped(name: str) -> Path:
    """A top-level data folder the product ships (profiles, firstboot): the wheel's copy, else the checkout's."""
    packaged = PACKAGE_DATA / name
    return packaged if packaged.is_dir() else SOURCE_ROOT / name


def from_checkout() -> bool:
    """True when goldenimage runs from its source tree (editable install, tests), not from a wheel."""
    return not PACKAGE_DATA.is_dir() and (SOURCE_ROOT / "pyproject.toml").is_file()


def profile_dirs() -> tuple[Path, ...]:
    """Folders searched for profiles, role fragments and the release matrix, first match wins: the user's
    ($GOLDEN_PROFILES_DIR, else ./profiles when it exists), then the shipped ones."""
    dirs: list[Path] = []
    env = os.environ.get(PROFILES_ENV)
    if env:
        dirs.append(Path(env))
    elif Path("profiles").is_dir():
        dirs.append(Path("profiles").resolve())
    packaged = shipped("profiles")
    if all(d.resolve() != packaged.resolve() for d in dirs):
        dirs.append(packaged)
    return tuple(dirs)


def find_profile_file(relative: str) -> Path | None:
    """The first file at `relative` (e.g. web.yaml, roles/lb.yaml) in the profile folders; None when absent."""
    for directory in profile_dirs():
        if (directory / relative).is_file():
            return directory / relative
    return None


def images_dir() -> Path:
    """Finished artifacts: $GOLDEN_IMAGES_DIR, else images/ in the source tree (./images for an installed wheel)."""
    env = os.environ.get("GOLDEN_IMAGES_DIR")
    if env:
        return Path(env)
    return SOURCE_ROOT / "images" if from_checkout() else Path("images").resolve()


def cache_dir() -> Path:
    """Reusable, regenerable data (base images): $GOLDEN_CACHE_DIR or ~/.cache/goldenimage.

    Kept outside the checkout so that CI's fresh clones on the same machine reuse the base image.
    """
    env = os.environ.get("GOLDEN_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "goldenimage"
