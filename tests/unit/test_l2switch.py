"""The loopback Ethernet switch: broadcast floods, learned unicast goes to one port, strangers are dropped."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest

from goldenimage.core.errors import GoldenError
from goldenimage.verify.l2switch import LOOPBACK, L2Switch

BROADCAST = b"\xff" * 6
QUIET = 0.5  # how long a port must stay silent to count as "received nothing"


def mac(n: int) -> bytes:
    return bytes([0x52, 0x54, 0x00, 0x10, 0x00, n])


def frame(dst: bytes, src: bytes, payload: bytes = b"hello") -> bytes:
    return dst + src + b"\x08\x00" + payload


@pytest.fixture
def switch() -> Iterator[L2Switch]:
    with L2Switch() as s:
        yield s


@pytest.fixture
def vm_socket(switch: L2Switch) -> Iterator[Callable[[], socket.socket]]:
    """A factory of fake VMs: UDP sockets bound to ports registered on the switch (closed afterwards)."""
    sockets: list[socket.socket] = []

    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((LOOPBACK, switch.add_port()))
        s.settimeout(2)
        sockets.append(s)
        return s

    yield make
    for s in sockets:
        s.close()


def receive(s: socket.socket, timeout: float = 2) -> bytes | None:
    s.settimeout(timeout)
    try:
        return s.recv(65535)
    except TimeoutError:
        return None


def test_broadcast_reaches_every_other_port(switch, vm_socket):
    a, b, c = vm_socket(), vm_socket(), vm_socket()
    a.sendto(frame(BROADCAST, mac(1)), (LOOPBACK, switch.port))
    assert receive(b) == frame(BROADCAST, mac(1))
    assert receive(c) == frame(BROADCAST, mac(1))
    assert receive(a, QUIET) is None  # never back to the sender
    assert switch.forwarded == 2


def test_multicast_floods_like_broadcast(switch, vm_socket):
    a, b = vm_socket(), vm_socket()
    ipv6_all_nodes = bytes.fromhex("333300000001")
    a.sendto(frame(ipv6_all_nodes, mac(1)), (LOOPBACK, switch.port))
    assert receive(b) == frame(ipv6_all_nodes, mac(1))


def test_unknown_unicast_floods_until_learned(switch, vm_socket):
    a, b, c = vm_socket(), vm_socket(), vm_socket()
    a.sendto(frame(mac(2), mac(1)), (LOOPBACK, switch.port))
    assert receive(b) == receive(c) == frame(mac(2), mac(1))


def test_learned_unicast_reaches_only_its_port(switch, vm_socket):
    a, b, c = vm_socket(), vm_socket(), vm_socket()
    b.sendto(frame(BROADCAST, mac(2)), (LOOPBACK, switch.port))  # the switch learns mac 2 on b
    receive(a), receive(c)
    a.sendto(frame(mac(2), mac(1), b"to b"), (LOOPBACK, switch.port))
    assert receive(b) == frame(mac(2), mac(1), b"to b")
    assert receive(c, QUIET) is None
    assert switch.learned() == {"52:54:00:10:00:01": a.getsockname()[1], "52:54:00:10:00:02": b.getsockname()[1]}


def test_a_mac_that_moves_is_learned_on_its_new_port(switch, vm_socket):
    a, b, c = vm_socket(), vm_socket(), vm_socket()
    b.sendto(frame(BROADCAST, mac(2)), (LOOPBACK, switch.port))
    c.sendto(frame(BROADCAST, mac(2)), (LOOPBACK, switch.port))  # the guest behind b now answers from c
    for s in (a, a, b, c):  # the two floods: twice to a, once to each other sender
        assert receive(s) is not None
    a.sendto(frame(mac(2), mac(1)), (LOOPBACK, switch.port))
    assert receive(c) == frame(mac(2), mac(1))
    assert receive(b, QUIET) is None


def test_a_group_source_address_is_never_learned(switch, vm_socket):
    a, b = vm_socket(), vm_socket()
    a.sendto(frame(mac(2), BROADCAST), (LOOPBACK, switch.port))
    assert receive(b) is not None
    assert switch.learned() == {}


def test_frames_from_unregistered_ports_are_dropped(switch, vm_socket):
    a = vm_socket()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.bind((LOOPBACK, 0))
        stranger.sendto(frame(BROADCAST, mac(9)), (LOOPBACK, switch.port))
        assert receive(a, QUIET) is None
    assert switch.dropped == 1 and switch.forwarded == 0 and switch.learned() == {}


def test_runt_frames_are_dropped(switch, vm_socket):
    a, b = vm_socket(), vm_socket()
    a.sendto(b"\xff" * 13, (LOOPBACK, switch.port))
    assert receive(b, QUIET) is None
    assert switch.dropped == 1


def test_ports_added_while_frames_flow_get_them(switch, vm_socket):
    a = vm_socket()
    late = []
    for n in range(20):
        a.sendto(frame(BROADCAST, mac(1), bytes([n])), (LOOPBACK, switch.port))
        late.append(vm_socket())
    a.sendto(frame(BROADCAST, mac(1), b"last"), (LOOPBACK, switch.port))
    assert all(receive(s) is not None for s in late)
    assert switch.running


def test_the_switch_stops_at_its_maximum_lifetime():
    with L2Switch(max_lifetime=0.2) as s:
        deadline = time.monotonic() + 5
        while s.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not s.running


def test_closing_twice_is_harmless():
    s = L2Switch()
    with s:
        pass
    s.close()
    assert not s.running


def test_qemu_arguments_use_loopback_unicast_only(switch):
    args = switch.netdev_args("52:54:00:10:00:0b")
    netdev = args[args.index("-netdev") + 1]
    assert netdev.startswith(f"socket,id=cl0,udp=127.0.0.1:{switch.port},localaddr=127.0.0.1:")
    assert "mcast" not in netdev
    local_port = int(netdev.rsplit(":", 1)[1])
    assert local_port in switch.ports()
    assert args[args.index("-device") + 1] == "virtio-net-pci,netdev=cl0,mac=52:54:00:10:00:0b"


@pytest.mark.parametrize("bad", ["52:54:00:10:00", "52:54:00:10:00:0b,netdev=n0", "not a mac"])
def test_a_malformed_mac_never_reaches_the_qemu_command_line(switch, bad):
    with pytest.raises(GoldenError, match="not a MAC address"):
        switch.netdev_args(bad)
    assert switch.ports() == frozenset()
