"""The one interface every publish target implements, and the flow around it.

A target is a `Publisher`: it finds an image by content key, uploads an artifact, verifies what the target
stored, lists a profile's images for retention, deletes one, and says whether a VM still uses one.
`publish()` drives it: nothing is uploaded when the content key is already there, a failed verify removes
what was uploaded, and `--keep N` never removes the image just published nor one in use.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from ..bake.store import Artifact
from ..core.errors import GoldenError
from ..core.log import console, info, log, step, warning

T = TypeVar("T")

#: Every upload and wait is bounded: a few attempts, then a clear error.
UPLOAD_ATTEMPTS = 3
RETRY_BACKOFF_S = 0.5


class PublishError(GoldenError):
    """A publish failed; nothing half-registered was left on the target."""


class CredentialsError(PublishError):
    """The target refused the credentials."""


class QuotaError(PublishError):
    """The target is out of room for this image."""


class ChecksumMismatch(PublishError):
    """What the target stored is not what was sent."""


class InterruptedUpload(PublishError):
    """The connection broke more often than the retry budget allows."""


@dataclass(frozen=True)
class PublishedImage:
    """An image as a target holds it: its id there and the goldenimage facts attached to it."""

    id: str
    name: str
    profile: str
    content_key: str
    created: str  # sortable (ISO 8601 or a zero-padded number): newest last
    #: The firmware the target boots it with ("bios" or "uefi"): the same artifact may be published once
    #: for each, and a publish reuses only the image of the firmware asked for.
    boot: str = "bios"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ImageFacts:
    """What every target records about an artifact (tags, properties, metadata)."""

    name: str
    profile: str
    roles: tuple[str, ...]
    content_key: str
    sha256: str
    size_bytes: int
    debian: int
    codename: str
    disk_gib: int
    #: What the artifact boots (its manifest's `firmware`): "bios", "uefi", "uefi-secureboot".
    firmware: tuple[str, ...] = ("bios",)

    def boots(self, firmware: str) -> bool:
        """Whether the artifact boots with `firmware`; "uefi" includes an image that also enforces Secure Boot."""
        return firmware in self.firmware or (firmware == "uefi" and "uefi-secureboot" in self.firmware)

    def require(self, firmware: str, target: str) -> None:
        """PublishError, before anything is uploaded, when the target would boot it with a firmware it lacks."""
        if not self.boots(firmware):
            raise PublishError(
                f"{self.name} boots {' and '.join(self.firmware)} only: {target} would boot it with {firmware}",
                hint="rebuild it on a base made by this version of goldenimage (BIOS + UEFI), or publish it for BIOS")

    @classmethod
    def of(cls, artifact: Artifact) -> ImageFacts:
        manifest = artifact.manifest()
        return cls(
            name=artifact.name,
            profile=manifest.profile or artifact.name.split("-debian")[0],
            roles=manifest.roles,
            content_key=artifact.key,
            sha256=artifact.sha256(),
            size_bytes=(manifest.image and manifest.image.size_bytes) or artifact.qcow2.stat().st_size,
            debian=manifest.debian,
            codename=manifest.codename,
            disk_gib=_gib(manifest.disk_size or "4G"),
            firmware=manifest.firmware,
        )


def _gib(size: str) -> int:
    """'4G', '4096M', '10GiB' as whole GiB, rounded up."""
    text = size.strip().upper().removesuffix("IB").removesuffix("B")
    units = {"K": 1 / (1024 * 1024), "M": 1 / 1024, "G": 1, "T": 1024}
    factor = units.get(text[-1:], None)
    number = float(text[:-1] if factor else text) * (factor or 1 / (1024**3))
    return max(1, int(-(-number // 1)))


class Publisher(Protocol):
    """One target. Implementations live in openstack.py, s3.py, ovh.py and proxmox.py."""

    target: str

    def find(self, content_key: str) -> PublishedImage | None:
        """The complete image with this content key on the target, booted with the firmware this publisher
        sets (its `--uefi`), if any."""

    def upload(self, artifact: Artifact, facts: ImageFacts, progress: UploadProgress) -> PublishedImage:
        """Upload and register the artifact; on failure leave nothing registered."""

    def verify(self, image: PublishedImage, facts: ImageFacts) -> None:
        """Raise ChecksumMismatch unless the target holds exactly the artifact's bytes."""

    def list_images(self, profile: str) -> list[PublishedImage]:
        """Every goldenimage image of this profile on the target."""

    def delete(self, image: PublishedImage) -> None:
        """Remove an image from the target."""

    def in_use(self, image: PublishedImage) -> bool:
        """Whether a VM or server still depends on this image (then retention keeps it)."""


@dataclass(frozen=True)
class PublishResult:
    """What a publish did: the image, whether bytes were sent, and what retention removed or kept."""

    image: PublishedImage
    uploaded: bool
    removed: tuple[str, ...] = ()
    kept_in_use: tuple[str, ...] = ()


def publish(publisher: Publisher, artifact: Artifact, keep: int | None = None) -> PublishResult:
    """Publish an artifact once: reuse the image with the same content key, else upload and verify it."""
    facts = ImageFacts.of(artifact)
    with step(f"Publishing {facts.name} to {publisher.target}"):
        existing = publisher.find(facts.content_key)
        if existing is not None:
            info(f"already published as {existing.id} (content key {facts.content_key}, boots {existing.boot}): "
                 "nothing uploaded")
            image, uploaded = existing, False
        else:
            with UploadProgress(f"{facts.name}.qcow2", facts.size_bytes) as progress:
                image = publisher.upload(artifact, facts, progress)
            try:
                publisher.verify(image, facts)
            except ChecksumMismatch:
                publisher.delete(image)
                raise
            info(f"published as {image.id}")
            uploaded = True
        removed: tuple[str, ...] = ()
        kept: tuple[str, ...] = ()
        if keep is not None:
            removed, kept = apply_retention(publisher, facts.profile, keep, current=image)
        _record(artifact, publisher.target, image.id, removed)
    return PublishResult(image, uploaded, removed, kept)


def _record(artifact: Artifact, target: str, image_id: str, removed: tuple[str, ...]) -> None:
    """Keep in the store's channel records which artifact each image on the target came from (prune keeps those
    artifacts), and forget the images retention removed."""
    from ..bake import channels, shared_store

    try:
        channels.record_published(artifact, target, image_id)
        channels.forget_published(artifact.manifest_file.parent, target, removed)
        shared = shared_store.configured()
        if shared:
            shared.push_record(artifact)
    except (OSError, GoldenError) as exc:  # a read-only folder, an unreachable shared store: the publish stands
        warning(f"publish not recorded in the artifact's channel record: {exc}")


def apply_retention(publisher: Publisher, profile: str, keep: int, current: PublishedImage
                    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Remove all but the `keep` newest images of a profile; the current one and images in use stay."""
    images = sorted(publisher.list_images(profile), key=lambda i: (i.created, i.id), reverse=True)
    survivors = [i for i in images if i.id == current.id]
    survivors += [i for i in images if i.id != current.id][: max(0, keep - len(survivors))]
    removed: list[str] = []
    kept: list[str] = []
    for image in images:
        if image in survivors:
            continue
        if publisher.in_use(image):
            info(f"kept {image.id} ({image.name}): still in use")
            kept.append(image.id)
            continue
        publisher.delete(image)
        info(f"removed {image.id} ({image.name})")
        removed.append(image.id)
    return tuple(removed), tuple(kept)


def retry(action: Callable[[], T], *, what: str, transient: tuple[type[BaseException], ...],
          attempts: int = UPLOAD_ATTEMPTS, on_retry: Callable[[], None] | None = None) -> T:
    """Run action, again after a transient failure, at most `attempts` times; then InterruptedUpload."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except transient as exc:
            log.debug("%s: attempt %d/%d failed: %s", what, attempt, attempts, exc)
            if attempt == attempts:
                raise InterruptedUpload(
                    f"{what} was interrupted {attempts} times ({type(exc).__name__})",
                    hint="check the network path to the target and publish again; nothing was left registered",
                ) from exc
            info(f"{what} interrupted ({type(exc).__name__}); retrying ({attempt + 1}/{attempts})")
            if on_retry:
                on_retry()
            time.sleep(RETRY_BACKOFF_S * attempt)
    raise AssertionError("unreachable")


def wait_until(check: Callable[[], T | None], *, what: str, timeout: float, interval: float = 1.0) -> T:
    """Poll check() until it returns a value, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            raise PublishError(f"{what} did not finish within {timeout:.0f}s",
                               hint="the target may still be working: look at its task list, then publish again")
        time.sleep(interval)


class UploadProgress:
    """A rich progress bar for one upload; `reset()` when a retry starts over."""

    def __init__(self, label: str, total: int) -> None:
        self.total = total
        self._progress = Progress(TextColumn("  {task.description}"), BarColumn(), DownloadColumn(),
                                  TransferSpeedColumn(), TimeRemainingColumn(), console=console, transient=True)
        self._task = self._progress.add_task(label, total=total)
        self.sent = 0

    def __enter__(self) -> UploadProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def advance(self, n: int) -> None:
        self.sent += n
        self._progress.advance(self._task, n)

    def reset(self, completed: int = 0) -> None:
        self.sent = completed
        self._progress.reset(self._task, total=self.total, completed=completed)


class HashingReader(io.RawIOBase):
    """A read-only file that reports progress and hashes exactly the bytes the client library sent."""

    def __init__(self, path: Path, progress: UploadProgress | None = None, algorithms: tuple[str, ...] = ("sha256",)
                 ) -> None:
        super().__init__()
        self._file = path.open("rb")
        self.name = str(path)  # client libraries take the upload's filename from here
        self._progress = progress
        self.hashes = {a: hashlib.new(a) for a in algorithms}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        # Libraries seek to measure the size, then back to 0: only a rewind to 0 restarts the hashes.
        position = self._file.seek(offset, whence)
        if position == 0:
            self.hashes = {a: hashlib.new(a) for a in self.hashes}
        return position

    def tell(self) -> int:
        return self._file.tell()

    @property
    def len(self) -> int:
        # requests and requests-toolbelt take the total size from `len` (and subtract tell() themselves) before
        # they look for a fileno, which would let them read around readinto() and so around the hashes.
        return os.fstat(self._file.fileno()).st_size

    def readinto(self, buffer: Any) -> int:
        data = self._file.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        for h in self.hashes.values():
            h.update(data)
        if self._progress is not None and n:
            self._progress.advance(n)
        return n

    def close(self) -> None:
        self._file.close()
        super().close()

    def hexdigest(self, algorithm: str) -> str:
        return self.hashes[algorithm].hexdigest()


@contextmanager
def cleanup_on_failure(undo: Callable[[], None], what: str) -> Iterator[None]:
    """Run undo() if the block fails, so that a failed publish leaves nothing half-registered."""
    try:
        yield
    except BaseException:
        try:
            undo()
            info(f"removed the incomplete {what}")
        except Exception as exc:  # the original error matters more; say what is left behind
            warning(f"could not remove the incomplete {what}: {exc}")
        raise
