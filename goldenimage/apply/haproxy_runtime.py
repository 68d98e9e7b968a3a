"""Drain and put back a server behind HAProxy through its runtime API (the admin socket), the first step of a
rolling upgrade or reboot: no new connection goes to the server, the ones it has end, then it is in maintenance;
afterwards it is made ready again and checked to be UP.

Commands go through a `send(command) -> answer` callable: `unix_socket(path)` on the load balancer itself (and in
the tests, against a real haproxy on 127.0.0.1); a rolling upgrade passes one that runs over SSH.
"""

from __future__ import annotations

import csv
import io
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..core.errors import GoldenError

Send = Callable[[str], str]
#: How long a drain waits for the server's connections to end, and how often it looks.
DRAIN_TIMEOUT_S = 120.0
POLL_S = 0.2
#: How long a server put back may take to be seen UP by its health checks.
UP_TIMEOUT_S = 60.0


class RuntimeApiError(GoldenError):
    """HAProxy refused a runtime command or a server did not reach the state asked for."""


def unix_socket(path: str, timeout: float = 10.0) -> Send:
    """A sender over HAProxy's admin socket (one command per connection, as socat does)."""

    def send(command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    return send


@dataclass(frozen=True)
class ServerState:
    """A server as `show stat` reports it."""

    backend: str
    name: str
    status: str  # UP, DOWN, DRAIN, MAINT, "no check", ...
    sessions: int  # current sessions (scur)
    queued: int  # current queue (qcur)
    total: int  # sessions since start (stot)


def servers(send: Send, backend: str) -> dict[str, ServerState]:
    """Every server of `backend`, from `show stat` (CSV)."""
    text = send("show stat").lstrip("# ")
    found = {}
    for row in csv.DictReader(io.StringIO(text)):
        if row.get("pxname") != backend or row.get("svname") in ("FRONTEND", "BACKEND", None):
            continue
        found[row["svname"]] = ServerState(backend, row["svname"], row.get("status", ""),
                                           int(row.get("scur") or 0), int(row.get("qcur") or 0),
                                           int(row.get("stot") or 0))
    return found


def state(send: Send, backend: str, server: str) -> ServerState:
    found = servers(send, backend).get(server)
    if found is None:
        raise RuntimeApiError(f"haproxy has no server {backend}/{server}", hint="show stat lists them")
    return found


def _set(send: Send, backend: str, server: str, what: str) -> None:
    answer = send(f"set server {backend}/{server} state {what}").strip()
    if answer:  # success is an empty answer
        raise RuntimeApiError(f"haproxy refused 'set server {backend}/{server} state {what}': {answer.splitlines()[0]}")


def drain(send: Send, backend: str, server: str, timeout: float = DRAIN_TIMEOUT_S, poll: float = POLL_S) -> float:
    """Send no new connection to the server, wait (bounded) until its sessions and queue are empty, then put it
    in maintenance; seconds it took. On timeout the server is made ready again and RuntimeApiError raised: a
    drain that does not finish leaves the balancer as it was."""
    state(send, backend, server)  # an unknown server fails before anything changes
    started = time.monotonic()
    _set(send, backend, server, "drain")
    while True:
        now = state(send, backend, server)
        if now.sessions == 0 and now.queued == 0:
            _set(send, backend, server, "maint")
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            _set(send, backend, server, "ready")
            raise RuntimeApiError(f"{backend}/{server} still had {now.sessions} sessions after {timeout:.0f}s of "
                                  "draining: put back in service", hint="a client keeps a long connection open")
        time.sleep(poll)


def enable(send: Send, backend: str, server: str, timeout: float = UP_TIMEOUT_S, poll: float = POLL_S) -> float:
    """Put the server back in service and wait (bounded) until HAProxy sees it UP; seconds it took."""
    started = time.monotonic()
    _set(send, backend, server, "ready")
    while True:
        now = state(send, backend, server)
        if now.status.startswith("UP") or now.status == "no check":
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise RuntimeApiError(f"{backend}/{server} is {now.status} {timeout:.0f}s after it was put back",
                                  hint="its health check fails: look at the node before going on")
        time.sleep(poll)


#: The admin socket Debian's haproxy.cfg opens (level admin); the lb role uses the same.
ADMIN_SOCKET = "/run/haproxy/admin.sock"
#: The exchange `unix_socket` makes, run by a load balancer's own python3 (argv: socket path, command): for a
#: sender over SSH.
REMOTE_EXCHANGE = """import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\\n")
out = []
while True:
    data = s.recv(65536)
    if not data:
        break
    out.append(data)
sys.stdout.write(b"".join(out).decode(errors="replace"))
"""


def remote_socket(run: Callable[[list[str]], str], path: str = ADMIN_SOCKET) -> Send:
    """A sender that runs the exchange on the load balancer itself: run(argv) runs argv there (as root, over
    SSH) and gives its standard output."""

    def send(command: str) -> str:
        return run(["python3", "-c", REMOTE_EXCHANGE, path, command])

    return send
