"""The cluster helper, without booting: each guest gets SSH on its user NIC and a second NIC on the switch;
bad hosts are refused before QEMU starts; an error while booting leaves no guest and no switch running."""

from __future__ import annotations

from pathlib import Path

import pytest

from goldenimage.core.errors import GoldenError
from goldenimage.verify import cluster_vms
from goldenimage.verify.cluster_vms import ClusterHost, ClusterNet, boot_cluster


def host(name: str = "node1", mac: str = "52:54:00:10:00:11", uplink: str | None = "52:54:00:20:00:11") -> ClusterHost:
    return ClusterHost(name, Path("/nonexistent/base.qcow2"), Path("/nonexistent/seed.iso"), mac, uplink)


def option(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_a_guest_has_the_user_nic_first_and_the_cluster_nic_on_the_switch(tmp_path):
    with ClusterNet(tmp_path / "key", tmp_path) as net:
        vm = net.machine(host())
        vm.ssh_port, vm.accel = 2222, "tcg"
        argv = vm.qemu_argv()
        user, cluster = option(argv, "-netdev")
        assert user.startswith("user,id=n0,") and "restrict=on" in user
        assert cluster == (
            f"socket,id=cl0,udp=127.0.0.1:{net.switch.port},localaddr=127.0.0.1:{sorted(net.switch.ports())[0]}"
        )
        assert option(argv, "-device") == [
            "virtio-net-pci,netdev=n0,mac=52:54:00:20:00:11",
            "virtio-net-pci,netdev=cl0,mac=52:54:00:10:00:11",
        ]
        assert vm.workdir == tmp_path / "node1" and vm.cpus == 1
        assert not any("mcast" in a for a in argv)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (host(name="Node_1"), "not a host name"),
        (host(mac="52:54:00:10:00"), "not a MAC address"),
        (host(mac="52:54:00:10:00:11", uplink="52:54:00:10:00:11"), "already in use"),
    ],
)
def test_a_bad_host_is_refused_before_any_port_is_taken(tmp_path, bad, message):
    with ClusterNet(tmp_path / "key", tmp_path) as net, pytest.raises(GoldenError, match=message):
        net.machine(bad)
    assert net.switch.ports() == frozenset()


def test_a_mac_or_name_already_on_the_network_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster_vms.VM, "start", lambda self: self)
    with ClusterNet(tmp_path / "key", tmp_path) as net:
        net.boot(host())
        with pytest.raises(GoldenError, match="already on the cluster network"):
            net.boot(host(mac="52:54:00:10:00:99", uplink=None))
        with pytest.raises(GoldenError, match="MAC 52:54:00:10:00:11 is already in use"):
            net.boot(host(name="node2", mac="52:54:00:10:00:11".upper(), uplink=None))


def test_booting_outside_the_context_manager_is_refused(tmp_path):
    net = ClusterNet(tmp_path / "key", tmp_path)
    with pytest.raises(GoldenError, match="not running"):
        net.boot(host())
    net.close()


def test_an_error_while_booting_stops_every_guest_and_the_switch(tmp_path, monkeypatch):
    started: list[str] = []
    stopped: list[str] = []

    def start(self):
        if started:
            raise GoldenError(f"{self.name}: QEMU exited")
        started.append(self.name)
        return self

    monkeypatch.setattr(cluster_vms.VM, "start", start)
    monkeypatch.setattr(cluster_vms.VM, "stop", lambda self: stopped.append(self.name))
    nets: list[ClusterNet] = []
    enter = ClusterNet.__enter__

    def remember(self: ClusterNet) -> ClusterNet:
        nets.append(self)
        return enter(self)

    monkeypatch.setattr(ClusterNet, "__enter__", remember)
    with pytest.raises(GoldenError, match="node2: QEMU exited"):
        with boot_cluster([host(), host("node2", "52:54:00:10:00:12", None)], tmp_path / "key", tmp_path):
            pytest.fail("the cluster came up")
    assert started == ["node1"]
    assert sorted(stopped) == ["node1", "node2"]  # node2 cleans up its own failed start, node1 on the way out
    assert not nets[0].switch.running
