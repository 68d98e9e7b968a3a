"""Release channels of the artifact store: edge -> candidate -> stable, and where each artifact was published.

Each artifact may have a channel record beside it, NAME.channel.json, written atomically (a temporary file
renamed over it): its channel, the history of its promotions, the last `golden verify`, the last run of each
cluster drill that booted it (`make test-ha`, `test-ha-sql`, `test-upgrade`, `test-backup`), and the images
published from it. Every outcome names the content key it was run on. An artifact without a record is on `edge`
(every bake lands there).

- `candidate` needs a passed verify and a passed cluster drill recorded for its content key, and no drill whose
  last run on that key failed;
- `stable` needs `candidate` for a soak period (SOAK_DAYS), unless the caller overrides it explicitly;
- prune keeps N artifacts per profile, release, kind and channel; it never removes one a published image still
  uses, and running it again removes nothing more.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import GoldenError, InputError
from ..core.fs import write_atomic
from ..core.paths import images_dir
from . import store
from .manifest import StoredManifest

CHANNELS = ("edge", "candidate", "stable")
#: Days an artifact stays on candidate before it may go to stable (the issue's "proven over months" in small).
SOAK_DAYS = 7.0
RECORD_SUFFIX = ".channel.json"


def _now() -> float:
    return time.time()


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def _epoch(text: str) -> float:
    import calendar

    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


def record_path(artifact: store.Artifact) -> Path:
    return artifact.manifest_file.with_name(artifact.name + RECORD_SUFFIX)


def read_record(artifact: store.Artifact) -> dict[str, Any]:
    """The artifact's channel record; a fresh edge record when it has none (or an unreadable one)."""
    try:
        data = json.loads(record_path(artifact).read_text())
        if isinstance(data, dict) and data.get("channel") in CHANNELS:
            return data
    except (OSError, ValueError):
        pass
    return new_record(artifact.key)


def new_record(key: str) -> dict[str, Any]:
    """The record of an artifact just baked: on edge, never verified, drilled nor published."""
    return {"format": 1, "content_key": key, "channel": "edge", "history": [], "verify": None, "drills": {},
            "published": []}


def write_record(artifact: store.Artifact, record: dict[str, Any]) -> None:
    write_atomic(record_path(artifact), json.dumps(record, indent=2, sort_keys=True) + "\n")


def channel_of(artifact: store.Artifact) -> str:
    return str(read_record(artifact)["channel"])


def record_verify(artifact: store.Artifact, passed: bool, detail: str = "", when: float | None = None) -> None:
    """Keep the outcome of a `golden verify` of the artifact (promotion to candidate needs a passed one)."""
    record = read_record(artifact)
    record["verify"] = {"passed": passed, "at": _iso(when if when is not None else _now()), "detail": detail,
                        "content_key": artifact.key}
    write_record(artifact, record)


def record_drill(artifact: store.Artifact, drill: str, passed: bool, detail: str = "",
                 when: float | None = None) -> None:
    """Keep the outcome of a cluster drill that booted the artifact (promotion to candidate needs a pass; the
    last run of each drill counts)."""
    record = read_record(artifact)
    record["drills"] = {**(record.get("drills") or {}), drill: {
        "passed": passed, "at": _iso(when if when is not None else _now()), "detail": detail,
        "content_key": artifact.key}}
    write_record(artifact, record)


def candidate_problems(record: dict[str, Any]) -> list[str]:
    """What keeps an artifact from candidate: a passed verify and a passed drill on record for its key, and no
    drill whose last run on it failed; [] when nothing does."""
    key = record.get("content_key")
    verify = record.get("verify") or {}
    drills = {name: run for name, run in (record.get("drills") or {}).items() if run.get("content_key") == key}
    problems = []
    if not (verify.get("passed") and verify.get("content_key") == key):
        problems.append("no passed golden verify" if not verify.get("passed") or verify.get("content_key") in
                        (None, key) else f"a passed golden verify of another key ({verify.get('content_key')})")
    failed = sorted(name for name, run in drills.items() if not run.get("passed"))
    if failed:
        problems.append(f"the last run of drill {', '.join(failed)} failed")
    elif not drills:
        problems.append("no passed cluster drill")
    return problems


def record_published(artifact: store.Artifact, target: str, image_id: str, when: float | None = None) -> None:
    """Keep that an image on `target` was published from the artifact (prune then keeps the artifact)."""
    record = read_record(artifact)
    published = [p for p in record.get("published", []) if (p.get("target"), p.get("id")) != (target, image_id)]
    published.append({"target": target, "id": image_id, "at": _iso(when if when is not None else _now())})
    record["published"] = published
    write_record(artifact, record)


def forget_published(directory: Path, target: str, image_ids: Iterable[str]) -> None:
    """The images removed from `target` (publish --keep) no longer hold their artifacts."""
    gone = set(image_ids)
    if not gone:
        return
    for artifact in all_artifacts(directory):
        record = read_record(artifact)
        kept = [p for p in record.get("published", []) if not (p.get("target") == target and p.get("id") in gone)]
        if len(kept) != len(record.get("published", [])):
            record["published"] = kept
            write_record(artifact, record)


def promote(artifact: store.Artifact, to: str, *, soak_days: float = SOAK_DAYS, skip_soak: bool = False,
            when: float | None = None) -> dict[str, Any]:
    """Move the artifact to `to` (candidate or stable) once its conditions hold; InputError naming the missing
    one otherwise. Promoting to the channel it is on already changes nothing."""
    before = read_record(artifact)
    record = advance(before, artifact.name, to, soak_days=soak_days, skip_soak=skip_soak, when=when)
    if record is not before:
        write_record(artifact, record)
    return record


def advance(record: dict[str, Any], name: str, to: str, *, soak_days: float = SOAK_DAYS, skip_soak: bool = False,
            when: float | None = None) -> dict[str, Any]:
    """The channel record after promoting artifact `name` to `to` (the same record when it is there already);
    InputError naming the condition that does not hold."""
    if to not in CHANNELS[1:]:
        raise InputError(f"--to {to}: an artifact is promoted to candidate or stable", hint="edge is where bakes land")
    now = when if when is not None else _now()
    current = record["channel"]
    if current == to:
        return record
    if CHANNELS.index(current) > CHANNELS.index(to):
        raise InputError(f"{name} is on {current} already: promotion does not move it back to {to}")
    if to == "candidate":
        problems = candidate_problems(record)
        if problems:
            raise InputError(f"{name} cannot become a candidate: {' and '.join(problems)} on record for its content "
                             f"key {record.get('content_key')}",
                             hint=f"run golden verify {name}, and a cluster drill that boots it (make test-ha, "
                                  "test-ha-sql, test-upgrade or test-backup) to a pass")
    else:
        if current != "candidate":
            raise InputError(f"{name} is on {current}: only a candidate can become stable",
                             hint=f"golden images promote {name} --to candidate, then let it soak")
        soaked = (now - _candidate_since(record)) / 86400
        if soaked < soak_days and not skip_soak:
            raise InputError(f"{name} has been a candidate for {soaked:.1f} days, fewer than the soak "
                             f"period of {soak_days:g}",
                             hint="wait, or pass --skip-soak to promote it anyway (recorded in its history)")
    entry: dict[str, Any] = {"channel": to, "at": _iso(now)}
    if to == "stable" and skip_soak:
        entry["soak_skipped"] = True
    return {**record, "channel": to, "history": [*record.get("history", []), entry]}


def _candidate_since(record: dict[str, Any]) -> float:
    for entry in reversed(record.get("history", [])):
        if entry.get("channel") == "candidate":
            return _epoch(entry["at"])
    raise GoldenError("the channel record says candidate but has no candidate entry in its history")


def all_artifacts(directory: Path | None = None) -> list[store.Artifact]:
    """Every complete artifact in the store, by name."""
    directory = directory or images_dir()
    found = []
    for manifest_file in sorted(directory.glob("*.manifest.json")):
        artifact = store.from_path(manifest_file)
        if artifact is not None:
            found.append(artifact)
    return found


@dataclass(frozen=True)
class Entry:
    """One artifact as `golden images list` shows it (`artifact` is None for one only in the shared store)."""

    name: str
    key: str
    channel: str
    profile: str
    debian: int
    kind: str
    built: float
    published: tuple[str, ...]
    artifact: store.Artifact | None = None

    @property
    def group(self) -> tuple[str, int, str, str]:
        return self.profile, self.debian, self.kind, self.channel


def entry(name: str, manifest: StoredManifest, record: dict[str, Any], fallback_built: float,
          artifact: store.Artifact | None = None) -> Entry:
    """An Entry from an artifact's manifest and channel record."""
    try:
        built = _epoch(manifest.finished) if manifest.finished else fallback_built
    except ValueError:
        built = fallback_built
    return Entry(name=name, key=manifest.content_key, channel=str(record.get("channel", "edge")),
                 profile=manifest.profile or name.split("-debian")[0], debian=manifest.debian, kind=manifest.kind,
                 built=built, published=tuple(f"{p.get('target')}:{p.get('id')}" for p in record.get("published", [])),
                 artifact=artifact)


def entries(directory: Path | None = None) -> list[Entry]:
    """Every artifact of the local store with its channel, newest first."""
    found = [entry(a.name, a.manifest(), read_record(a), a.manifest_file.stat().st_mtime, a)
             for a in all_artifacts(directory)]
    return newest_first(found)


def newest_first(found: list[Entry]) -> list[Entry]:
    return sorted(found, key=lambda e: (e.built, e.name), reverse=True)


def find_artifact(target: str, directory: Path | None = None) -> store.Artifact:
    """An artifact by path, name or content key; InputError when none (or several) match."""
    directory = directory or images_dir()
    if "/" in target or target.endswith((".qcow2", ".json")):
        artifact = store.from_path(Path(target))
        if artifact is None:
            raise InputError(f"{target}: not a complete goldenimage artifact")
        return artifact
    matches = [a for a in all_artifacts(directory) if target in (a.name, a.key)]
    if len(matches) != 1:
        what = "no artifact" if not matches else f"{len(matches)} artifacts"
        raise InputError(f"{what} named or keyed {target} in {directory}", hint="golden images list shows them")
    return matches[0]


def prune_plan(keep: int, directory: Path | None = None, found: list[Entry] | None = None
               ) -> tuple[list[Entry], list[Entry]]:
    """(to remove, kept because published) for keeping the `keep` newest per profile, release, kind and channel
    of the local store's artifacts, or of `found`."""
    if keep < 1:
        raise InputError("--keep must be 1 or more")
    seen: dict[tuple[str, int, str, str], int] = {}
    remove: list[Entry] = []
    held: list[Entry] = []
    for item in newest_first(entries(directory) if found is None else found):
        seen[item.group] = seen.get(item.group, 0) + 1
        if seen[item.group] <= keep:
            continue
        (held if item.published else remove).append(item)
    return remove, held


def remove_artifact(artifact: store.Artifact) -> None:
    """Remove an artifact, its manifest first: from then on it is incomplete and nothing uses it."""
    artifact.manifest_file.unlink(missing_ok=True)
    for path in (artifact.qcow2, artifact.sha256_file, record_path(artifact)):
        path.unlink(missing_ok=True)


def prune(keep: int, directory: Path | None = None) -> tuple[list[Entry], list[Entry]]:
    """Remove what prune_plan says; returns (removed, kept because published)."""
    remove, held = prune_plan(keep, directory)
    for item in remove:
        if item.artifact is not None:
            remove_artifact(item.artifact)
    return remove, held


def age(seconds: float) -> str:
    """A short age: 45m, 5h, 3d."""
    if seconds < 3600:
        return f"{max(0, int(seconds // 60))}m"
    if seconds < 86400 * 2:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 86400)}d"
