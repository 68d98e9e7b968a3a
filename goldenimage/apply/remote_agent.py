"""The whole agent (zipapp) shipped to a host for one session: a private temporary directory (mktemp -d, the
login user's, 0700) with the agent and the session's files, removed at the end. `golden env` and `golden cluster
status` run agent commands an image's own agent leaves out this way (images carry a trimmed agent: Nova's 64 KiB)."""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Sequence
from pathlib import Path

from ..core.errors import GoldenError
from ..core.fs import scratch
from ..render.firstboot_bundle import build_zipapp
from .apply import AGENT, AGENT_TIMEOUT, REMOTE_DIR
from .transport import Transport


@functools.cache
def shipped_agent() -> bytes:
    """The whole agent, built once per process (seconds of work): a rolling change asks every host many times."""
    return build_zipapp()


class RemoteAgent:
    """One host's session with the shipped agent."""

    def __init__(self, name: str, transport: Transport, prefix: str) -> None:
        self.name = name
        self.transport = transport
        self.prefix = prefix
        self.dir = ""

    def open(self, files: dict[str, str] | None = None) -> None:
        prefix = f"{REMOTE_DIR}/{self.prefix}"
        remote = self.transport.run(["mktemp", "-d", prefix + "XXXXXXXX"], root=False).stdout.strip()
        if not remote.startswith(prefix):
            raise GoldenError(f"{self.name}: mktemp gave {remote!r}")
        self.dir = remote
        with scratch(self.prefix.rstrip(".")) as tmp:
            local = Path(tmp)
            (local / AGENT).write_bytes(shipped_agent())
            paths = [local / AGENT]
            for name, text in (files or {}).items():
                path = local / name
                path.touch(mode=0o600)
                path.write_text(text)
                paths.append(path)
            self.transport.put(paths, remote)

    def run(self, *args: str, secrets: Sequence[str] = (), timeout: float = AGENT_TIMEOUT
            ) -> subprocess.CompletedProcess[str]:
        """`golden-firstboot ARGS` as root, from the shipped agent; the process, whatever its exit status."""
        return self.transport.run(["python3", f"{self.dir}/{AGENT}", *args], timeout=timeout, check=False,
                                  secrets=secrets)

    def close(self) -> None:
        if self.dir:
            try:
                self.transport.run(["rm", "-rf", "--", self.dir], check=False, cleanup=True)
            except GoldenError:
                pass
        self.transport.close()
