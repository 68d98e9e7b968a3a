"""S3 target against moto's server: multipart upload, metadata checksum, idempotence, resume, retention."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import EndpointConnectionError

from goldenimage.images.store import Artifact
from goldenimage.publish import base
from goldenimage.publish.base import ChecksumMismatch, CredentialsError, InterruptedUpload, publish
from goldenimage.publish.s3 import S3Publisher, S3Settings

PART = 5 * 1024 * 1024


@pytest.fixture
def bucket(moto_endpoint: str, aws_env: None) -> str:
    name = f"golden-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3(moto_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch) -> S3Publisher:
    monkeypatch.setattr(base, "RETRY_BACKOFF_S", 0.01)
    return S3Publisher(S3Settings(bucket=bucket, endpoint_url=moto_endpoint, part_size=PART))


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
    facts = base.ImageFacts.of(artifact)
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

    def lying_head(**kwargs: Any) -> Any:
        head = real(**kwargs)
        head["ETag"] = '"00000000000000000000000000000000-3"'
        return head

    monkeypatch.setattr(s3.s3, "head_object", lying_head)
    with pytest.raises(ChecksumMismatch, match="checksum mismatch"):
        publish(s3, artifact)
    assert s3.s3.list_objects_v2(Bucket=s3.settings.bucket).get("KeyCount") == 0


def test_bad_credentials_are_one_line_with_a_hint(moto_endpoint: str, aws_env: None, bucket: str,
                                                   make_artifact: Callable[..., Artifact]) -> None:
    from botocore.exceptions import ClientError

    publisher = S3Publisher(S3Settings(bucket=bucket, endpoint_url=moto_endpoint))

    def refused(**kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": "InvalidAccessKeyId", "Message": "no such key"}}, "ListObjectsV2")

    publisher.s3.get_paginator = lambda name: type("P", (), {"paginate": staticmethod(refused)})()
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
