"""The private network of cluster tests, on the bare Debian 12 base: two guests whose second NIC is linked to
the loopback switch get their static addresses from network-config (matched by MAC, rendered by cloud-init
for ifupdown), reach each other by ping and TCP, and have no route off that network.

Marked `vm` and `cluster`: the cluster tests of the roles build on exactly this.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from goldenimage.bake.base import build_base
from goldenimage.model.releases import matrix
from goldenimage.render.seed import write_seed_iso
from goldenimage.verify.cluster_vms import ClusterHost, ClusterNet, boot_cluster
from goldenimage.verify.vm import VM, ephemeral_keypair

pytestmark = [pytest.mark.vm, pytest.mark.cluster, pytest.mark.extended]

RELEASE = matrix().get(12)
PREFIX = 24
#: name: (address on the cluster network, its last MAC byte)
HOSTS = {"node1": ("10.10.0.11", 0x11), "node2": ("10.10.0.12", 0x12)}
HTTP_PORT = 8080
SSH_TIMEOUT = 900  # two guests under TCG on two cores
POLL = 2


def cluster_mac(n: int) -> str:
    return f"52:54:00:10:00:{n:02x}"


def uplink_mac(n: int) -> str:
    return f"52:54:00:20:00:{n:02x}"


def network_config(n: int, address: str) -> dict:
    """cloud-init network config v2: the user NIC on DHCP (SSH), the cluster NIC static, no gateway, no DNS."""
    return {
        "version": 2,
        "ethernets": {
            "eth0": {"match": {"macaddress": uplink_mac(n)}, "set-name": "eth0", "dhcp4": True},
            "eth1": {"match": {"macaddress": cluster_mac(n)}, "set-name": "eth1", "addresses": [f"{address}/{PREFIX}"]},
        },
    }


def seed(directory: Path, name: str, n: int, address: str, public_key: str) -> Path:
    user_data = "#cloud-config\n" + yaml.safe_dump({"ssh_authorized_keys": [public_key]})
    meta_data = yaml.safe_dump({"instance-id": f"i-{name}-{time.time_ns()}", "local-hostname": name})
    return write_seed_iso(
        directory / f"{name}-seed.iso",
        user_data,
        meta_data,
        yaml.safe_dump(network_config(n, address), sort_keys=False),
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterNet]:
    """Both guests booted once for the module, cloud-init finished on each."""
    base = build_base(RELEASE)
    work = tmp_path_factory.mktemp("cluster-network")
    key = ephemeral_keypair(work)
    hosts = [
        ClusterHost(name, base.path, seed(work, name, n, address, key.public), cluster_mac(n), uplink_mac(n))
        for name, (address, n) in HOSTS.items()
    ]
    with boot_cluster(hosts, key, work, ssh_timeout=SSH_TIMEOUT, status_wait_ok=RELEASE.status_wait_ok) as net:
        for name, seconds in net.ssh_seconds.items():
            print(f"\n{name}: SSH after {seconds:.0f}s ({net[name].accel})")
        for vm in net.vms.values():
            vm.wait_cloud_init(timeout=SSH_TIMEOUT)
            print(f"{vm.name}: cloud-init done after {time.monotonic() - vm.started_at:.0f}s")
        yield net


def address_of(vm: VM) -> str:
    return HOSTS[vm.name][0]


def peer_of(cluster: ClusterNet, vm: VM) -> VM:
    return next(other for other in cluster.vms.values() if other is not vm)


def link(vm: VM, device: str) -> tuple[str, list[str]]:
    """The MAC of `device` in the guest and its IPv4 addresses with their prefix."""
    info = json.loads(vm.ssh(f"ip -j addr show dev {device}").stdout)[0]
    return info["address"], [f"{a['local']}/{a['prefixlen']}" for a in info["addr_info"] if a["family"] == "inet"]


def test_each_guest_has_its_static_address_on_the_cluster_nic(cluster):
    for vm in cluster.vms.values():
        n = HOSTS[vm.name][1]
        assert link(vm, "eth1") == (cluster_mac(n), [f"{address_of(vm)}/{PREFIX}"])
        # the user NIC kept DHCP (SSH comes in through it) and never got a cluster address
        assert link(vm, "eth0") == (uplink_mac(n), ["10.0.2.15/24"])  # QEMU user-mode DHCP's first lease
        eni = vm.ssh("cat /etc/network/interfaces.d/50-cloud-init").stdout
        assert "iface eth0 inet dhcp" in eni and "iface eth1 inet static" in eni, eni


def test_guests_ping_each_other_over_the_switch(cluster):
    for vm in cluster.vms.values():
        peer = peer_of(cluster, vm)
        ping = vm.ssh(f"ping -c 3 -W 5 -I eth1 {address_of(peer)}", check=False, timeout=60)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        # the peer's address resolved to the peer's cluster MAC: the frames crossed the switch
        neigh = json.loads(vm.ssh(f"ip -j neigh show {address_of(peer)} dev eth1").stdout)
        assert [entry["lladdr"] for entry in neigh] == [cluster_mac(HOSTS[peer.name][1])]


def test_tcp_from_one_guest_reaches_a_server_on_the_other(cluster):
    client, server = cluster["node1"], cluster["node2"]
    marker = f"golden-{time.time_ns()}"
    server.ssh(f"sudo mkdir -p /run/golden-http && echo {marker} | sudo tee /run/golden-http/marker >/dev/null")
    # bound to the cluster address only, and stopped by systemd after a while whatever happens to the test
    server.ssh(
        [
            "sudo",
            "systemd-run",
            "--unit=golden-http",
            "--property=RuntimeMaxSec=600",
            "python3",
            "-m",
            "http.server",
            str(HTTP_PORT),
            "--bind",
            address_of(server),
            "--directory",
            "/run/golden-http",
        ]
    )
    try:
        listening = f"ss -Hltn 'sport = :{HTTP_PORT}' | grep -q {address_of(server)}"
        deadline = time.monotonic() + 60
        while server.ssh(listening, check=False).returncode != 0 and time.monotonic() < deadline:
            time.sleep(POLL)
        url = f"http://{address_of(server)}:{HTTP_PORT}/marker"
        fetch = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=20).read().decode().strip())"
        assert client.ssh(["python3", "-c", fetch], timeout=60).stdout.strip() == marker
        # the server saw the client's cluster address: the connection went over the private network
        log = server.ssh("sudo journalctl -u golden-http --no-pager -o cat").stdout
        assert f"{address_of(client)} - - " in log and "GET /marker" in log, log
    finally:
        server.ssh("sudo systemctl stop golden-http", check=False)


def test_guests_have_no_route_off_the_cluster_network(cluster):
    for vm in cluster.vms.values():
        routes = json.loads(vm.ssh("ip -j -4 route show dev eth1").stdout)
        assert [(r["dst"], r.get("gateway"), r.get("scope")) for r in routes] == [("10.10.0.0/24", None, "link")]
        routes6 = json.loads(vm.ssh("ip -j -6 route show dev eth1").stdout)
        assert all(r["dst"].startswith("fe80::") for r in routes6), routes6  # link-local only
        # no default route at all: the cluster NIC has no gateway, and QEMU's restricted user network
        # hands out no router, so nothing beyond the two local networks is even addressable
        assert json.loads(vm.ssh("ip -j -4 route show default").stdout) == []
        # `ip route get` only asks the kernel: no packet is sent
        off = vm.ssh("ip -j -4 route get 10.10.1.1", check=False)
        assert off.returncode != 0 and "unreachable" in off.stderr, off.stdout
        on = json.loads(vm.ssh(f"ip -j -4 route get {address_of(peer_of(cluster, vm))}").stdout)[0]
        assert on["dev"] == "eth1" and "gateway" not in on
        # and no name server from the cluster network (the restricted user network gives none either)
        assert "nameserver" not in vm.ssh("cat /etc/resolv.conf 2>/dev/null || true").stdout


def test_only_the_cluster_nics_are_on_the_switch(cluster):
    learned = cluster.switch.learned()
    assert set(learned) == {cluster_mac(n) for _, n in HOSTS.values()}, learned
    assert len(set(learned.values())) == len(HOSTS)  # each MAC behind its own VM port
    assert cluster.switch.forwarded > 0
    assert cluster.switch.running
