"""Publish fixtures: small real qcow2 artifacts in a scratch store, and S3 on moto's server and on nanio, an
independent S3 server that verifies every request's Signature V4 (127.0.0.1 only)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (a free port), with throwaway credentials in the environment."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


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


@dataclass(frozen=True)
class SigV4Server:
    endpoint: str
    access_key: str
    secret_key: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def sigv4_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SigV4Server]:
    """nanio (PyPI, the test extra) in its own process on 127.0.0.1: it refuses any request, presigned URL
    included, whose Signature V4 does not verify, and anonymous or SigV2 requests."""
    server = SigV4Server("", "golden-nanio", "nanio-secret-" + os.urandom(8).hex())
    data = tmp_path_factory.mktemp("nanio")
    port = _free_port()
    env = {**os.environ, "NANIO_ACCESS_KEY": server.access_key, "NANIO_SECRET_KEY": server.secret_key}
    log = (data / "nanio.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "nanio", "serve", "--data-dir", str(data / "store"),
                             "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):  # at most 20 s for the server to listen
            if proc.poll() is not None:
                raise RuntimeError(f"nanio exited {proc.returncode}: {(data / 'nanio.log').read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("nanio did not listen within 20 s")
        yield SigV4Server(f"http://127.0.0.1:{port}", server.access_key, server.secret_key)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
