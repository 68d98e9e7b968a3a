"""OpenStack target through openstacksdk against a local Keystone v3 + Glance v2 + Nova."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from goldenimage.bake.store import Artifact
from goldenimage.publish import base
from goldenimage.publish.base import (
    ChecksumMismatch,
    CredentialsError,
    InterruptedUpload,
    PublishError,
    QuotaError,
    publish,
)
from goldenimage.publish.openstack import OpenStackPublisher, OpenStackSettings

from .fakes.openstack import TOKEN, FakeOpenStack

# openstacksdk warns about its own internals (influxdb, service_type): nothing this code can change.
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")


@pytest.fixture
def cloud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenStack]:
    monkeypatch.setattr(base, "RETRY_BACKOFF_S", 0.01)
    with FakeOpenStack() as fake:
        yield fake
        assert fake.errors == [], fake.errors


def clouds_yaml(tmp_path: Path, fake: FakeOpenStack, password: str) -> Path:
    path = tmp_path / "clouds.yaml"
    auth = {"auth_url": f"{fake.url}/identity/v3", "username": "demo", "password": password,
            "project_name": "demo", "user_domain_name": "Default", "project_domain_name": "Default"}
    path.write_text(yaml.safe_dump({"clouds": {"fake": {"auth": auth, "region_name": "RegionOne",
                                                        "identity_api_version": 3}}}))
    return path


@pytest.fixture
def glance(cloud: FakeOpenStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> OpenStackPublisher:
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds_yaml(tmp_path, cloud, cloud.password)))
    for name in ("OS_AUTH_URL", "OS_PASSWORD", "OS_USERNAME", "OS_PROJECT_NAME", "OS_CLOUD", "OS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return OpenStackPublisher(OpenStackSettings(cloud="fake"))


def test_upload_sends_what_glance_documents(glance: OpenStackPublisher, cloud: FakeOpenStack,
                                            make_artifact: Callable[..., Artifact]) -> None:
    artifact = make_artifact()
    result = publish(glance, artifact)
    assert result.uploaded
    auth = cloud.sent("POST", "/identity/v3/auth/tokens")[0].json()["auth"]
    assert auth["identity"]["password"]["user"] == {"name": "demo", "password": cloud.password,
                                                    "domain": {"name": "Default"}}
    create = cloud.sent("POST", "/image/v2/images")[0]
    assert create.headers["X-Auth-Token"] == TOKEN
    body = create.json()
    assert body["name"] == artifact.name
    assert (body["disk_format"], body["container_format"]) == ("qcow2", "bare")
    assert set(body["tags"]) == {"golden", "golden-profile-web", f"golden-key-{artifact.key}"}
    assert body["hw_disk_bus"] == "scsi" and body["hw_vif_model"] == "virtio"
    assert body["hw_qemu_guest_agent"] == "yes" and "hw_firmware_type" not in body  # BIOS image
    assert (body["os_distro"], body["os_version"]) == ("debian", "12")
    assert (body["min_disk"], body["min_ram"]) == (4, 512)
    assert body["golden_sha256"] == artifact.sha256()
    upload = cloud.sent("PUT", "/image/v2/images/")[0]
    assert upload.path == f"/image/v2/images/{result.image.id}/file"
    assert upload.headers["Content-Type"] == "application/octet-stream"
    assert upload.body == artifact.qcow2.read_bytes()
    assert cloud.images[result.image.id]["status"] == "active"


def test_uefi_when_asked_sets_the_firmware_and_q35(glance: OpenStackPublisher, cloud: FakeOpenStack,
                                                  make_artifact: Callable[..., Artifact]) -> None:
    uefi = OpenStackPublisher(OpenStackSettings(cloud="fake", uefi=True))
    publish(uefi, make_artifact())
    body = cloud.sent("POST", "/image/v2/images")[0].json()
    assert (body["hw_firmware_type"], body["hw_machine_type"]) == ("uefi", "q35")


def test_uefi_for_a_bios_only_artifact_is_refused_before_any_image(glance: OpenStackPublisher, cloud: FakeOpenStack,
                                                                   make_artifact: Callable[..., Artifact]) -> None:
    uefi = OpenStackPublisher(OpenStackSettings(cloud="fake", uefi=True))
    with pytest.raises(PublishError, match="boots bios only: OpenStack"):
        publish(uefi, make_artifact(firmware=("bios",)))
    assert cloud.sent("POST", "/image/v2/images") == [] and cloud.images == {}


def test_second_publish_uploads_nothing(glance: OpenStackPublisher, cloud: FakeOpenStack,
                                        make_artifact: Callable[..., Artifact]) -> None:
    artifact = make_artifact()
    first = publish(glance, artifact)
    second = publish(glance, artifact)
    assert not second.uploaded and second.image.id == first.image.id
    assert len(cloud.sent("PUT")) == 1 and len(cloud.sent("POST", "/image")) == 1


def test_bad_credentials(cloud: FakeOpenStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         make_artifact: Callable[..., Artifact]) -> None:
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds_yaml(tmp_path, cloud, "wrong-password")))
    with pytest.raises(CredentialsError) as err:
        publish(OpenStackPublisher(OpenStackSettings(cloud="fake")), make_artifact())
    assert "refused the credentials" in err.value.message and "clouds.yaml" in (err.value.hint or "")
    assert "wrong-password" not in err.value.message + (err.value.hint or "")
    assert cloud.images == {}


def test_quota_exceeded_leaves_no_image(glance: OpenStackPublisher, cloud: FakeOpenStack,
                                        make_artifact: Callable[..., Artifact]) -> None:
    cloud.quota_bytes = 1024 * 1024
    with pytest.raises(QuotaError, match="HTTP 413"):
        publish(glance, make_artifact())
    assert cloud.images == {}  # the queued image was deleted


def test_interrupted_upload_is_retried(glance: OpenStackPublisher, cloud: FakeOpenStack,
                                       make_artifact: Callable[..., Artifact]) -> None:
    cloud.drop_uploads = 1
    result = publish(glance, make_artifact())
    assert cloud.drop_uploads == 0  # the first PUT really broke
    assert cloud.images[result.image.id]["status"] == "active"
    assert len(cloud.images) == 1


def test_upload_interrupted_beyond_retries_leaves_no_image(glance: OpenStackPublisher, cloud: FakeOpenStack,
                                                           make_artifact: Callable[..., Artifact]) -> None:
    cloud.drop_uploads = 10
    with pytest.raises(InterruptedUpload):
        publish(glance, make_artifact())
    assert cloud.images == {}


def test_checksum_mismatch_deletes_the_image(glance: OpenStackPublisher, cloud: FakeOpenStack,
                                             make_artifact: Callable[..., Artifact]) -> None:
    cloud.wrong_checksum = True
    with pytest.raises(ChecksumMismatch, match="os_hash_value"):
        publish(glance, make_artifact())
    assert cloud.images == {}


def test_keep_skips_an_image_a_server_boots_from(glance: OpenStackPublisher, cloud: FakeOpenStack,
                                                 make_artifact: Callable[..., Artifact]) -> None:
    olds = [publish(glance, make_artifact(key=f"{i:016x}")).image for i in range(1, 4)]
    cloud.servers.append({"id": "srv-1", "name": "web1", "status": "ACTIVE", "image": {"id": olds[0].id}})
    result = publish(glance, make_artifact(key="e" * 16), keep=1)
    assert result.kept_in_use == (olds[0].id,)
    assert set(result.removed) == {olds[1].id, olds[2].id}
    assert set(cloud.images) == {olds[0].id, result.image.id}
