"""S3 target (OVH Object Storage or any S3): multipart upload, resumable, checksum in the object metadata.

Objects are `PREFIX/PROFILE/NAME.qcow2` with metadata golden-sha256, golden-content-key and golden-profile.
Credentials come from boto3's own chain (AWS_* variables, ~/.aws, instance roles); `--endpoint-url`
points it at a non-AWS service.

What S3-compatible services accept: every request and presigned URL is signed with Signature V4 (a region is
always set: the one given, boto3's, the endpoint's, or us-east-1), path-style addressing on a custom endpoint,
and no flexible-checksum headers unless an operation requires them. Integrity does not rest on ETags (not an
MD5 under SSE-KMS or SSE-C, nor on every service): each part carries its Content-MD5, which the server
checks on receipt; the whole file's sha256 is computed over the bytes sent; the stored object's size and
golden-sha256 are compared after completion, and its ChecksumSHA256 when the service reports one (asked
with ChecksumMode, and without it where the service refuses that header).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from ..bake.store import Artifact
from ..core.log import info, log, warning
from .publisher import (
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
MAX_PARTS = 10_000
LIST_PAGE = 1000  # S3 returns at most 1,000 parts or keys per listing page
MAX_LISTED = 10_000  # objects looked at under a prefix, so that a listing loop always ends
DEFAULT_REGION = "us-east-1"
#: Error codes of a service that has no ListMultipartUploads (the upload then starts afresh).
NOT_IMPLEMENTED = ("NotImplemented", "501", "405", "MethodNotAllowed")
#: Answers of a service that does not take HeadObject's x-amz-checksum-mode (verify asks again without it).
CHECKSUM_MODE_REFUSED = ("400", "InvalidArgument", "InvalidRequest", "BadRequest", *NOT_IMPLEMENTED)
CREDENTIAL_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "InvalidToken",
                    "ExpiredToken", "InvalidSecurity")
QUOTA_CODES = ("QuotaExceeded", "EntityTooLarge", "InsufficientStorage")


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    prefix: str = "goldenimage/"
    endpoint_url: str | None = None
    region: str | None = None
    part_size: int = PART_SIZE


def region_of(settings: S3Settings, configured: str | None = None) -> str:
    """The region for SigV4: the one given, boto3's (AWS_DEFAULT_REGION, ~/.aws), the endpoint's, or us-east-1
    (which the bucket's own region replaces for presigned URLs, when the service tells it)."""
    if settings.region:
        return settings.region
    if configured:
        return configured
    host = urlsplit(settings.endpoint_url or "").hostname or ""
    # s3.gra.io.cloud.ovh.net, s3.eu-west-3.amazonaws.com, s3-eu-west-1.amazonaws.com, s3.fr-par.scw.cloud
    match = re.match(r"s3[.-]([a-z]+(?:-[a-z]+)*(?:-\d+)?)\.", host)
    if match and match[1] not in ("amazonaws", "dualstack", "accelerate", "website", "external"):
        return match[1]
    return DEFAULT_REGION


def client_config() -> Any:
    """botocore settings every S3-compatible service accepts (see the module docstring)."""
    from botocore.config import Config

    options: dict[str, Any] = {"signature_version": "s3v4", "retries": {"max_attempts": 3, "mode": "standard"},
                               "connect_timeout": 10, "read_timeout": 120}
    # botocore 1.36 started sending CRC32 checksums on every upload by default, which several S3-compatible
    # services refuse; "when_required" keeps them to the operations that need them. Older botocore has no
    # such option and never sends them.
    if "request_checksum_calculation" in Config.OPTION_DEFAULTS:
        options.update(request_checksum_calculation="when_required", response_checksum_validation="when_required")
    return Config(**options)


def _transient() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError
    from urllib3.exceptions import ProtocolError

    return ConnectionClosedError, EndpointConnectionError, ReadTimeoutError, ProtocolError, ConnectionError


class S3Publisher:
    """A bucket as a publish target."""

    target = "s3"

    def __init__(self, settings: S3Settings, client: Any = None) -> None:
        import boto3

        self.settings = settings
        self.region = region_of(settings, boto3.session.Session().region_name)
        # boto3's own retries stay on for throttling; connection breaks are retried per part below.
        self.s3 = client or _client_for(settings, self.region)

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
        upload_id, listed = self._resumable(key, facts)
        try:
            parts, composite = self._send_parts(artifact, key, upload_id, listed, progress)
            self._call(self.s3.complete_multipart_upload, key, Bucket=self.settings.bucket, Key=key,
                       UploadId=upload_id, MultipartUpload={"Parts": parts})
        except KeyboardInterrupt:
            info(f"interrupted: the next publish resumes multipart upload {upload_id[:12]}…")
            raise
        except BaseException:
            self._abort(key, upload_id)  # a failed publish leaves no parts behind to be billed for
            raise
        image = self._describe(key)
        if image is None:
            raise PublishError(f"s3://{self.settings.bucket}/{key} is missing after its upload completed",
                               hint="the endpoint may be eventually consistent: publish again")
        return replace(image, extra={**image.extra, "sha256_parts": composite})

    def verify(self, image: PublishedImage, facts: ImageFacts) -> None:
        head = self._call(self._head_with_checksum, image.id, object_key=image.id)
        problems = []
        if head.get("Metadata", {}).get("golden-sha256") != facts.sha256:
            problems.append("golden-sha256 metadata")
        if head.get("ContentLength") != facts.size_bytes:
            problems.append(f"size {head.get('ContentLength')} != {facts.size_bytes}")
        stored = head.get("ChecksumSHA256")
        if stored:  # only services that keep flexible checksums report one; a multipart one ends in -N
            expected = image.extra.get("sha256_parts") if "-" in stored else \
                base64.b64encode(bytes.fromhex(facts.sha256)).decode()
            if expected and stored != expected:
                problems.append(f"ChecksumSHA256 {stored} != {expected}")
        if problems:
            raise ChecksumMismatch(f"s3://{self.settings.bucket}/{image.id}: checksum mismatch ({', '.join(problems)})",
                                   hint="the object was removed; publish again")

    def _head_with_checksum(self, object_key: str) -> dict[str, Any]:
        """HeadObject asking for the stored checksum (ChecksumMode); a service that refuses the header (a
        400, 405 or 501 to a HEAD, which carries no error body) is asked again without it."""
        from botocore.exceptions import ClientError

        try:
            return dict(self.s3.head_object(Bucket=self.settings.bucket, Key=object_key, ChecksumMode="ENABLED"))
        except ClientError as exc:
            if _code(exc) not in CHECKSUM_MODE_REFUSED:
                raise
            log.debug("s3://%s/%s: HeadObject with ChecksumMode refused (%s); asked without it",
                      self.settings.bucket, object_key, _code(exc))
        return dict(self.s3.head_object(Bucket=self.settings.bucket, Key=object_key))

    def list_images(self, profile: str) -> list[PublishedImage]:
        images = (self._describe(k) for k in self._keys(f"{self.settings.prefix}{profile}/") if k.endswith(".qcow2"))
        return [i for i in images if i is not None and i.profile == profile]

    def delete(self, image: PublishedImage) -> None:
        self._call(self.s3.delete_object, image.id, Bucket=self.settings.bucket, Key=image.id)

    def in_use(self, image: PublishedImage) -> bool:
        # An object is a copy for downloads (BYOI, other clouds): no VM runs from it.
        return False

    # --- S3 specifics ------------------------------------------------------------------------------

    def presign(self, image: PublishedImage, expires_s: int) -> str:
        """A time-limited GET URL for the object, signed with SigV4 (BYOI downloads it from there)."""
        url: str = self._presigner().generate_presigned_url(
            "get_object", Params={"Bucket": self.settings.bucket, "Key": image.id}, ExpiresIn=expires_s)
        return url

    def _presigner(self) -> Any:
        """The client, or one for the bucket's own region when ours was only the us-east-1 fallback.

        Calls follow S3's region redirects, but a URL signed for the wrong region is refused when downloaded.
        """
        if self.region != DEFAULT_REGION or self.settings.region:
            return self.s3
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self.s3.head_bucket(Bucket=self.settings.bucket)
        except ClientError as exc:  # S3 names the region on its 301 and 403 answers too
            head = exc.response
        except BotoCoreError as exc:
            log.debug("cannot ask for the region of bucket %s: %s", self.settings.bucket, exc)
            return self.s3
        actual = head.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
        if not actual or actual == self.region:
            return self.s3
        log.debug("bucket %s is in %s: presigning for that region", self.settings.bucket, actual)
        return _client_for(self.settings, actual)

    def _keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        request: dict[str, Any] = {"Bucket": self.settings.bucket, "Prefix": prefix}
        while len(keys) < MAX_LISTED:
            page = self._call(self.s3.list_objects_v2, prefix, **request)
            keys += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated") or not page.get("NextContinuationToken"):
                return keys
            request["ContinuationToken"] = page["NextContinuationToken"]
        log.debug("stopped listing %s after %d objects", prefix, len(keys))
        return keys

    def _describe(self, key: str) -> PublishedImage | None:
        from botocore.exceptions import ClientError

        try:
            head = self.s3.head_object(Bucket=self.settings.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._error(exc, key) from exc
        meta = head.get("Metadata", {})
        if "golden-content-key" not in meta:
            return None
        return PublishedImage(id=key, name=key.rsplit("/", 1)[-1].removesuffix(".qcow2"),
                              profile=meta.get("golden-profile", ""), content_key=meta["golden-content-key"],
                              created=head["LastModified"].isoformat(), extra={"etag": head.get("ETag", "")})

    def _resumable(self, key: str, facts: ImageFacts) -> tuple[str, dict[int, tuple[int, str]]]:
        """An unfinished multipart upload of this key (its parts' sizes and ETags), or a new one."""
        from botocore.exceptions import ClientError

        try:
            listing = self.s3.list_multipart_uploads(Bucket=self.settings.bucket, Prefix=key)
        except ClientError as exc:
            if _code(exc) not in NOT_IMPLEMENTED:
                raise self._error(exc, key) from exc
            info("this S3 service does not list unfinished uploads (ListMultipartUploads): starting a fresh upload")
            listing = {}
        for upload in listing.get("Uploads", []):
            if upload["Key"] == key:
                parts = self._listed_parts(key, upload["UploadId"])
                if parts is not None:
                    info(f"resuming the interrupted upload: {len(parts)} part(s) already there")
                    return upload["UploadId"], parts
        created = self._call(self.s3.create_multipart_upload, key, Bucket=self.settings.bucket, Key=key,
                             ContentType="application/octet-stream",
                             Metadata={"golden-sha256": facts.sha256, "golden-content-key": facts.content_key,
                                       "golden-profile": facts.profile, "golden-name": facts.name})
        return created["UploadId"], {}

    def _listed_parts(self, key: str, upload_id: str) -> dict[int, tuple[int, str]] | None:
        """Every part of an unfinished upload, page after page; None when the upload is gone."""
        from botocore.exceptions import ClientError

        parts: dict[int, tuple[int, str]] = {}
        marker = 0
        for _ in range(MAX_PARTS // LIST_PAGE + 1):
            try:
                page = self.s3.list_parts(Bucket=self.settings.bucket, Key=key, UploadId=upload_id,
                                          MaxParts=LIST_PAGE, PartNumberMarker=marker)
            except ClientError as exc:
                if _code(exc) in ("NoSuchUpload", *NOT_IMPLEMENTED):
                    log.debug("cannot resume upload %s: %s", upload_id, _code(exc))
                    return None
                raise self._error(exc, key) from exc
            for part in page.get("Parts", []):
                parts[int(part["PartNumber"])] = (int(part.get("Size", -1)), str(part.get("ETag", "")).strip('"'))
            following = int(page.get("NextPartNumberMarker") or 0)
            if not page.get("IsTruncated") or following <= marker:  # done, or a server that does not advance
                break
            marker = following
        return parts

    def _send_parts(self, artifact: Artifact, key: str, upload_id: str, listed: dict[int, tuple[int, str]],
                    progress: UploadProgress) -> tuple[list[dict[str, Any]], str]:
        """Send the parts not already there; return them and the composite SHA-256 of the parts (b64-N)."""
        parts: list[dict[str, Any]] = []
        part_digests = b""
        size = self.settings.part_size
        whole = hashlib.sha256()
        with artifact.qcow2.open("rb") as f:
            number = 0
            while chunk := f.read(size):
                number += 1
                whole.update(chunk)
                part_digests += hashlib.sha256(chunk).digest()
                md5 = hashlib.md5(chunk, usedforsecurity=False)
                # A part listed by the server is reused only when it is provably ours: same size, and an ETag
                # that is this chunk's MD5. Otherwise (SSE-KMS, SSE-C, other ETag schemes) it is sent again.
                if listed.get(number) == (len(chunk), md5.hexdigest()):
                    etag = listed[number][1]
                else:
                    etag = retry(functools.partial(self._put_part, key, upload_id, number, chunk, md5),
                                 what=f"upload of part {number}", transient=_transient())
                progress.advance(len(chunk))
                parts.append({"PartNumber": number, "ETag": f'"{etag}"'})
        if whole.hexdigest() != artifact.sha256():
            raise ChecksumMismatch(f"{artifact.qcow2}: the file changed while it was read (sha256 differs)",
                                   hint="the artifact is damaged: rebuild it with golden build --force")
        composite = base64.b64encode(hashlib.sha256(part_digests).digest()).decode() + f"-{len(parts)}"
        return parts, composite

    def _put_part(self, key: str, upload_id: str, number: int, chunk: bytes, md5: Any) -> str:
        # Content-MD5 makes the server refuse a part whose bytes differ (BadDigest), whatever its ETags are.
        response = self._call(self.s3.upload_part, key, transient_raw=True, Bucket=self.settings.bucket, Key=key,
                              UploadId=upload_id, PartNumber=number, Body=chunk,
                              ContentMD5=base64.b64encode(md5.digest()).decode())
        return str(response["ETag"]).strip('"')

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self.s3.abort_multipart_upload(Bucket=self.settings.bucket, Key=key, UploadId=upload_id)
            info("aborted the multipart upload")
        except Exception as exc:  # the original error matters more; say what is left behind
            warning(f"could not abort multipart upload {upload_id[:12]}… of s3://{self.settings.bucket}/{key} "
                    f"({type(exc).__name__}): abort it or let a lifecycle rule expire it")

    def _call(self, method: Any, key: str = "", transient_raw: bool = False, **kwargs: Any) -> Any:
        """A boto3 call with every error turned into one line and a hint (connection breaks pass through
        when `transient_raw`, for the caller's retry)."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return method(**kwargs)
        except NoCredentialsError as exc:
            raise CredentialsError("no S3 credentials found",
                                   hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile in ~/.aws") from exc
        except ClientError as exc:
            raise self._error(exc, key) from exc
        except BotoCoreError as exc:
            if transient_raw and isinstance(exc, _transient()):
                raise
            where = self.settings.endpoint_url or f"S3 in {self.region}"
            raise PublishError(f"S3 request to {where} for s3://{self.settings.bucket}/{key} failed: "
                               f"{_flat(str(exc))}",
                               hint="check --endpoint-url and the network path, then publish again") from exc

    def _error(self, exc: Any, key: str = "") -> PublishError:
        """One line for an S3 error response: where, the service's code and message, what to do."""
        code = _code(exc)
        message = _flat(exc.response.get("Error", {}).get("Message") or "")
        where = f"s3://{self.settings.bucket}/{key}" if key else f"s3://{self.settings.bucket}"
        text = f"S3 {exc.operation_name} on {where} failed: {code}" + (f": {message}" if message else "")
        if code in ("AuthorizationHeaderMalformed", "AuthorizationQueryParametersError", "IllegalLocationConstraint"
                    ) or (code == "PermanentRedirect"):
            return PublishError(text, hint=f"the request was signed for region {self.region}: pass the bucket's "
                                           "--region (or set AWS_DEFAULT_REGION)")
        if code == "RequestTimeTooSkewed":
            return PublishError(text, hint="this machine's clock is off: synchronise it (NTP), then publish again")
        if code in CREDENTIAL_CODES:
            return CredentialsError(text, hint="check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or the profile) "
                                               "and the bucket policy")
        if code in QUOTA_CODES:
            return QuotaError(text, hint="remove older images (--keep N) or raise the quota")
        if code == "NoSuchBucket":
            return PublishError(text, hint="create the bucket first, or pass --bucket NAME")
        if code in ("BadDigest", "InvalidDigest"):
            return ChecksumMismatch(text, hint="the bytes changed on the way: publish again")
        return PublishError(text, hint="check --endpoint-url and --region; --debug shows the requests")


def _client_for(settings: S3Settings, region: str) -> Any:
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=settings.endpoint_url, region_name=region,
                                          config=client_config().merge(_addressing(settings.endpoint_url)))


def _addressing(endpoint_url: str | None) -> Any:
    """Path style on a custom endpoint: every S3-compatible service takes it, virtual hosts need DNS."""
    from botocore.config import Config

    return Config(s3={"addressing_style": "path" if endpoint_url else "virtual"})


def _code(exc: Any) -> str:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(error.get("Code") or status or "")


def _flat(text: str) -> str:
    return " ".join(text.split())
