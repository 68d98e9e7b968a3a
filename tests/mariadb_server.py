"""A throwaway mariadbd on this host, for the integration tests and bench/backup: its own data directory and
socket in a temporary folder, no network, root by socket authentication."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


class Server:
    """One mariadbd. `install` makes a new data directory first (mariadb-install-db); `binlog` is the
    `--log-bin` value (a name in the datadir, or a path), none for a server without a binary log; `options`, more
    of mariadbd's options (encryption at rest, say)."""

    def __init__(self, root: Path, datadir: Path | None = None, *, install: bool = True, binlog: str | None = None,
                 server_id: int = 1, buffer_pool: str = "16M", client: list[str] | None = None,
                 options: tuple[str, ...] = ()) -> None:
        self.root, self.data, self.socket = root, datadir or root / "data", root / "mysqld.sock"
        self._client = client or ["mysql", "--user=root", "--batch", "--skip-column-names"]
        if install:
            subprocess.run(["mariadb-install-db", "--no-defaults", "--user=root", f"--datadir={self.data}",
                            "--auth-root-authentication-method=socket", "--skip-test-db"],
                           check=True, capture_output=True, timeout=300)
        argv = ["mariadbd", "--no-defaults", "--user=root", f"--datadir={self.data}", f"--socket={self.socket}",
                "--skip-networking", f"--pid-file={root / 'mysqld.pid'}", f"--log-error={root / 'error.log'}",
                f"--server-id={server_id}", f"--innodb-buffer-pool-size={buffer_pool}", "--binlog-format=ROW"]
        self.proc = subprocess.Popen(argv + ([f"--log-bin={binlog}"] if binlog else []) + list(options))
        deadline = time.monotonic() + 120
        while self.sql("SELECT 1;", check=False).returncode != 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"mariadbd did not start: {(root / 'error.log').read_text()[-2000:]}")
            time.sleep(0.3)

    def client(self) -> list[str]:
        return [self._client[0], f"--socket={self.socket}"] + self._client[1:]

    def sql(self, statements: str, check: bool = True, extra: tuple[str, ...] = (),
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.client() + list(extra), input=statements, text=True, capture_output=True,
                              check=check, timeout=timeout)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """As a lost host: no shutdown, nothing flushed."""
        self.proc.kill()
        self.proc.wait()
