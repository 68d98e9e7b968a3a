"""S3 target (OVH Object Storage or any S3): multipart upload, resumable, checksum in the object metadata.

Objects are `PREFIX/PROFILE/NAME.qcow2` with metadata golden-sha256, golden-content-key and golden-profile.
Credentials come from boto3's own chain (AWS_* variables, ~/.aws, instance roles); `--endpoint-url`
points it at a non-AWS service.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, replace
from typing import Any

from ..images.store import Artifact
from ..log import info, log
from .base import (
    ChecksumMismatch,
    CredentialsError,
    ImageFacts,
    PublishedImage,
    PublishError,
    QuotaError,
    UploadProgress,
    retry,
)

PART_SIZE = 8 * 1024 * 1024  # S3 takes parts of 5 MiB to 5 GiB; 10,000 parts at most
MAX_LISTED = 10_000  # objects looked at under a prefix, so that a listing loop always ends


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    prefix: str = "goldenimage/"
    endpoint_url: str | None = None
    region: str | None = None
    part_size: int = PART_SIZE


def _transient() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError
    from urllib3.exceptions import ProtocolError

    return ConnectionClosedError, EndpointConnectionError, ReadTimeoutError, ProtocolError, ConnectionError


class S3Publisher:
    """A bucket as a publish target."""

    target = "s3"

    def __init__(self, settings: S3Settings, client: Any = None) -> None:
        import boto3
        from botocore.config import Config

        self.settings = settings
        # boto3's own retries stay on for throttling; connection breaks are retried per part below.
        self.s3 = client or boto3.client(
            "s3", endpoint_url=settings.endpoint_url, region_name=settings.region,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=120))

    def key_of(self, facts: ImageFacts) -> str:
        return f"{self.settings.prefix}{facts.profile}/{facts.name}.qcow2"

    # --- Publisher ---------------------------------------------------------------------------------

    def find(self, content_key: str) -> PublishedImage | None:
        for key in self._keys(self.settings.prefix):
            if key.endswith(f"-{content_key}.qcow2"):
                image = self._describe(key)
                if image is not None and image.content_key == content_key:
                    return image
        return None

    def upload(self, artifact: Artifact, facts: ImageFacts, progress: UploadProgress) -> PublishedImage:
        key = self.key_of(facts)
        upload_id, done = self._resumable(key, facts)
        try:
            parts, expected_etag = self._send_parts(artifact, key, upload_id, done, progress)
            self._call(self.s3.complete_multipart_upload, Bucket=self.settings.bucket, Key=key, UploadId=upload_id,
                       MultipartUpload={"Parts": parts})
        except KeyboardInterrupt:
            info(f"interrupted: the next publish resumes multipart upload {upload_id[:12]}…")
            raise
        except BaseException:
            # A failed publish leaves no parts behind to be billed for.
            self.s3.abort_multipart_upload(Bucket=self.settings.bucket, Key=key, UploadId=upload_id)
            info("aborted the multipart upload")
            raise
        image = self._describe(key)
        if image is None:
            raise PublishError(f"s3://{self.settings.bucket}/{key} is missing after its upload completed",
                               hint="the endpoint may be eventually consistent: publish again")
        return replace(image, extra={**image.extra, "expected_etag": expected_etag})

    def verify(self, image: PublishedImage, facts: ImageFacts) -> None:
        head = self.s3.head_object(Bucket=self.settings.bucket, Key=image.id)
        expected_etag = image.extra.get("expected_etag")
        etag = head.get("ETag", "").strip('"')
        problems = []
        if head.get("Metadata", {}).get("golden-sha256") != facts.sha256:
            problems.append("golden-sha256 metadata")
        if head.get("ContentLength") != facts.size_bytes:
            problems.append(f"size {head.get('ContentLength')} != {facts.size_bytes}")
        if expected_etag and etag != expected_etag:
            problems.append(f"ETag {etag} != {expected_etag}")
        if problems:
            raise ChecksumMismatch(f"s3://{self.settings.bucket}/{image.id}: checksum mismatch ({', '.join(problems)})",
                                   hint="the object was removed; publish again")

    def list_images(self, profile: str) -> list[PublishedImage]:
        images = (self._describe(k) for k in self._keys(f"{self.settings.prefix}{profile}/") if k.endswith(".qcow2"))
        return [i for i in images if i is not None and i.profile == profile]

    def delete(self, image: PublishedImage) -> None:
        self.s3.delete_object(Bucket=self.settings.bucket, Key=image.id)

    def in_use(self, image: PublishedImage) -> bool:
        # An object is a copy for downloads (BYOI, other clouds): no VM runs from it.
        return False

    # --- S3 specifics ------------------------------------------------------------------------------

    def presign(self, image: PublishedImage, expires_s: int) -> str:
        """A time-limited GET URL for the object (BYOI downloads it from there)."""
        url: str = self.s3.generate_presigned_url("get_object", Params={"Bucket": self.settings.bucket,
                                                                        "Key": image.id}, ExpiresIn=expires_s)
        return url

    def _keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in self._call(paginator.paginate, Bucket=self.settings.bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
            if len(keys) >= MAX_LISTED:
                log.debug("stopped listing %s after %d objects", prefix, len(keys))
                break
        return keys

    def _describe(self, key: str) -> PublishedImage | None:
        from botocore.exceptions import ClientError

        try:
            head = self._call(self.s3.head_object, Bucket=self.settings.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        meta = head.get("Metadata", {})
        if "golden-content-key" not in meta:
            return None
        return PublishedImage(id=key, name=key.rsplit("/", 1)[-1].removesuffix(".qcow2"),
                              profile=meta.get("golden-profile", ""), content_key=meta["golden-content-key"],
                              created=head["LastModified"].isoformat(), extra={"etag": head.get("ETag", "")})

    def _resumable(self, key: str, facts: ImageFacts) -> tuple[str, dict[int, str]]:
        """An unfinished multipart upload of this very artifact (its parts and ETags), or a new one."""
        listing = self._call(self.s3.list_multipart_uploads, Bucket=self.settings.bucket, Prefix=key)
        for upload in listing.get("Uploads", []):
            if upload["Key"] != key:
                continue
            parts = self._call(self.s3.list_parts, Bucket=self.settings.bucket, Key=key, UploadId=upload["UploadId"],
                               MaxParts=10_000)
            done = {p["PartNumber"]: p["ETag"].strip('"') for p in parts.get("Parts", [])}
            info(f"resuming the interrupted upload: {len(done)} part(s) already there")
            return upload["UploadId"], done
        created = self._call(self.s3.create_multipart_upload, Bucket=self.settings.bucket, Key=key,
                             ContentType="application/octet-stream",
                             Metadata={"golden-sha256": facts.sha256, "golden-content-key": facts.content_key,
                                       "golden-profile": facts.profile, "golden-name": facts.name})
        return created["UploadId"], {}

    def _send_parts(self, artifact: Artifact, key: str, upload_id: str, done: dict[int, str],
                    progress: UploadProgress) -> tuple[list[dict[str, Any]], str]:
        """Send the parts not already there; return them with the ETag S3 must report for the whole."""
        parts: list[dict[str, Any]] = []
        digests = b""
        size = self.settings.part_size
        whole = hashlib.sha256()
        with artifact.qcow2.open("rb") as f:
            number = 0
            while chunk := f.read(size):
                number += 1
                whole.update(chunk)
                md5 = hashlib.md5(chunk, usedforsecurity=False)
                digests += md5.digest()
                if done.get(number) == md5.hexdigest():
                    progress.advance(len(chunk))  # resumed: this part is already on the server, byte for byte
                    etag = done[number]
                else:
                    etag = retry(functools.partial(self._put_part, key, upload_id, number, chunk, md5),
                                 what=f"upload of part {number}", transient=_transient())
                    progress.advance(len(chunk))
                parts.append({"PartNumber": number, "ETag": f'"{etag}"'})
        if whole.hexdigest() != artifact.sha256():
            raise ChecksumMismatch(f"{artifact.qcow2}: the file changed while it was read (sha256 differs)",
                                   hint="the artifact is damaged: rebuild it with golden build --force")
        return parts, hashlib.md5(digests, usedforsecurity=False).hexdigest() + f"-{len(parts)}"

    def _put_part(self, key: str, upload_id: str, number: int, chunk: bytes, md5: Any) -> str:
        import base64

        response = self.s3.upload_part(Bucket=self.settings.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                       Body=chunk, ContentMD5=base64.b64encode(md5.digest()).decode())
        etag: str = response["ETag"].strip('"')
        if etag != md5.hexdigest():
            raise ChecksumMismatch(f"part {number} of s3://{self.settings.bucket}/{key}: ETag {etag} is not its MD5",
                                   hint="publish again; if it persists, the endpoint alters data in transit")
        return etag

    def _call(self, method: Any, **kwargs: Any) -> Any:
        """A boto3 call with its errors turned into one line and a hint."""
        from botocore.exceptions import ClientError, NoCredentialsError

        try:
            return method(**kwargs)
        except NoCredentialsError as exc:
            raise CredentialsError("no S3 credentials found",
                                   hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile in ~/.aws") from exc
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
                raise CredentialsError(f"S3 refused the credentials for bucket {self.settings.bucket} ({code})",
                                       hint="check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or the profile) "
                                            "and the bucket policy") from exc
            if code in ("QuotaExceeded", "EntityTooLarge", "InsufficientStorage"):
                raise QuotaError(f"S3 bucket {self.settings.bucket} is out of quota ({code})",
                                 hint="remove older images (--keep N) or raise the quota") from exc
            if code == "NoSuchBucket":
                raise PublishError(f"S3 bucket {self.settings.bucket} does not exist",
                                   hint="create it first, or pass --bucket NAME") from exc
            raise
