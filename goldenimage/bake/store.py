"""The artifact store: content keys, artifact names, manifests and checksums, the atomic commit of an artifact.

An artifact is three files in images/: NAME.qcow2, NAME.qcow2.sha256 and NAME.manifest.json, where NAME
is <profile>-debian<N>-<date>-<key>. The manifest is renamed into place last: an artifact is complete
when its manifest exists and names a qcow2 whose checksum file agrees.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..core.errors import InputError
from ..core.fs import canonical_json, orphans, sha256_file, work_dir, write_atomic
from ..core.paths import images_dir, shipped
from ..model.profiles import ResolvedProfile
from ..model.releases import matrix
from .manifest import StoredManifest

KEY_LENGTH = 16
#: The in-image agent's sources: a change there is a change of every image.
FIRSTBOOT_DIR = shipped("firstboot")


@dataclass(frozen=True)
class Artifact:
    """A complete artifact in the store."""

    qcow2: Path
    sha256_file: Path
    manifest_file: Path
    key: str

    @property
    def name(self) -> str:
        return self.qcow2.name.removesuffix(".qcow2")

    def manifest(self) -> StoredManifest:
        return StoredManifest.read(self.manifest_file)

    def sha256(self) -> str:
        return self.sha256_file.read_text().split()[0]


def tree_digest(root: Path) -> str:
    """A digest of every file under root (names and contents), ignoring caches."""
    h = hashlib.sha256()
    if root.is_dir():
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                h.update(str(path.relative_to(root)).encode() + b"\0")
                h.update(path.read_bytes())
    return h.hexdigest()


def content_key(profile: ResolvedProfile, *, base_sha256: str, template: dict[str, Any], user_data: str,
                scripts: dict[str, str]) -> str:
    """The hash that decides whether a bake is needed: resolved profile (overlays included), release,
    base image checksum, rendered template and user-data, bake scripts and the first-boot code."""
    data = {
        "profile": profile.to_dict(),
        "release": {"number": profile.release.number, "vars": dict(profile.release.vars)},
        "base_sha256": base_sha256,
        "template": template,
        "user_data": user_data,
        "scripts": scripts,
        "firstboot": tree_digest(FIRSTBOOT_DIR),
        "goldenimage": __version__,
    }
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()[:KEY_LENGTH]


def artifact_name(profile: ResolvedProfile, key: str, when: float | None = None, kind: str = "cloud") -> str:
    """web-debian12-DATE-KEY; an image for metal says so: web-debian12-metal-DATE-KEY."""
    date = time.strftime("%Y%m%d", time.gmtime(when))
    middle = "" if kind == "cloud" else f"-{kind}"
    return f"{profile.name}-debian{profile.release.number}{middle}-{date}-{key}"


def artifact_kind(artifact: Artifact) -> str:
    """What the artifact is for, from its manifest: cloud (older manifests) or metal."""
    try:
        return artifact.manifest().kind
    except (OSError, ValueError):
        return "cloud"


def _complete(manifest_file: Path) -> Artifact | None:
    """The artifact a manifest describes, if its qcow2 and checksum file are there and agree."""
    try:
        manifest = StoredManifest.read(manifest_file)
        if manifest.image is None or "content_key" not in manifest.data:
            return None
        qcow2 = manifest_file.with_name(manifest.image.file)
        sha_file = qcow2.with_name(qcow2.name + ".sha256")
        if qcow2.is_file() and sha_file.read_text().split()[0] == manifest.image.sha256:
            return Artifact(qcow2, sha_file, manifest_file, manifest.content_key)
    except (OSError, ValueError, IndexError):
        return None
    return None


def find(key: str, directory: Path | None = None) -> Artifact | None:
    """A complete artifact with this content key, if the store has one."""
    directory = directory or images_dir()
    for manifest_file in sorted(directory.glob(f"*-{key}.manifest.json"), reverse=True):
        artifact = _complete(manifest_file)
        if artifact and artifact.key == key:
            return artifact
    return None


def latest(profile: str, debian: int, directory: Path | None = None, kind: str = "cloud") -> Artifact | None:
    """The newest complete artifact of a profile and release, of that kind (cloud or metal)."""
    directory = directory or images_dir()
    found = []
    for manifest_file in directory.glob(f"{profile}-debian{debian}-*.manifest.json"):
        artifact = _complete(manifest_file)
        if artifact and artifact_kind(artifact) == kind:
            found.append((manifest_file.stat().st_mtime, artifact))
    return max(found, key=lambda t: t[0])[1] if found else None


def from_path(path: Path) -> Artifact | None:
    """The complete artifact a qcow2 or manifest path belongs to."""
    name = path.name.removesuffix(".qcow2").removesuffix(".manifest.json")
    return _complete(path.with_name(name + ".manifest.json"))


def resolve(target: str, debian: int | str | None = None, directory: Path | None = None,
            kind: str = "cloud") -> Artifact:
    """What verify, audit and publish act on: an artifact by path (its qcow2 or manifest), or the newest of a
    profile of `kind` for a release (the matrix's default when none is given); InputError when there is none."""
    path = Path(target)
    if target.endswith((".qcow2", ".json")) or "/" in target or path.exists():
        artifact = from_path(path)
        if artifact is None:
            raise InputError(f"{target}: not a complete goldenimage artifact (qcow2 + .sha256 + manifest.json)",
                             hint="golden build PROFILE writes one into images/")
        return artifact
    release = matrix().get(debian)
    artifact = latest(target, release.number, directory, kind)
    if artifact is None:
        what = "" if kind == "cloud" else f" for {kind}"
        raise InputError(f"no artifact{what} of profile {target} for Debian {release.number} in images/",
                         hint=f"bake it first: make image PROFILE={target} DEBIAN={release.number}"
                              + ("" if kind == "cloud" else f" ARGS='--kind {kind}'"))
    return artifact


def sweep_orphans(directory: Path) -> list[Path]:
    """Remove the work directories of bakes that were killed outright (SIGKILL, a power loss: no `finally` ran).
    A bake's work directory carries its process id (.partial-PID-...); one whose process is gone is an orphan
    (an 8 GB raw disk, a root tree), one whose process lives belongs to a bake still running."""
    removed = orphans(directory, ".partial")
    for work in removed:
        shutil.rmtree(work, ignore_errors=True)
    return removed


@contextmanager
def staging(directory: Path | None = None, prefix: str = "build") -> Iterator[Path]:
    """A hidden work directory inside images/ (same filesystem, so the commit is a rename);
    removed whatever happens, and by the next bake if this process is killed outright."""
    directory = directory or images_dir()
    directory.mkdir(parents=True, exist_ok=True)
    sweep_orphans(directory)
    work = work_dir(directory, ".partial", prefix)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def commit(qcow2: Path, manifest: dict[str, Any], name: str, directory: Path | None = None) -> Artifact:
    """Move a finished qcow2 into the store with its .sha256 and manifest; the manifest goes last.

    If anything fails midway, what was already moved is removed again: no half artifact stays.
    """
    directory = directory or images_dir()
    final = directory / f"{name}.qcow2"
    sha_file = directory / f"{name}.qcow2.sha256"
    manifest_file = directory / f"{name}.manifest.json"
    digest = sha256_file(qcow2)
    manifest = {**manifest, "image": {**manifest.get("image", {}), "file": final.name, "sha256": digest,
                                      "size_bytes": qcow2.stat().st_size}}
    moved: list[Path] = []
    try:
        os.replace(qcow2, final)
        moved.append(final)
        write_atomic(sha_file, f"{digest}  {final.name}\n")
        moved.append(sha_file)
        write_atomic(manifest_file, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    except BaseException:
        for path in moved:
            path.unlink(missing_ok=True)
        raise
    return Artifact(final, sha_file, manifest_file, manifest["content_key"])
