"""Shared fixtures: a scratch profile tree, and paths into the project."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

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
