"""A private Ethernet segment for multi-VM tests: a learning switch on 127.0.0.1 between QEMU's unicast
UDP socket links (`-netdev socket,udp=...,localaddr=...`).

Each VM sends its frames to the switch's port and receives on its own; the switch forwards unicast to the
port that sent from that MAC, and broadcast, multicast or unknown destinations to every other port.
Nothing leaves 127.0.0.1, and only datagrams from registered VM ports are switched.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from types import TracebackType

LOOPBACK = "127.0.0.1"
MAX_FRAME = 65535
#: The switch stops by itself after this long, whatever happens to the test that started it.
MAX_LIFETIME = 3 * 3600


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


class L2Switch:
    """A learning Ethernet switch over UDP on loopback; use as a context manager."""

    def __init__(self, max_lifetime: float = MAX_LIFETIME) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((LOOPBACK, 0))
        self.port = int(self._sock.getsockname()[1])
        self._ports: set[int] = set()
        self._macs: dict[bytes, int] = {}
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_lifetime
        self._thread = threading.Thread(target=self._serve, name="l2switch", daemon=True)
        self.forwarded = 0
        self.dropped = 0

    def __enter__(self) -> L2Switch:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._sock.close()

    def add_port(self) -> int:
        """Register a new VM-side UDP port on 127.0.0.1 and return it."""
        port = _free_udp_port()
        self._ports.add(port)
        return port

    def netdev_args(self, mac: str, netdev_id: str = "cl0") -> list[str]:
        """QEMU arguments for a NIC on this segment with the given MAC."""
        port = self.add_port()
        return [
            "-netdev", f"socket,id={netdev_id},udp={LOOPBACK}:{self.port},localaddr={LOOPBACK}:{port}",
            "-device", f"virtio-net-pci,netdev={netdev_id},mac={mac}",
        ]  # fmt: skip

    def _serve(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            ready, _, _ = select.select([self._sock], [], [], 0.5)
            if not ready:
                continue
            try:
                frame, (host, port) = self._sock.recvfrom(MAX_FRAME)
            except OSError:
                return
            self._switch(frame, host, port)

    def _switch(self, frame: bytes, host: str, port: int) -> None:
        if host != LOOPBACK or port not in self._ports or len(frame) < 14:
            self.dropped += 1
            return
        dst, src = frame[0:6], frame[6:12]
        if not src[0] & 1:  # a source MAC is never a group address
            self._macs[src] = port
        target = self._macs.get(dst)
        if dst[0] & 1 or target is None:
            targets = [p for p in self._ports if p != port]
        elif target == port:
            return
        else:
            targets = [target]
        for target_port in targets:
            try:
                self._sock.sendto(frame, (LOOPBACK, target_port))
                self.forwarded += 1
            except OSError:
                self.dropped += 1
