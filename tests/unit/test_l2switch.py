"""The loopback Ethernet switch: broadcast floods, learned unicast goes to one port, strangers are dropped."""

from __future__ import annotations

import socket

import pytest

from goldenimage.verify.l2switch import LOOPBACK, L2Switch

BROADCAST = b"\xff" * 6


def mac(n: int) -> bytes:
    return bytes([0x52, 0x54, 0x00, 0x10, 0x00, n])


def frame(dst: bytes, src: bytes, payload: bytes = b"hello") -> bytes:
    return dst + src + b"\x08\x00" + payload


@pytest.fixture
def switch():
    with L2Switch() as s:
        yield s


def vm_socket(switch: L2Switch) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOOPBACK, switch.add_port()))
    s.settimeout(2)
    return s


def receive(s: socket.socket) -> bytes | None:
    try:
        return s.recv(65535)
    except TimeoutError:
        return None


def test_broadcast_reaches_every_other_port(switch):
    a, b, c = (vm_socket(switch) for _ in range(3))
    a.sendto(frame(BROADCAST, mac(1)), (LOOPBACK, switch.port))
    assert receive(b) == frame(BROADCAST, mac(1))
    assert receive(c) == frame(BROADCAST, mac(1))
    a.settimeout(0.5)
    assert receive(a) is None  # never back to the sender


def test_learned_unicast_reaches_only_its_port(switch):
    a, b, c = (vm_socket(switch) for _ in range(3))
    b.sendto(frame(BROADCAST, mac(2)), (LOOPBACK, switch.port))  # the switch learns mac 2 on b
    receive(a), receive(c)
    a.sendto(frame(mac(2), mac(1), b"to b"), (LOOPBACK, switch.port))
    assert receive(b) == frame(mac(2), mac(1), b"to b")
    c.settimeout(0.5)
    assert receive(c) is None


def test_frames_from_unregistered_ports_are_dropped(switch):
    a = vm_socket(switch)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind((LOOPBACK, 0))
    stranger.sendto(frame(BROADCAST, mac(9)), (LOOPBACK, switch.port))
    a.settimeout(0.5)
    assert receive(a) is None
    stranger.close()


def test_qemu_arguments_use_loopback_unicast_only(switch):
    args = switch.netdev_args("52:54:00:10:00:0b")
    netdev = args[args.index("-netdev") + 1]
    assert netdev.startswith("socket,id=cl0,udp=127.0.0.1:") and "localaddr=127.0.0.1:" in netdev
    assert "mcast" not in netdev
    assert "mac=52:54:00:10:00:0b" in args[args.index("-device") + 1]
