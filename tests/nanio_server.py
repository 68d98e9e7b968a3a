"""nanio, an S3-protocol server that verifies Signature V4 (PyPI, the test extra), in its own process on
127.0.0.1: for the tests (the `sigv4_s3` fixture) and bench/backup."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from goldenimage.verify.vm import free_port


@dataclass(frozen=True)
class SigV4Server:
    endpoint: str
    access_key: str
    secret_key: str
    #: Where nanio keeps the objects (what a test scans for plaintext).
    data: Path | None = None


@contextmanager
def nanio_server(data: Path) -> Iterator[SigV4Server]:
    """nanio serving `data`/store on a free loopback port with throwaway keys, until the block ends."""
    server = SigV4Server("", "golden-nanio", "nanio-secret-" + os.urandom(8).hex())
    port = free_port()
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
        yield SigV4Server(f"http://127.0.0.1:{port}", server.access_key, server.secret_key, data / "store")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
