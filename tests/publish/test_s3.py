"""S3 target against moto's server: multipart upload, metadata checksum, idempotence, resume, retention."""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import threading
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests
from botocore.exceptions import EndpointConnectionError

from goldenimage.bake.store import Artifact
from goldenimage.publish import publisher
from goldenimage.publish import s3 as s3_module
from goldenimage.publish.publisher import (
    ChecksumMismatch,
    CredentialsError,
    InterruptedUpload,
    PublishedImage,
    PublishError,
    publish,
)
from goldenimage.publish.s3 import S3Publisher, S3Settings, region_of

PART = 5 * 1024 * 1024


@pytest.fixture
def bucket(moto_endpoint: str, aws_env: None) -> str:
    name = f"golden-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3(moto_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch) -> S3Publisher:
    monkeypatch.setattr(publisher, "RETRY_BACKOFF_S", 0.01)
    return S3Publisher(S3Settings(bucket=bucket, endpoint_url=moto_endpoint, part_size=PART))


def _metadata(facts: publisher.ImageFacts) -> dict[str, str]:
    """What a publish killed after its first parts left on the unfinished upload."""
    return {"golden-sha256": facts.sha256, "golden-content-key": facts.content_key, "golden-profile": facts.profile}


def test_upload_is_multipart_with_checksum_metadata(s3: S3Publisher, make_artifact: Callable[..., Artifact]) -> None:
    artifact = make_artifact()
    result = publish(s3, artifact)
    assert result.uploaded
    head = s3.s3.head_object(Bucket=s3.settings.bucket, Key=result.image.id)
    assert result.image.id == f"goldenimage/web/{artifact.name}.qcow2"
    assert head["Metadata"]["golden-sha256"] == artifact.sha256()
    assert head["Metadata"]["golden-content-key"] == artifact.key
    assert head["ContentLength"] == artifact.qcow2.stat().st_size
    assert head["ETag"].strip('"').endswith("-3")  # three parts: a multipart upload


def test_second_publish_uploads_nothing(s3: S3Publisher, make_artifact: Callable[..., Artifact],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    artifact = make_artifact()
    first = publish(s3, artifact)

    def no_upload(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a second publish must not upload")

    monkeypatch.setattr(s3.s3, "upload_part", no_upload)
    second = publish(s3, artifact)
    assert not second.uploaded
    assert second.image.id == first.image.id


def test_presigned_url_downloads_the_image(s3: S3Publisher, make_artifact: Callable[..., Artifact]) -> None:
    artifact = make_artifact()
    image = publish(s3, artifact).image
    url = s3.presign(image, 600)
    assert url.startswith(s3.settings.endpoint_url or "")
    body = requests.get(url, timeout=10).content
    assert body == artifact.qcow2.read_bytes()


def test_interrupted_part_is_retried(s3: S3Publisher, make_artifact: Callable[..., Artifact],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real = s3.s3.upload_part
    calls: list[int] = []

    def flaky(**kwargs: Any) -> Any:
        calls.append(kwargs["PartNumber"])
        if calls.count(2) == 1 and kwargs["PartNumber"] == 2:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1")
        return real(**kwargs)

    monkeypatch.setattr(s3.s3, "upload_part", flaky)
    result = publish(s3, make_artifact())
    assert result.uploaded
    assert calls == [1, 2, 2, 3]


def test_interrupted_upload_resumes_from_the_parts_already_sent(
        s3: S3Publisher, make_artifact: Callable[..., Artifact], monkeypatch: pytest.MonkeyPatch) -> None:
    artifact = make_artifact()
    facts = publisher.ImageFacts.of(artifact)
    key = s3.key_of(facts)
    # A publish killed after part 1: its multipart upload is still open on the server.
    upload = s3.s3.create_multipart_upload(Bucket=s3.settings.bucket, Key=key, Metadata={
        "golden-sha256": facts.sha256, "golden-content-key": facts.content_key, "golden-profile": facts.profile})
    s3.s3.upload_part(Bucket=s3.settings.bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1,
                      Body=artifact.qcow2.read_bytes()[:PART])
    real = s3.s3.upload_part
    sent: list[int] = []
    monkeypatch.setattr(s3.s3, "upload_part", lambda **kw: (sent.append(kw["PartNumber"]), real(**kw))[1])
    result = publish(s3, artifact)
    assert sent == [2, 3]
    assert s3.s3.list_multipart_uploads(Bucket=s3.settings.bucket).get("Uploads", []) == []
    assert s3.s3.get_object(Bucket=s3.settings.bucket, Key=result.image.id)["Body"].read() == \
        artifact.qcow2.read_bytes()


def test_upload_interrupted_beyond_retries_aborts_and_leaves_nothing(
        s3: S3Publisher, make_artifact: Callable[..., Artifact], monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(**kwargs: Any) -> Any:
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1")

    monkeypatch.setattr(s3.s3, "upload_part", broken)
    with pytest.raises(InterruptedUpload) as err:
        publish(s3, make_artifact())
    assert "interrupted 3 times" in err.value.message and err.value.hint
    assert s3.s3.list_multipart_uploads(Bucket=s3.settings.bucket).get("Uploads", []) == []
    assert s3.s3.list_objects_v2(Bucket=s3.settings.bucket).get("KeyCount") == 0


def test_checksum_mismatch_removes_the_object(s3: S3Publisher, make_artifact: Callable[..., Artifact],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    artifact = make_artifact()
    real = s3.s3.head_object

    def short_head(**kwargs: Any) -> Any:
        head = real(**kwargs)
        head["ContentLength"] -= 1  # the service stored one byte less than was sent
        return head

    monkeypatch.setattr(s3.s3, "head_object", short_head)
    with pytest.raises(ChecksumMismatch, match="checksum mismatch"):
        publish(s3, artifact)
    assert s3.s3.list_objects_v2(Bucket=s3.settings.bucket).get("KeyCount") == 0


def test_an_etag_that_is_not_an_md5_is_accepted(s3: S3Publisher, make_artifact: Callable[..., Artifact],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # Under SSE-KMS or SSE-C, and on some services, ETags are opaque: integrity rests on Content-MD5 and size.
    real_put, real_complete, real_head = s3.s3.upload_part, s3.s3.complete_multipart_upload, s3.s3.head_object
    opaque: dict[str, str] = {}

    def put(**kwargs: Any) -> Any:
        response = real_put(**kwargs)
        etag = f'"{uuid.uuid4().hex}"'
        opaque[etag] = response["ETag"]
        return {**response, "ETag": etag}

    def complete(**kwargs: Any) -> Any:  # the service maps its opaque ETags back to its parts
        parts = [{**p, "ETag": opaque[p["ETag"]]} for p in kwargs["MultipartUpload"]["Parts"]]
        return real_complete(**{**kwargs, "MultipartUpload": {"Parts": parts}})

    monkeypatch.setattr(s3.s3, "upload_part", put)
    monkeypatch.setattr(s3.s3, "complete_multipart_upload", complete)
    monkeypatch.setattr(s3.s3, "head_object", lambda **kw: {**real_head(**kw), "ETag": f'"{uuid.uuid4().hex}"'})
    artifact = make_artifact()
    result = publish(s3, artifact)
    assert result.uploaded and len(opaque) == 3
    assert s3.s3.get_object(Bucket=s3.settings.bucket, Key=result.image.id)["Body"].read() == \
        artifact.qcow2.read_bytes()


def test_checksum_sha256_reported_by_the_service_is_compared(
        s3: S3Publisher, make_artifact: Callable[..., Artifact], monkeypatch: pytest.MonkeyPatch) -> None:
    artifact = make_artifact()
    image = publish(s3, artifact).image
    facts = publisher.ImageFacts.of(artifact)
    real = s3.s3.head_object
    reported = {"ChecksumSHA256": "AAAA-3"}
    monkeypatch.setattr(s3.s3, "head_object", lambda **kw: {**real(**kw), **reported})
    with pytest.raises(ChecksumMismatch, match="ChecksumSHA256"):
        s3.verify(image, facts)
    # The composite of the parts' SHA-256, as S3 computes it for a multipart object.
    data = artifact.qcow2.read_bytes()
    digests = b"".join(hashlib.sha256(data[i:i + PART]).digest() for i in range(0, len(data), PART))
    reported["ChecksumSHA256"] = base64.b64encode(hashlib.sha256(digests).digest()).decode() + "-3"
    s3.verify(replace(image, extra={"sha256_parts": reported["ChecksumSHA256"]}), facts)


def test_no_checksum_headers_on_uploads(s3: S3Publisher, make_artifact: Callable[..., Artifact]) -> None:
    # botocore 1.36+ would add CRC32 checksums to every part, which some S3-compatible services refuse.
    sent: list[dict[str, str]] = []
    s3.s3.meta.events.register("before-send.s3.UploadPart", lambda request, **kw: sent.append(dict(request.headers)))
    publish(s3, make_artifact())
    assert len(sent) == 3
    for headers in sent:
        names = {k.lower() for k in headers}
        assert "content-md5" in names
        assert not {n for n in names if n.startswith("x-amz-checksum") or n == "x-amz-sdk-checksum-algorithm"}
        authorization = headers["Authorization"]
        assert (authorization.decode() if isinstance(authorization, bytes) else authorization).startswith(
            "AWS4-HMAC-SHA256 ")


def test_resume_pages_through_the_listed_parts(s3: S3Publisher, make_artifact: Callable[..., Artifact],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    artifact = make_artifact()
    facts = publisher.ImageFacts.of(artifact)
    key = s3.key_of(facts)
    upload = s3.s3.create_multipart_upload(Bucket=s3.settings.bucket, Key=key, Metadata=_metadata(facts))
    data = artifact.qcow2.read_bytes()
    for number in (1, 2):
        s3.s3.upload_part(Bucket=s3.settings.bucket, Key=key, UploadId=upload["UploadId"], PartNumber=number,
                          Body=data[(number - 1) * PART:number * PART])
    monkeypatch.setattr(s3_module, "LIST_PAGE", 1)  # one part per page: the listing must follow the marker
    real_list, real_put = s3.s3.list_parts, s3.s3.upload_part
    pages: list[int] = []
    sent: list[int] = []
    monkeypatch.setattr(s3.s3, "list_parts", lambda **kw: (pages.append(kw["PartNumberMarker"]), real_list(**kw))[1])
    monkeypatch.setattr(s3.s3, "upload_part", lambda **kw: (sent.append(kw["PartNumber"]), real_put(**kw))[1])
    result = publish(s3, artifact)
    assert pages[:2] == [0, 1] and sent == [3]
    assert s3.s3.get_object(Bucket=s3.settings.bucket, Key=result.image.id)["Body"].read() == data


def test_listed_parts_with_opaque_etags_are_sent_again(s3: S3Publisher, make_artifact: Callable[..., Artifact],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    artifact = make_artifact()
    facts = publisher.ImageFacts.of(artifact)
    key = s3.key_of(facts)
    upload = s3.s3.create_multipart_upload(Bucket=s3.settings.bucket, Key=key, Metadata=_metadata(facts))
    s3.s3.upload_part(Bucket=s3.settings.bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1,
                      Body=artifact.qcow2.read_bytes()[:PART])
    real_list, real_put = s3.s3.list_parts, s3.s3.upload_part

    def opaque_list(**kwargs: Any) -> Any:
        page = real_list(**kwargs)
        for part in page.get("Parts", []):
            part["ETag"] = f'"{uuid.uuid4().hex}"'  # SSE-KMS: nothing proves the part holds our bytes
        return page

    sent: list[int] = []
    monkeypatch.setattr(s3.s3, "list_parts", opaque_list)
    monkeypatch.setattr(s3.s3, "upload_part", lambda **kw: (sent.append(kw["PartNumber"]), real_put(**kw))[1])
    publish(s3, artifact)
    assert sent == [1, 2, 3]


@pytest.mark.parametrize("code,status", [("NotImplemented", 501), ("MethodNotAllowed", 405)])
def test_service_without_list_multipart_uploads_starts_afresh(
        s3: S3Publisher, make_artifact: Callable[..., Artifact], monkeypatch: pytest.MonkeyPatch,
        code: str, status: int) -> None:
    from botocore.exceptions import ClientError

    def unsupported(**kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": code, "Message": "A header you provided implies functionality that "
                                                              "is not implemented"},
                           "ResponseMetadata": {"HTTPStatusCode": status}}, "ListMultipartUploads")

    monkeypatch.setattr(s3.s3, "list_multipart_uploads", unsupported)
    result = publish(s3, make_artifact())
    assert result.uploaded


def test_every_s3_error_is_one_line_with_bucket_key_and_code(
        moto_endpoint: str, aws_env: None, make_artifact: Callable[..., Artifact]) -> None:
    publisher = S3Publisher(S3Settings(bucket="no-such-bucket-here", endpoint_url=moto_endpoint))
    with pytest.raises(PublishError) as err:
        publish(publisher, make_artifact())
    message = err.value.message
    assert "\n" not in message and "s3://no-such-bucket-here/goldenimage/" in message
    assert "ListObjectsV2" in message and "NoSuchBucket" in message and "does not exist" in message
    assert "--bucket" in (err.value.hint or "")


def test_sigv4_and_a_region_even_when_none_is_given(moto_endpoint: str, aws_env: None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    publisher = S3Publisher(S3Settings(bucket="b", endpoint_url=moto_endpoint))
    assert publisher.region == "us-east-1"
    assert publisher.s3.meta.config.signature_version == "s3v4"
    assert publisher.s3.meta.config.s3["addressing_style"] == "path"
    url = publisher.presign(PublishedImage("goldenimage/web/x.qcow2", "x", "web", "k", ""), 60)
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and "Signature" not in query
    assert "/us-east-1/s3/aws4_request" in query["X-Amz-Credential"][0]
    assert urlsplit(url).path == "/b/goldenimage/web/x.qcow2"  # path style on a custom endpoint


@pytest.mark.parametrize("endpoint,region", [
    ("https://s3.gra.io.cloud.ovh.net", "gra"),
    ("https://s3.sbg.perf.cloud.ovh.net", "sbg"),
    ("https://s3.eu-west-3.amazonaws.com", "eu-west-3"),
    ("https://s3-eu-west-1.amazonaws.com", "eu-west-1"),
    ("https://s3.fr-par.scw.cloud", "fr-par"),
    ("http://127.0.0.1:9000", "us-east-1"),
    (None, "us-east-1"),
])
def test_region_of_an_endpoint(endpoint: str | None, region: str) -> None:
    assert region_of(S3Settings(bucket="b", endpoint_url=endpoint)) == region
    assert region_of(S3Settings(bucket="b", endpoint_url=endpoint, region="de")) == "de"
    assert region_of(S3Settings(bucket="b", endpoint_url=endpoint), configured="ca-east-bhs") == "ca-east-bhs"


def test_bad_credentials_are_one_line_with_a_hint(moto_endpoint: str, aws_env: None, bucket: str,
                                                   make_artifact: Callable[..., Artifact]) -> None:
    from botocore.exceptions import ClientError

    publisher = S3Publisher(S3Settings(bucket=bucket, endpoint_url=moto_endpoint))

    def refused(**kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": "InvalidAccessKeyId", "Message": "no such key"}}, "ListObjectsV2")

    publisher.s3.list_objects_v2 = refused
    with pytest.raises(CredentialsError) as err:
        publish(publisher, make_artifact())
    assert "\n" not in err.value.message and "AWS_ACCESS_KEY_ID" in (err.value.hint or "")
    assert "testing" not in err.value.message  # the secret is never echoed


def test_keep_removes_older_images_of_the_profile_only(s3: S3Publisher,
                                                       make_artifact: Callable[..., Artifact]) -> None:
    olds = [publish(s3, make_artifact(key=f"{i:016x}", date=f"2026110{i}")).image for i in range(1, 4)]
    other = publish(s3, make_artifact(profile="lb", key="f" * 16)).image
    newest = publish(s3, make_artifact(key="e" * 16, date="20261126"), keep=2)
    assert set(newest.removed) == {olds[0].id, olds[1].id}
    left = {o["Key"] for o in s3.s3.list_objects_v2(Bucket=s3.settings.bucket)["Contents"]}
    assert left == {olds[2].id, newest.image.id, other.id}


def test_presigned_url_is_signed_for_the_bucket_region_when_none_was_given(
        moto_endpoint: str, aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"golden-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="eu-west-3").create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    publisher = S3Publisher(S3Settings(bucket=name, endpoint_url=moto_endpoint))
    assert publisher.region == "us-east-1"  # the fallback: calls work, a URL signed for it would not
    url = publisher.presign(PublishedImage("goldenimage/web/x.qcow2", "x", "web", "k", ""), 60)
    assert "/eu-west-3/s3/aws4_request" in parse_qs(urlsplit(url).query)["X-Amz-Credential"][0]


class _RefusesChecksumMode(http.server.BaseHTTPRequestHandler):
    """An S3-compatible front for moto on 127.0.0.1 that answers a HEAD carrying x-amz-checksum-mode with
    400 and no body, as services without flexible checksums do, and forwards every other HEAD."""

    upstream = ""
    refused: list[str] = []

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's name)
        if "x-amz-checksum-mode" in {k.lower() for k in self.headers}:
            self.refused.append(self.path)
            self.send_response(400)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        url = urlsplit(self.upstream)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        try:
            conn.request("HEAD", self.path, headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
            answer = conn.getresponse()
            self.send_response(answer.status)
            for name, value in answer.getheaders():
                if name.lower() not in ("server", "date", "connection"):
                    self.send_header(name, value)
            self.end_headers()
        finally:
            conn.close()

    def log_message(self, *args: Any) -> None:
        pass


def test_verify_works_with_a_service_that_refuses_checksum_mode(
        s3: S3Publisher, moto_endpoint: str, make_artifact: Callable[..., Artifact]) -> None:
    artifact = make_artifact()
    image = publish(s3, artifact).image
    handler = type("Front", (_RefusesChecksumMode,), {"upstream": moto_endpoint, "refused": []})
    front = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=front.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{front.server_address[1]}"
        strict = S3Publisher(S3Settings(bucket=s3.settings.bucket, endpoint_url=endpoint, part_size=PART))
        facts = publisher.ImageFacts.of(artifact)
        strict.verify(image, facts)
        assert handler.refused  # it was asked with ChecksumMode first, then without
        with pytest.raises(ChecksumMismatch, match="golden-sha256"):  # and still compares what it is told
            strict.verify(image, replace(facts, sha256="0" * 64))
    finally:
        front.shutdown()
        front.server_close()
        thread.join(timeout=10)
