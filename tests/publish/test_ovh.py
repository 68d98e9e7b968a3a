"""OVH dedicated (BYOI) through the ovh library against a local OVH API, with the image on moto's S3."""

from __future__ import annotations

import base64
import functools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest

from goldenimage.bake.store import Artifact
from goldenimage.core.errors import InputError
from goldenimage.publish import ovh, publisher
from goldenimage.publish.ovh import OvhDedicated, OvhSettings, deploy
from goldenimage.publish.publisher import CredentialsError, PublishError
from goldenimage.publish.s3 import S3Publisher, S3Settings

from .fakes.ovh import AK, AS, CK, SERVER, FakeOvh

USER_DATA = "#cloud-config\nwrite_files:\n  - path: /etc/golden/host.json\n    content: '{}'\n"


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOvh]:
    monkeypatch.setattr(ovh, "TASK_POLL_S", 0.01)
    monkeypatch.setattr(publisher, "RETRY_BACKOFF_S", 0.01)
    with FakeOvh() as fake:
        monkeypatch.setenv("OVH_ENDPOINT", f"{fake.url}/1.0")
        monkeypatch.setenv("OVH_APPLICATION_KEY", AK)
        monkeypatch.setenv("OVH_APPLICATION_SECRET", AS)
        monkeypatch.setenv("OVH_CONSUMER_KEY", CK)
        yield fake
        assert fake.errors == [], fake.errors


@pytest.fixture
def make_artifact(make_artifact: Callable[..., Artifact]) -> Callable[..., Artifact]:
    """A dedicated server takes images for metal."""
    return functools.partial(make_artifact, kind="metal")


@pytest.fixture
def s3(moto_endpoint: str, aws_env: None) -> S3Publisher:
    bucket = f"byoi-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
    return S3Publisher(S3Settings(bucket=bucket, endpoint_url=moto_endpoint, part_size=5 * 1024 * 1024))


def server(tmp_path: Path, **kwargs: object) -> OvhDedicated:
    user_data = tmp_path / "user-data"
    user_data.write_text(USER_DATA)
    return OvhDedicated(OvhSettings(server=SERVER, user_data=user_data, hostname="web1",
                                    ssh_key="ssh-ed25519 AAAAC3Nza golden", **kwargs))  # type: ignore[arg-type]


def test_reinstall_from_a_presigned_url_with_the_documented_body(
        api: FakeOvh, s3: S3Publisher, tmp_path: Path, make_artifact: Callable[..., Artifact]) -> None:
    artifact = make_artifact()
    result, task = deploy(artifact, s3, server(tmp_path))
    assert result.uploaded and task["status"] == "done"
    body = api.reinstalls[0]
    c = body["customizations"]
    assert c["imageCheckSum"] == artifact.sha256() == api.downloaded_sha256
    assert "X-Amz-Signature=" in c["imageURL"] or "Signature=" in c["imageURL"]
    assert base64.b64decode(c["configDriveUserData"]).decode() == USER_DATA
    assert (c["hostname"], c["sshKey"]) == ("web1", "ssh-ed25519 AAAAC3Nza golden")
    assert api.sent("GET", "/1.0/auth/time")  # the library synchronises its clock first


def test_second_deploy_uploads_nothing(api: FakeOvh, s3: S3Publisher, tmp_path: Path,
                                       make_artifact: Callable[..., Artifact]) -> None:
    artifact = make_artifact()
    deploy(artifact, s3, server(tmp_path))
    again, _ = deploy(artifact, s3, server(tmp_path))
    assert not again.uploaded


def test_bad_consumer_key(api: FakeOvh, s3: S3Publisher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          make_artifact: Callable[..., Artifact]) -> None:
    monkeypatch.setenv("OVH_CONSUMER_KEY", "revokedConsumerKey")
    with pytest.raises(CredentialsError) as err:
        deploy(make_artifact(), s3, server(tmp_path))
    assert "revokedConsumerKey" not in err.value.message + (err.value.hint or "")
    assert api.reinstalls == []


def test_image_too_large_for_the_ram_is_refused_before_upload(
        api: FakeOvh, s3: S3Publisher, tmp_path: Path, make_artifact: Callable[..., Artifact]) -> None:
    api.ram_gb = 3  # RAM - 3 GiB leaves nothing for the image
    with pytest.raises(PublishError, match="too large for BYOI"):
        deploy(make_artifact(), s3, server(tmp_path))
    assert s3.s3.list_objects_v2(Bucket=s3.settings.bucket).get("KeyCount") == 0


def test_several_disks_without_raid_need_consent(api: FakeOvh, s3: S3Publisher, tmp_path: Path,
                                                 make_artifact: Callable[..., Artifact]) -> None:
    api.disks = 2
    with pytest.raises(PublishError, match="first disk only"):
        deploy(make_artifact(), s3, server(tmp_path))
    _, task = deploy(make_artifact(), s3, server(tmp_path, single_disk_ok=True))
    assert task["status"] == "done"


def test_the_reinstall_names_the_disk_group_byoi_writes_to(
        api: FakeOvh, s3: S3Publisher, tmp_path: Path, make_artifact: Callable[..., Artifact]) -> None:
    # Group 1: two disks, no RAID controller; group 2: one disk. BYOI writes the first disk of one group.
    api.disks = 2
    api.extra_groups = [{"diskGroupId": 2, "numberOfDisks": 1, "diskSize": {"unit": "GB", "value": 480},
                         "diskType": "SSD", "raidController": None}]
    with pytest.raises(PublishError, match="disk group 1 .* 2 disks"):
        deploy(make_artifact(), s3, server(tmp_path))  # the default, the first group, needs consent
    _, task = deploy(make_artifact(), s3, server(tmp_path, disk_group_id=2))
    assert task["status"] == "done"
    assert api.reinstalls[-1]["storage"] == [{"diskGroupId": 2}]


def test_an_unknown_disk_group_is_refused_with_the_known_ones(
        api: FakeOvh, s3: S3Publisher, tmp_path: Path, make_artifact: Callable[..., Artifact]) -> None:
    with pytest.raises(PublishError, match=r"no disk group 7 \(it has: 1\)") as err:
        deploy(make_artifact(), s3, server(tmp_path, disk_group_id=7))
    assert "--ovh-disk-group" in (err.value.hint or "")
    assert s3.s3.list_objects_v2(Bucket=s3.settings.bucket).get("KeyCount") == 0  # refused before the upload


def test_a_disk_group_too_small_for_the_image_disk_is_refused(
        api: FakeOvh, s3: S3Publisher, tmp_path: Path, make_artifact: Callable[..., Artifact]) -> None:
    api.extra_groups = [{"diskGroupId": 2, "numberOfDisks": 1, "diskSize": {"unit": "GB", "value": 2},
                         "raidController": None}]
    with pytest.raises(PublishError, match="4 GiB disk"):  # the artifact's disk_size is 4G
        deploy(make_artifact(), s3, server(tmp_path, disk_group_id=2))


@pytest.mark.parametrize("status", [404, 500, 502, 503])
def test_transient_answers_while_following_the_task_are_waited_out(
        api: FakeOvh, s3: S3Publisher, tmp_path: Path, make_artifact: Callable[..., Artifact],
        status: int) -> None:
    api.task_failures = [status, status, status]
    _, task = deploy(make_artifact(), s3, server(tmp_path))
    assert task["status"] == "done" and api.task_failures == []


def test_a_task_api_failing_for_too_long_ends_the_wait_in_one_line(
        api: FakeOvh, s3: S3Publisher, tmp_path: Path, make_artifact: Callable[..., Artifact],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ovh, "TASK_TRANSIENT_S", 0.2)
    api.task_failures = [500] * 400  # bounded by the fake's request budget too
    with pytest.raises(PublishError, match="kept failing") as err:
        deploy(make_artifact(), s3, server(tmp_path))
    assert "\n" not in err.value.message and "HTTP 500" in err.value.message
    assert api.task_failures  # it stopped polling before the failures ran out


def test_a_credentials_error_while_polling_is_not_retried(
        api: FakeOvh, s3: S3Publisher, tmp_path: Path, make_artifact: Callable[..., Artifact],
        monkeypatch: pytest.MonkeyPatch) -> None:
    api.task_failures = [403]
    polls_before = len(api.sent("GET", f"/1.0/dedicated/server/{SERVER}/task/"))
    with pytest.raises(PublishError):
        deploy(make_artifact(), s3, server(tmp_path))
    assert len(api.sent("GET", f"/1.0/dedicated/server/{SERVER}/task/")) == polls_before + 1


@pytest.mark.parametrize(("mode", "efi_path"), [
    ("uefi", "\\efi\\boot\\bootx64.efi"),  # shim, the removable-media loader
    ("uefi-legacy", "\\efi\\boot\\bootx64.efi"),
    ("legacy", None),
])
def test_efi_bootloader_path_follows_the_servers_boot_mode(
        mode: str, efi_path: str | None, api: FakeOvh, s3: S3Publisher, tmp_path: Path,
        make_artifact: Callable[..., Artifact]) -> None:
    api.boot_mode = mode
    deploy(make_artifact(), s3, server(tmp_path))
    assert api.reinstalls[0]["customizations"].get("efiBootloaderPath") == efi_path


@pytest.mark.parametrize(("mode", "firmware"), [("uefi", ("bios",)), ("legacy", ("uefi", "uefi-secureboot"))])
def test_a_server_whose_boot_mode_the_artifact_cannot_boot_is_refused_before_upload(
        mode: str, firmware: tuple[str, ...], api: FakeOvh, s3: S3Publisher, tmp_path: Path,
        make_artifact: Callable[..., Artifact]) -> None:
    api.boot_mode = mode
    with pytest.raises(PublishError, match=f"boots {mode} and .* boots {' and '.join(firmware)} only"):
        deploy(make_artifact(firmware=firmware), s3, server(tmp_path))
    assert api.reinstalls == []
    assert "Contents" not in boto3.client("s3", endpoint_url=s3.settings.endpoint_url).list_objects_v2(
        Bucket=s3.settings.bucket)


def test_a_cloud_image_is_refused_in_one_line_before_anything_is_sent(
        api: FakeOvh, s3: S3Publisher, tmp_path: Path, make_artifact: Callable[..., Artifact]) -> None:
    with pytest.raises(InputError, match="is a cloud image: its kernel has no AHCI") as caught:
        deploy(make_artifact(kind="cloud"), s3, server(tmp_path))
    assert "\n" not in str(caught.value) and api.requests == []
