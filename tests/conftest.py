"""Shared fixtures: a scratch profile tree, and paths into the project."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nanio_server import SigV4Server, nanio_server

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
TEST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGoldenTestKeyGoldenTestKeyGoldenTestKey00 golden-test"


@pytest.fixture
def write_yaml(tmp_path: Path):
    """Write a YAML file under tmp_path and return its path."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return write


@pytest.fixture
def dead_pid() -> int:
    """The process id of a process that has ended (a bake or a command killed outright, as far as its work
    directory's name can tell)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    return int(proc.stdout)


# S3-protocol servers on 127.0.0.1 for any test: moto's, and nanio (verifies Signature V4).
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


@pytest.fixture(scope="session")
def sigv4_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SigV4Server]:
    """nanio (PyPI, the test extra) in its own process on 127.0.0.1: it refuses any request, presigned URL
    included, whose Signature V4 does not verify, and anonymous or SigV2 requests."""
    with nanio_server(tmp_path_factory.mktemp("nanio")) as server:
        yield server
