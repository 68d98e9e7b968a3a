"""`golden publish` argument handling, end to end on moto's S3."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable

import boto3
import pytest

from goldenimage.bake.store import Artifact
from goldenimage.commands.publish_cli import add_parser
from goldenimage.core.errors import InputError


def golden(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="golden")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["publish", *argv])
    return int(args.func(args))


def test_publish_twice_prints_the_same_id_and_uploads_once(
        moto_endpoint: str, aws_env: None, make_artifact: Callable[..., Artifact],
        capsys: pytest.CaptureFixture[str]) -> None:
    bucket = f"cli-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
    artifact = make_artifact()
    argv = (str(artifact.qcow2), "--to", "s3", "--bucket", bucket, "--endpoint-url", moto_endpoint)
    assert golden(*argv) == 0
    first = capsys.readouterr()
    assert golden(*argv, "--presign", "60") == 0
    second = capsys.readouterr()
    assert second.out.splitlines()[0] == first.out.strip() == f"goldenimage/web/{artifact.name}.qcow2"
    assert second.out.splitlines()[1].startswith(moto_endpoint)
    assert "nothing uploaded" in second.err


def test_ovh_reinstall_needs_yes(make_artifact: Callable[..., Artifact]) -> None:
    artifact = make_artifact(kind="metal")
    with pytest.raises(InputError, match="erases its disks"):
        golden(str(artifact.qcow2), "--to", "ovh-dedicated", "--server", "ns1.example", "--bucket", "b")


def test_ovh_dedicated_refuses_a_cloud_image(make_artifact: Callable[..., Artifact]) -> None:
    artifact = make_artifact()
    with pytest.raises(InputError, match="is a cloud image") as caught:
        golden(str(artifact.qcow2), "--to", "ovh-dedicated", "--server", "ns1.example", "--bucket", "b", "--yes")
    assert "\n" not in str(caught.value) and caught.value.hint and "--kind metal" in caught.value.hint


def test_ovh_dedicated_takes_the_newest_metal_image_of_a_profile(make_artifact: Callable[..., Artifact],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cloud = make_artifact(key="1" * 16)
    monkeypatch.setenv("GOLDEN_IMAGES_DIR", str(cloud.qcow2.parent))
    with pytest.raises(InputError, match="no artifact for metal of profile web"):
        golden("web", "--to", "ovh-dedicated", "--server", "ns1.example", "--bucket", "b")
    metal = make_artifact(key="2" * 16, kind="metal")
    from goldenimage.bake import store

    assert store.resolve("web", 12) == cloud and store.resolve("web", 12, kind="metal") == metal


def test_unknown_profile_is_input_error(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOLDEN_IMAGES_DIR", str(tmp_path))
    with pytest.raises(InputError, match="no artifact of profile nosuch"):
        golden("nosuch", "--to", "s3", "--bucket", "b")
