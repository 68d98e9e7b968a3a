"""`golden build PROFILE --channel stable`: rebuild the stable artifact taking only fixes (bake/stable_pins.py).

Nothing new in the release's security and -updates suites: the stable artifact itself is the answer (same content
key, no rebuild). Otherwise the bake runs with every package held at the stable manifest's version except the
fixes, and its manifest diff against the stable artifact must be exactly those; a rebuild that differs otherwise
is removed and the error names the packages.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import InputError
from ..core.log import info
from ..model.profiles import resolve
from . import channels, stable_pins, store
from .pipeline import bake


def stable_artifact(profile: str, debian: int, kind: str, directory: Path | None = None) -> store.Artifact:
    """The newest stable artifact of a profile, release and kind; InputError when there is none."""
    for entry in channels.entries(directory):  # newest first
        if entry.group == (profile, debian, kind, "stable") and entry.artifact is not None:
            return entry.artifact
    raise InputError(f"no stable artifact of {profile} for Debian {debian} ({kind}) in the store",
                     hint="promote one first: golden images promote ARTIFACT --to stable")


def build_stable(name: str, debian: int | str | None = None, overlays: tuple[Path, ...] = (), *,
                 mirror: str | None = None, kind: str = "cloud") -> store.Artifact:
    profile = resolve(name, debian, overlays)
    stable = stable_artifact(profile.name, profile.release.number, kind)
    pinned = dict(stable.manifest().packages)
    if not pinned:
        raise InputError(f"{stable.manifest_file}: packages: the stable artifact's manifest lists no package")
    indices = stable_pins.release_indices(profile.release, mirror)
    plan = stable_pins.plan(pinned, indices)
    for package, (old, newer) in plan.held.items():
        info(f"{package} stays at {old} ({newer} is in the main suite only)")
    if plan.nothing_new:
        info(f"nothing new in {profile.release.security_suite} or -updates: the stable artifact stays "
             f"({stable.name}, content key {stable.key})")
        return stable
    for package, (old, new, suite) in plan.moved.items():
        info(f"{package} {old} -> {new} ({suite})")
    with stable_pins.pinned(plan.pins):
        artifact = bake(name, debian, overlays, mirror=mirror, kind=kind)
    rebuilt = dict(artifact.manifest().packages)
    try:
        changes = stable_pins.check_rebuild(pinned, rebuilt, plan)
    except stable_pins.StableChannelError:
        channels.remove_artifact(artifact)
        raise
    record = channels.read_record(artifact)
    record["rebuilt_from"] = {"artifact": stable.name, "content_key": stable.key,
                              "fixes": {k: list(v) for k, v in changes.items()}}
    channels.write_record(artifact, record)
    return artifact
