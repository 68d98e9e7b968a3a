"""The S3 target against nanio, a second S3 implementation (independent of moto and botocore) that verifies
Signature V4 on every request and presigned URL: what an S3-compatible service that checks signatures
(AWS, OVH Object Storage) accepts, not only what moto lets through."""

from __future__ import annotations

import argparse
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.config import Config

from goldenimage.bake.store import Artifact
from goldenimage.commands.publish_cli import add_parser
from goldenimage.publish.publisher import CredentialsError, publish
from goldenimage.publish.s3 import S3Publisher, S3Settings
from tests.conftest import SigV4Server

PART = 5 * 1024 * 1024


@pytest.fixture
def creds(sigv4_s3: SigV4Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SigV4Server:
    """The server's keys in boto3's chain, no region anywhere (the README's example)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", sigv4_s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", sigv4_s3.secret_key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    return sigv4_s3


@pytest.fixture
def bucket(creds: SigV4Server) -> Iterator[str]:
    name = f"golden-{uuid.uuid4().hex[:12]}"
    # A new session: boto3's default one keeps the credentials it found first (moto's, in other tests).
    client = boto3.session.Session().client("s3", endpoint_url=creds.endpoint, region_name="us-east-1",
                                            config=Config(signature_version="s3v4"))
    client.create_bucket(Bucket=name)
    yield name


def s3_for(server: SigV4Server, bucket: str) -> S3Publisher:
    return S3Publisher(S3Settings(bucket=bucket, endpoint_url=server.endpoint, part_size=PART))


def golden_publish(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="golden")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["publish", *argv])
    return int(args.func(args))


def http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - a loopback URL the test made
        return bytes(response.read())


def test_multipart_upload_is_accepted_and_stored_byte_for_byte(
        creds: SigV4Server, bucket: str, make_artifact: Callable[..., Artifact]) -> None:
    artifact = make_artifact()
    publisher = s3_for(creds, bucket)
    result = publish(publisher, artifact)
    assert result.uploaded
    head = publisher.s3.head_object(Bucket=bucket, Key=result.image.id)
    assert head["Metadata"]["golden-sha256"] == artifact.sha256()
    assert head["ContentLength"] == artifact.qcow2.stat().st_size
    assert publisher.s3.get_object(Bucket=bucket, Key=result.image.id)["Body"].read() == artifact.qcow2.read_bytes()
    assert publisher.s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_republish_uploads_nothing(creds: SigV4Server, bucket: str, make_artifact: Callable[..., Artifact],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    artifact = make_artifact()
    first = publish(s3_for(creds, bucket), artifact)
    again = s3_for(creds, bucket)

    def no_upload(**kwargs: Any) -> Any:
        raise AssertionError("a second publish must not upload")

    monkeypatch.setattr(again.s3, "upload_part", no_upload)
    monkeypatch.setattr(again.s3, "create_multipart_upload", no_upload)
    second = publish(again, artifact)
    assert not second.uploaded and second.image.id == first.image.id


def test_interrupted_upload_resumes_there(creds: SigV4Server, bucket: str, make_artifact: Callable[..., Artifact],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from goldenimage.publish.publisher import ImageFacts

    artifact = make_artifact()
    publisher = s3_for(creds, bucket)
    facts = ImageFacts.of(artifact)
    key = publisher.key_of(facts)
    upload = publisher.s3.create_multipart_upload(Bucket=bucket, Key=key, Metadata={
        "golden-sha256": facts.sha256, "golden-content-key": facts.content_key, "golden-profile": facts.profile})
    publisher.s3.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1,
                             Body=artifact.qcow2.read_bytes()[:PART])
    real = publisher.s3.upload_part
    sent: list[int] = []
    monkeypatch.setattr(publisher.s3, "upload_part", lambda **kw: (sent.append(kw["PartNumber"]), real(**kw))[1])
    result = publish(publisher, artifact)
    assert sent == [2, 3]
    assert publisher.s3.get_object(Bucket=bucket, Key=result.image.id)["Body"].read() == \
        artifact.qcow2.read_bytes()


def test_presigned_url_from_the_cli_downloads_the_object(
        creds: SigV4Server, bucket: str, make_artifact: Callable[..., Artifact],
        capsys: pytest.CaptureFixture[str]) -> None:
    artifact = make_artifact()
    assert golden_publish(str(artifact.qcow2), "--to", "s3", "--bucket", bucket, "--endpoint-url", creds.endpoint,
                          "--presign", "600") == 0
    key, url = capsys.readouterr().out.split()
    assert key == f"goldenimage/web/{artifact.name}.qcow2"
    assert parse_qs(urlsplit(url).query)["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert http_get(url) == artifact.qcow2.read_bytes()


def test_the_server_refuses_sigv2_and_bad_sigv4_urls(creds: SigV4Server, bucket: str,
                                                    make_artifact: Callable[..., Artifact]) -> None:
    """What proves the server checks: the URLs boto3 made before this fix (SigV2) and a forged V4 one fail."""
    image = publish(s3_for(creds, bucket), make_artifact()).image
    v2 = boto3.session.Session().client("s3", endpoint_url=creds.endpoint, config=Config(signature_version="s3"))
    v2_url = v2.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": image.id}, ExpiresIn=600)
    assert "Signature=" in v2_url and "X-Amz-Algorithm" not in v2_url
    good = s3_for(creds, bucket).presign(image, 600)
    forged = good.replace("X-Amz-Signature=", "X-Amz-Signature=0")[: len(good)]
    anonymous = f"{creds.endpoint}/{bucket}/{image.id}"
    for url in (v2_url, forged, anonymous):
        with pytest.raises(urllib.error.HTTPError) as refused:
            http_get(url)
        assert refused.value.code == 403, url
    assert len(http_get(good)) == image_size(creds, bucket, image.id)


def image_size(server: SigV4Server, bucket: str, key: str) -> int:
    return int(s3_for(server, bucket).s3.head_object(Bucket=bucket, Key=key)["ContentLength"])


def test_a_wrong_secret_is_one_line(creds: SigV4Server, bucket: str, make_artifact: Callable[..., Artifact],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(CredentialsError) as err:
        publish(s3_for(creds, bucket), make_artifact())
    assert "\n" not in err.value.message and "SignatureDoesNotMatch" in err.value.message
    assert bucket in err.value.message and "not-the-secret" not in err.value.message
