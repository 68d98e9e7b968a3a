"""A store shared by a team's builders in S3-compatible object storage: GOLDEN_STORE=s3://bucket/prefix.

Layout under the prefix, one folder per content key:
    artifacts/KEY/manifest.json   the commit point: it names the qcow2 object and its sha256
    artifacts/KEY/NAME.TOKEN.qcow2  the bytes of one builder's upload (TOKEN: that upload's own)
    artifacts/KEY/channel.json    the channel record (bake/channels.py)
    locks/KEY.json                a lease, only on servers that ignore conditional writes

A build first looks its content key up here and downloads the artifact (its sha256 checked) instead of baking.
A new artifact is uploaded, then its manifest is written with `If-None-Match: *`: when two builders bake the same
key at once, one manifest wins; the other builder removes its own upload and takes the winner's artifact, so both
end with the same bytes. A server that ignores the condition (a probe finds out) gets the same outcome through a
lease: a lock object written, read back after a pause, and only its owner commits.
The endpoint: $GOLDEN_STORE_ENDPOINT, else boto3's own (AWS_ENDPOINT_URL...); credentials: boto3's chain.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..core.errors import GoldenError, InputError
from ..core.log import info
from ..core.paths import images_dir
from . import channels, store
from .manifest import StoredManifest

STORE_ENV = "GOLDEN_STORE"
ENDPOINT_ENV = "GOLDEN_STORE_ENDPOINT"
#: A lease on a content key (fallback locking): long enough for an upload, short enough to outlive a dead builder.
LEASE_S = 15 * 60
#: How long a lease writer waits before reading its lease back (another writer's put lands within it).
SETTLE_S = 1.0
#: How long a builder waits for another's lease on the same key, polled every POLL_S.
WAIT_S = 30 * 60
POLL_S = 2.0
MAX_LISTED = 10_000
MISSING = ("404", "NoSuchKey", "NotFound")
CONFLICT = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


class SharedStoreError(GoldenError):
    """The shared store refused or lost something."""


@dataclass(frozen=True)
class Location:
    bucket: str
    prefix: str  # "" or ends with "/"

    @classmethod
    def parse(cls, url: str) -> Location:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise InputError(f"{STORE_ENV}={url}: not s3://BUCKET[/PREFIX]", hint="e.g. s3://images/goldenimage")
        prefix = parts.path.strip("/")
        return cls(parts.netloc, prefix + "/" if prefix else "")


def configured() -> SharedStore | None:
    """The shared store $GOLDEN_STORE names, if it is set."""
    url = os.environ.get(STORE_ENV, "").strip()
    return SharedStore(Location.parse(url)) if url else None


def look_up(key: str) -> store.Artifact | None:
    """The artifact of this content key from the configured shared store, downloaded; None without one."""
    shared = configured()
    return shared.fetch(key) if shared else None


def share_new(artifact: store.Artifact) -> store.Artifact:
    """A new artifact uploaded to the configured shared store (or the one another builder committed first)."""
    shared = configured()
    return shared.share(artifact) if shared else artifact


def _client(endpoint: str | None) -> Any:
    import boto3
    from botocore.config import Config

    options: dict[str, Any] = {"signature_version": "s3v4", "retries": {"max_attempts": 3, "mode": "standard"},
                               "connect_timeout": 10, "read_timeout": 120,
                               "s3": {"addressing_style": "path" if endpoint else "virtual"}}
    if "request_checksum_calculation" in Config.OPTION_DEFAULTS:  # see publish/s3.py: no CRC32 on every upload
        options.update(request_checksum_calculation="when_required", response_checksum_validation="when_required")
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint, region_name=session.region_name or "us-east-1",
                          config=Config(**options))


def _code(exc: Any) -> str:
    error = exc.response.get("Error", {})
    return str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or "")


class SharedStore:
    """The artifact store in a bucket."""

    def __init__(self, location: Location, client: Any = None, endpoint: str | None = None) -> None:
        self.location = location
        self.s3 = client or _client(endpoint or os.environ.get(ENDPOINT_ENV) or None)
        self._conditional: bool | None = None
        self.url = f"s3://{location.bucket}/{location.prefix}"

    # --- objects ------------------------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return self.location.prefix + "/".join(parts)

    def _get_json(self, key: str) -> tuple[dict[str, Any], str] | None:
        """An object's JSON and its ETag; None when it is not there."""
        from botocore.exceptions import ClientError

        try:
            answer = self._call(self.s3.get_object, key, raw=True, Bucket=self.location.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in MISSING:
                return None
            raise self._error(exc, key) from exc
        try:
            data = json.loads(answer["Body"].read())
        except ValueError as exc:
            raise SharedStoreError(f"{self.url}: {key} is not JSON", hint="remove it from the bucket") from exc
        return data, str(answer.get("ETag", ""))

    def _put_json(self, key: str, data: dict[str, Any], **conditions: str) -> bool:
        """Write an object whole; False when a condition (IfNoneMatch, IfMatch) does not hold."""
        from botocore.exceptions import ClientError

        body = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
        try:
            self._call(self.s3.put_object, key, raw=True, Bucket=self.location.bucket, Key=key, Body=body,
                       ContentType="application/json", **conditions)
        except ClientError as exc:
            if conditions and _code(exc) in CONFLICT:
                return False
            raise self._error(exc, key) from exc
        return True

    def _delete(self, key: str) -> None:
        self._call(self.s3.delete_object, key, Bucket=self.location.bucket, Key=key)

    def _call(self, method: Any, key: str, raw: bool = False, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return method(**kwargs)
        except NoCredentialsError as exc:
            raise SharedStoreError(f"{STORE_ENV}: no S3 credentials found",
                                   hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile in ~/.aws") from exc
        except ClientError as exc:
            if raw:
                raise
            raise self._error(exc, key) from exc
        except BotoCoreError as exc:
            raise SharedStoreError(f"{self.url}: request for {key} failed: {' '.join(str(exc).split())}",
                                   hint=f"check {STORE_ENV}, {ENDPOINT_ENV} and the network path") from exc

    def _error(self, exc: Any, key: str) -> SharedStoreError:
        message = " ".join(str(exc.response.get("Error", {}).get("Message") or "").split())
        return SharedStoreError(f"S3 {exc.operation_name} on s3://{self.location.bucket}/{key} failed: "
                                f"{_code(exc)}" + (f": {message}" if message else ""),
                                hint=f"check {STORE_ENV}, {ENDPOINT_ENV} and the credentials")

    def conditional_writes(self) -> bool:
        """Whether the server honours If-None-Match: * on PutObject (moto and AWS do; some servers ignore it)."""
        if self._conditional is None:
            probe = self._key("probes", secrets.token_hex(8))
            first = self._put_json(probe, {"probe": 1}, IfNoneMatch="*")
            second = self._put_json(probe, {"probe": 2}, IfNoneMatch="*")
            self._delete(probe)
            self._conditional = first and not second
            if not self._conditional:
                info(f"{self.url}: the server ignores conditional writes; a lease on each key stands in for them")
        return self._conditional

    # --- artifacts ----------------------------------------------------------------------------------

    def manifest(self, key: str) -> StoredManifest | None:
        found = self._get_json(self._key("artifacts", key, "manifest.json"))
        if not found:
            return None
        try:
            return StoredManifest.from_json(found[0])
        except ValueError as exc:
            raise SharedStoreError(f"{self.url}artifacts/{key}/manifest.json: not an artifact manifest ({exc})",
                                   hint="remove that folder from the bucket; the next build uploads it again") from exc

    def fetch(self, key: str, directory: Path | None = None) -> store.Artifact | None:
        """The artifact with this content key, downloaded into the local store (its sha256 checked against the
        manifest) with its channel record; None when the shared store has none."""
        manifest = self.manifest(key)
        if manifest is None:
            return None
        directory = directory or images_dir()
        obj, image = manifest.store_object, manifest.image
        if obj is None or image is None:
            raise SharedStoreError(f"{self.url}artifacts/{key}/manifest.json lacks store.object or image.sha256",
                                   hint="remove that folder from the bucket; the next build uploads it again")
        digest, name = image.sha256, image.file
        started = time.monotonic()
        with store.staging(directory, prefix=f"fetch-{key}") as work:
            part = work / "download.qcow2"
            if self._download(obj, part) != digest:
                raise SharedStoreError(f"s3://{self.location.bucket}/{obj}: sha256 differs from its manifest's",
                                       hint="the object is damaged: remove artifacts/" + key + " from the bucket")
            artifact = store.commit(part, manifest.to_json(), name.removesuffix(".qcow2"), directory)
        record = self._get_json(self._key("artifacts", key, "channel.json"))
        channels.write_record(artifact, record[0] if record else channels.new_record(key))
        seconds = time.monotonic() - started
        info(f"fetched {artifact.name} from {self.url} ({artifact.qcow2.stat().st_size / 2**20:.0f} MiB in "
             f"{seconds:.1f}s, sha256 checked)")
        return artifact

    def _download(self, obj: str, path: Path) -> str:
        """One streamed GET into `path` (no ranged GETs: some servers refuse a range past the end); its sha256."""
        answer = self._call(self.s3.get_object, obj, Bucket=self.location.bucket, Key=obj)
        digest = hashlib.sha256()
        with path.open("wb") as f:
            for block in answer["Body"].iter_chunks(1 << 20):
                digest.update(block)
                f.write(block)
        return digest.hexdigest()

    def share(self, artifact: store.Artifact) -> store.Artifact:
        """Upload a new artifact with its manifest and channel record. When another builder committed the same
        content key first, our upload is removed and the local artifact replaced by theirs (returned)."""
        key = artifact.key
        obj = self._key("artifacts", key, f"{artifact.name}.{secrets.token_hex(4)}.qcow2")
        manifest = artifact.manifest().to_json(store_object=obj)
        shared = self.manifest(key)
        if shared is not None:  # shared already: ours if the bytes are the same, else theirs replaces ours
            same = shared.image is not None and shared.image.sha256 == artifact.sha256()
            return artifact if same else self._adopt(artifact)
        started = time.monotonic()
        self._call(self.s3.upload_file, obj, Filename=str(artifact.qcow2), Bucket=self.location.bucket, Key=obj,
                   ExtraArgs={"Metadata": {"golden-sha256": artifact.sha256(), "golden-content-key": key}})
        won = self._commit(key, manifest)
        if not won:
            self._delete(obj)
            info(f"another builder committed content key {key} first: our upload removed, theirs used")
            return self._adopt(artifact)
        self._put_json(self._key("artifacts", key, "channel.json"), channels.read_record(artifact))
        info(f"shared {artifact.name} in {self.url} ({time.monotonic() - started:.1f}s)")
        return artifact

    def _adopt(self, artifact: store.Artifact) -> store.Artifact:
        """Replace the local artifact with the shared one of its content key."""
        fetched = self.fetch(artifact.key, artifact.manifest_file.parent)
        if fetched is None:
            raise SharedStoreError(f"{self.url}: content key {artifact.key} vanished while it was being fetched",
                                   hint="build again")
        if fetched.name != artifact.name:  # same name: theirs was renamed over ours
            channels.remove_artifact(artifact)
        return fetched

    def _commit(self, key: str, manifest: dict[str, Any]) -> bool:
        """Write the manifest unless one is there: a conditional write, else under the key's lease."""
        target = self._key("artifacts", key, "manifest.json")
        if self.conditional_writes():
            return self._put_json(target, manifest, IfNoneMatch="*")
        with self.lease(key):
            if self.manifest(key) is not None:
                return False
            return self._put_json(target, manifest)

    def lease(self, key: str) -> _Lease:
        return _Lease(self, self._key("locks", f"{key}.json"))

    # --- channels -----------------------------------------------------------------------------------

    def keys(self) -> list[str]:
        """Every content key with a manifest in the shared store."""
        prefix = self._key("artifacts", "")
        found: list[str] = []
        request: dict[str, Any] = {"Bucket": self.location.bucket, "Prefix": prefix}
        while len(found) < MAX_LISTED:
            page = self._call(self.s3.list_objects_v2, prefix, **request)
            found += [o["Key"][len(prefix):].split("/")[0] for o in page.get("Contents", [])
                      if o["Key"].endswith("/manifest.json")]
            if not page.get("IsTruncated") or not page.get("NextContinuationToken"):
                break
            request["ContinuationToken"] = page["NextContinuationToken"]
        return sorted(set(found))

    def record(self, key: str) -> tuple[dict[str, Any], str]:
        found = self._get_json(self._key("artifacts", key, "channel.json"))
        return found if found else (channels.new_record(key), "")

    def put_record(self, key: str, record: dict[str, Any], etag: str = "") -> None:
        """Replace the channel record; with an ETag, only if nobody changed it since it was read (where the
        server honours If-Match)."""
        conditions = {"IfMatch": etag} if etag and self.conditional_writes() else {}
        if not self._put_json(self._key("artifacts", key, "channel.json"), record, **conditions):
            raise SharedStoreError(f"{self.url}: the channel record of {key} changed meanwhile", hint="run it again")

    def entries(self) -> list[channels.Entry]:
        """Every artifact of the shared store with its channel record, newest first."""
        found = []
        for key in self.keys():
            manifest = self.manifest(key)
            if manifest is not None:
                name = (manifest.image.file if manifest.image else key).removesuffix(".qcow2")
                found.append(channels.entry(name, manifest, self.record(key)[0], 0.0))
        return channels.newest_first(found)

    def find_key(self, target: str) -> str:
        """The content key of an artifact named or keyed `target` in the shared store; InputError otherwise."""
        keys = [e.key for e in self.entries() if target in (e.name, e.key)]
        if len(keys) != 1:
            what = "no artifact" if not keys else f"{len(keys)} artifacts"
            raise InputError(f"{what} named or keyed {target} in {self.url}", hint="golden images list shows them")
        return keys[0]

    def promote(self, target: str, to: str, *, soak_days: float, skip_soak: bool,
                directory: Path | None = None) -> tuple[str, str, str]:
        """Promote in the shared record (and the local copy, when this builder has the artifact);
        returns (name, channel before, channel after)."""
        key = self.find_key(target)
        record, etag = self.record(key)
        local = store.find(key, directory)
        if local is not None:  # a verify or drill run on this builder counts too
            record = merge_outcomes(record, channels.read_record(local))
        name = local.name if local else target
        after = channels.advance(record, name, to, soak_days=soak_days, skip_soak=skip_soak)
        if after is not record or local is not None:
            self.put_record(key, after, etag)
            if local is not None:
                channels.write_record(local, after)
        return name, str(record["channel"]), str(after["channel"])

    def remove(self, key: str) -> None:
        """Remove an artifact from the shared store, its manifest first (from then on nobody fetches it)."""
        manifest = self.manifest(key)
        self._delete(self._key("artifacts", key, "manifest.json"))
        if manifest is not None and manifest.store_object:
            self._delete(manifest.store_object)
        self._delete(self._key("artifacts", key, "channel.json"))

    def prune(self, keep: int, dry_run: bool = False) -> tuple[list[channels.Entry], list[channels.Entry]]:
        remove, held = channels.prune_plan(keep, found=self.entries())
        if not dry_run:
            for item in remove:
                self.remove(item.key)
        return remove, held

    def push_record(self, artifact: store.Artifact) -> None:
        """Copy what this builder learnt of the artifact into the shared record: its verify outcome, and the
        images published from it (added to those others published; prune on the bucket keeps them all)."""
        if self.manifest(artifact.key) is None:
            return
        record, etag = self.record(artifact.key)
        local = channels.read_record(artifact)
        if local.get("verify"):
            record["verify"] = local["verify"]
        record["drills"] = {**(record.get("drills") or {}), **(local.get("drills") or {})}
        # a union: an image another builder published stays listed (prune errs on keeping an artifact)
        seen = {(p.get("target"), p.get("id")) for p in local.get("published", [])}
        record["published"] = [p for p in record.get("published", []) if (p.get("target"), p.get("id")) not in seen
                               ] + list(local.get("published", []))
        self.put_record(artifact.key, record, etag)


def merge_outcomes(shared: dict[str, Any], local: dict[str, Any]) -> dict[str, Any]:
    """The shared record with this builder's verify (when the shared one has no pass) and its drills (each
    drill's later run) added."""
    merged = dict(shared)
    if local.get("verify") and not (shared.get("verify") or {}).get("passed"):
        merged["verify"] = local["verify"]
    drills = dict(shared.get("drills") or {})
    for name, run in (local.get("drills") or {}).items():
        if name not in drills or str(run.get("at", "")) >= str(drills[name].get("at", "")):
            drills[name] = run
    merged["drills"] = drills
    return merged


class _Lease:
    """A lock object with an expiry, for servers without conditional writes: written, read back after
    SETTLE_S (the last of two writers wins), held until released or expired; waiting is bounded by WAIT_S."""

    def __init__(self, shared: SharedStore, key: str) -> None:
        self.shared = shared
        self.key = key
        self.token = secrets.token_hex(8)

    def __enter__(self) -> _Lease:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            held = self.shared._get_json(self.key)
            if held is None or float(held[0].get("expires", 0)) < time.time():
                self.shared._put_json(self.key, {"owner": self.token, "expires": time.time() + LEASE_S,
                                                 "host": os.uname().nodename})
                time.sleep(SETTLE_S)
                mine = self.shared._get_json(self.key)
                if mine is not None and mine[0].get("owner") == self.token:
                    return self
            time.sleep(POLL_S)
        raise SharedStoreError(f"{self.shared.url}: the lease {self.key} stayed held for {WAIT_S}s",
                               hint="another builder is uploading; if none is, remove that object")

    def __exit__(self, *exc: object) -> None:
        held = self.shared._get_json(self.key)
        if held is not None and held[0].get("owner") == self.token:
            self.shared._delete(self.key)


def record_drill_run(qcow2s: Iterable[Path], drill: str, passed: bool, detail: str = "") -> list[str]:
    """A drill's outcome recorded for every artifact it booted (given by their qcow2; a file that is not an
    artifact is skipped) and pushed to the shared store when one is set; the names recorded."""
    done = []
    for qcow2 in dict.fromkeys(Path(q) for q in qcow2s):
        artifact = store.from_path(qcow2)
        if artifact is None:
            continue
        channels.record_drill(artifact, drill, passed, detail)
        shared = configured()
        if shared:
            shared.push_record(artifact)
        done.append(artifact.name)
    return done
