"""A private Ethernet segment for multi-VM tests: a learning switch on 127.0.0.1 between QEMU's unicast
UDP socket links (`-netdev socket,udp=...,localaddr=...`).

Each VM sends its frames to the switch's port and receives on its own; the switch forwards unicast to the
port that sent from that MAC, and broadcast, multicast or unknown destinations to every other port.
Nothing leaves 127.0.0.1, and only datagrams from registered VM ports are switched.
"""

from __future__ import annotations

import re
import select
import socket
import threading
import time
from types import TracebackType

from ..core.errors import GoldenError
from ..core.log import log

LOOPBACK = "127.0.0.1"
MAX_FRAME = 65535
#: The switch stops by itself after this long, whatever happens to the test that started it.
MAX_LIFETIME = 3 * 3600
#: How often the switch thread looks at its stop flag and deadline when no frame arrives.
POLL_INTERVAL = 0.5
ETHERNET_HEADER = 14
#: A MAC as QEMU takes it; checked because it is pasted into a comma-separated QEMU option.
MAC_PATTERN = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$", re.IGNORECASE)
NETDEV_ID_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def format_mac(mac: bytes) -> str:
    """A MAC as colon-separated lower-case hex."""
    return ":".join(f"{b:02x}" for b in mac)


class L2Switch:
    """A learning Ethernet switch over UDP on loopback; use as a context manager.

    Counters for tests: `forwarded` (datagrams sent to VM ports), `dropped` (from strangers, runts, or
    sends that failed); `learned()` is the MAC table.
    """

    def __init__(self, max_lifetime: float = MAX_LIFETIME) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((LOOPBACK, 0))
        self.port = int(self._sock.getsockname()[1])
        # the test thread adds ports while the switch thread floods to them: one lock for both tables
        self._lock = threading.Lock()
        self._ports: set[int] = set()
        self._macs: dict[bytes, int] = {}
        self._stop = threading.Event()
        # close() writes here to wake the switch thread at once instead of after its next poll
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._deadline = time.monotonic() + max_lifetime
        self._thread = threading.Thread(target=self._serve, name="l2switch", daemon=True)
        self.forwarded = 0
        self.dropped = 0

    def __enter__(self) -> L2Switch:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the switch thread and close its socket; safe to call twice."""
        self._stop.set()
        if self._thread.is_alive():
            self._wake_writer.send(b"\0")
            self._thread.join(timeout=5 * POLL_INTERVAL)
        for sock in (self._sock, self._wake_reader, self._wake_writer):
            sock.close()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def add_port(self) -> int:
        """Register a new VM-side UDP port on 127.0.0.1 and return it."""
        # free now, bound by QEMU a moment later; if someone takes it meanwhile, QEMU fails to start
        port = _free_udp_port()
        with self._lock:
            self._ports.add(port)
        return port

    def ports(self) -> frozenset[int]:
        """The registered VM-side ports."""
        with self._lock:
            return frozenset(self._ports)

    def learned(self) -> dict[str, int]:
        """The MAC table: each source MAC seen (as aa:bb:...) and the VM port it came from."""
        with self._lock:
            return {format_mac(mac): port for mac, port in self._macs.items()}

    def netdev_args(self, mac: str, netdev_id: str = "cl0") -> list[str]:
        """QEMU arguments for a NIC on this segment with the given MAC (registers a new port)."""
        if not MAC_PATTERN.match(mac):
            raise GoldenError(f"{mac!r} is not a MAC address", hint="write it as 52:54:00:10:00:0b")
        if not NETDEV_ID_PATTERN.match(netdev_id):
            raise GoldenError(f"{netdev_id!r} is not a QEMU netdev id", hint="use letters, digits, - and _")
        port = self.add_port()
        return [
            "-netdev", f"socket,id={netdev_id},udp={LOOPBACK}:{self.port},localaddr={LOOPBACK}:{port}",
            "-device", f"virtio-net-pci,netdev={netdev_id},mac={mac}",
        ]  # fmt: skip

    def _serve(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            ready, _, _ = select.select([self._sock, self._wake_reader], [], [], POLL_INTERVAL)
            if self._sock not in ready:
                continue
            try:
                frame, (host, port) = self._sock.recvfrom(MAX_FRAME)
            except OSError:
                return  # closed under us
            self._switch(frame, host, port)
        if not self._stop.is_set():
            log.warning("l2switch on %s:%d stopped: its maximum lifetime has passed", LOOPBACK, self.port)

    def _switch(self, frame: bytes, host: str, port: int) -> None:
        with self._lock:
            if host != LOOPBACK or port not in self._ports or len(frame) < ETHERNET_HEADER:
                self.dropped += 1
                return
            dst, src = frame[0:6], frame[6:12]
            if not src[0] & 1:  # a source MAC is never a group address
                self._macs[src] = port
            target = self._macs.get(dst)
            if dst[0] & 1 or target is None:
                targets = [p for p in self._ports if p != port]
            elif target == port:
                return  # both ends behind the same port: nothing to do, as a real switch
            else:
                targets = [target]
        for target_port in targets:
            try:
                self._sock.sendto(frame, (LOOPBACK, target_port))
                self.forwarded += 1
            except OSError:
                self.dropped += 1
