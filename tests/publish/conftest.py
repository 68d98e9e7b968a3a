"""Publish fixtures: small real qcow2 artifacts in a scratch store, and S3 on moto's server and on nanio, an
independent S3 server that verifies every request's Signature V4 (127.0.0.1 only)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from goldenimage.bake import store
from goldenimage.bake.store import Artifact
from goldenimage.core.run import run

SIZE_MIB = 12  # three S3 parts of 5 MiB: enough to interrupt and resume a multipart upload


@pytest.fixture(scope="session")
def raw_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random bytes as a raw disk: converted to qcow2 they stay incompressible, so the qcow2 is a few MiB."""
    path = tmp_path_factory.mktemp("raw") / "disk.raw"
    path.write_bytes(os.urandom(SIZE_MIB * 1024 * 1024))
    return path


@pytest.fixture
def make_artifact(tmp_path: Path, raw_disk: Path) -> Callable[..., Artifact]:
    """Write a complete artifact (qcow2 made by qemu-img, .sha256, manifest) into a scratch images/."""
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)

    def make(profile: str = "web", key: str = "0123456789abcdef", date: str = "20261126",
             firmware: tuple[str, ...] = ("bios", "uefi", "uefi-secureboot"), kind: str = "cloud") -> Artifact:
        qcow2 = tmp_path / f"{key}.qcow2"
        run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw_disk, qcow2])
        # Each key gets different bytes, as different bakes would.
        with qcow2.open("ab") as f:
            f.write(key.encode() * 64)
        manifest = {
            "format": 1,
            "content_key": key,
            "profile": {"profile": profile, "roles": [profile], "debian": 12, "codename": "bookworm",
                        "disk_size": "4G", "content": {"system": {}}},
            "release": {"number": 12, "codename": "bookworm"},
            "packages": {"cloud-init": "22.4.2"},
            "firmware": list(firmware),
            "kind": kind,
        }
        middle = "" if kind == "cloud" else f"-{kind}"
        return store.commit(qcow2, manifest, f"{profile}-debian12{middle}-{date}-{key}", images)

    return make


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """boto3's chain finds these and nothing from the developer's ~/.aws."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
