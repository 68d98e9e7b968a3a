"""Rolling upgrades and reboots (`golden cluster upgrade`, `golden cluster reboot --rolling`) over a fake host
transport: a small world of hosts answering the commands golden sends them (the agent's facts, HAProxy's runtime
API through the load balancer's python3, the boot id, the reboot, keepalived), with every change recorded. The
order, the drain before each change, the address moved before the master changes and the stop at the first
failure are read from that record."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from goldenimage.apply.apply import HostReport
from goldenimage.apply.transport import SSHOptions
from goldenimage.core.errors import CommandError, GoldenError
from goldenimage.rolling import changes
from goldenimage.rolling.changes import ImageChange, reboot_reasons
from goldenimage.rolling.hosts import Hosts, Waits
from goldenimage.rolling.order import Kind, nodes, order
from goldenimage.rolling.upgrade import Rolling, UpgradeStopped, rolling_cluster, summary
from tests.unit.rolling_fake import HA, World, factory, ha_plan

FAST = Waits(drain=5, up=5, health=0.5, boot=2, address=2, poll=0.01, runtime_poll=0.01)


@pytest.fixture(autouse=True)
def no_agent_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("goldenimage.apply.remote_agent.shipped_agent", lambda: b"agent")


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump({"hosts": {h.name: h.address for h in ha_plan()}}))
    return path


def reboot(world: World, inventory: Path, tmp_path: Path, waits: Waits = FAST) -> list[Any]:
    return rolling_cluster(HA, inventory, "reboot", out_dir=tmp_path / "out", options=SSHOptions(),
                           factory=factory(world), waits=waits, progress=world.progress.append)


BOTH_MAINT = "[lb1:MAINT/0 lb2:MAINT/0]"
#: a web node is in two pools on each load balancer: HTTP (web) and the HTTPS pass-through (web-tls)
WEB_MAINT = "[lb1:MAINT/0 lb1:MAINT/0 lb2:MAINT/0 lb2:MAINT/0]"


def web_out(server: str) -> list[str]:
    """A web node drained from both of its pools on each load balancer, one pool after the other."""
    return [f"{lb}: {backend}/{server} {what}" for lb in ("lb1", "lb2") for backend in ("web", "web-tls")
            for what in ("drain", "maint")]


def web_back(server: str) -> list[str]:
    return [f"{lb}: {backend}/{server} ready" for lb in ("lb1", "lb2") for backend in ("web", "web-tls")]


def test_a_rolling_reboot_goes_backup_lb_then_master_then_sql_then_web_each_drained_first(
        world: World, inventory: Path, tmp_path: Path) -> None:
    results = reboot(world, inventory, tmp_path)
    assert world.events == [
        "lb2 reboot", "lb2: keepalived start",
        "lb1: keepalived stop", "lb1 reboot", "lb1: keepalived start",
        # db1 is the SQL pool's active server (db2 its backup): db2 goes first
        "lb1: sql/db2 drain", "lb1: sql/db2 maint", "lb2: sql/db2 drain", "lb2: sql/db2 maint",
        f"db2 reboot {BOTH_MAINT}", "lb1: sql/db2 ready", "lb2: sql/db2 ready",
        "lb1: sql/db1 drain", "lb1: sql/db1 maint", "lb2: sql/db1 drain", "lb2: sql/db1 maint",
        f"db1 reboot {BOTH_MAINT}", "lb1: sql/db1 ready", "lb2: sql/db1 ready",
        *web_out("web1"), f"web1 reboot {WEB_MAINT}", *web_back("web1"),
        *web_out("web2"), f"web2 reboot {WEB_MAINT}", *web_back("web2"),
    ]
    assert world.holder == "lb2"  # moved on purpose, and nopreempt kept it there
    assert all(state == ["UP", 0] for servers in world.haproxy.values() for state in servers.values())
    outcome = {r.name: r.outcome for r in results}
    assert outcome["nfs1"].startswith("skipped: needs a reboot (/run/reboot-required), no stand-in")
    assert summary(results, "reboot")[-1] == "rolling reboot: 6 of 7 node(s) changed; skipped (no stand-in): nfs1"


def test_the_address_leaves_the_master_before_it_changes(world: World, inventory: Path, tmp_path: Path) -> None:
    world.holder = "lb2"  # after an earlier failover, lb2 is the master: it goes last
    reboot(world, inventory, tmp_path)
    lbs = [e for e in world.events if e.startswith("lb") and "/" not in e]
    assert lbs == ["lb1 reboot", "lb1: keepalived start", "lb2: keepalived stop", "lb2 reboot",
                   "lb2: keepalived start"]
    assert world.holder == "lb1"


def test_a_node_that_needs_no_reboot_is_left_alone(world: World, inventory: Path, tmp_path: Path) -> None:
    for host in world.hosts.values():
        host.needs_reboot = host.name == "web2"
    results = reboot(world, inventory, tmp_path)
    assert [e for e in world.events if "reboot" in e] == [f"web2 reboot {WEB_MAINT}"]
    assert "lb1: keepalived stop" not in world.events  # the address stays where it is
    assert sum(r.outcome == "nothing to do" for r in results) == 6


def test_a_failed_health_check_stops_the_run_and_leaves_the_node_out_of_the_pool(
        world: World, inventory: Path, tmp_path: Path) -> None:
    world.hosts["web1"].after_change = ["web: /healthz answered 503"]
    with pytest.raises(UpgradeStopped, match=r"^web1: health check failed after the reboot: web: /healthz "
                                             r"answered 503 .*it stays out of its pools"):
        reboot(world, inventory, tmp_path)
    assert {world.haproxy[lb][(backend, "web1")][0] for lb in ("lb1", "lb2") for backend in ("web", "web-tls")} == {
        "MAINT"}  # out of HTTP and HTTPS alike
    assert not [e for e in world.events if e.startswith("web2") or "/web2" in e]  # never touched
    assert world.hosts["web2"].needs_reboot


def test_an_unhealthy_cluster_is_refused_before_any_node_changes(world: World, inventory: Path,
                                                                 tmp_path: Path) -> None:
    world.hosts["db1"].problems = ["galera: Donor/Desynced, cluster Primary of 2"]
    with pytest.raises(UpgradeStopped, match=r"not every node is healthy before the reboot: db1 \(galera: "):
        reboot(world, inventory, tmp_path)
    assert world.events == []


def test_a_failed_change_stops_the_run_with_the_node_out_of_its_pools(world: World, inventory: Path,
                                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                     ) -> None:
    applied: list[str] = []

    def apply_host(name: str, profile: str, transport: Any, **kwargs: Any) -> HostReport:
        applied.append(name)
        world.changed(name, "apply")
        error = "step web.vhosts: apache2 failed" if name == "db1" else None
        return HostReport(name=name, target=str(transport.target), changed=1, error=error)

    monkeypatch.setattr(changes, "apply_host", apply_host)
    with pytest.raises(UpgradeStopped, match="^db1: apply failed: step web.vhosts: apache2 failed; it stays out"):
        rolling_cluster(HA, inventory, "apply", out_dir=tmp_path / "out", options=SSHOptions(),
                        factory=factory(world), waits=FAST, progress=world.progress.append)
    assert applied == ["lb2", "lb1", "db2", "db1"]
    assert world.haproxy["lb1"][("sql", "db1")][0] == "MAINT"
    assert (tmp_path / "out" / "secrets.json").is_file()  # rendered first, as golden cluster apply does


def test_a_drain_that_does_not_end_stops_before_the_change(world: World, inventory: Path, tmp_path: Path) -> None:
    for host in world.hosts.values():
        host.needs_reboot = host.name == "web1"
    world.haproxy["lb1"][("web", "web1")][1] = 10**6  # a client that never lets go
    with pytest.raises(UpgradeStopped, match="^web1: drain failed on lb1: web/web1 still had"):
        reboot(world, inventory, tmp_path, dataclasses.replace(FAST, drain=0.3))
    assert not [e for e in world.events if e.startswith("web1 reboot")]
    assert world.haproxy["lb1"][("web", "web1")][0] == "UP"  # the drain put it back


class FakeReplacer:
    def __init__(self, world: World) -> None:
        self.world = world

    def check(self) -> None:
        pass

    def running(self, name: str) -> str | None:
        return self.world.hosts[name].image

    def replace(self, name: str, artifact: Any) -> None:
        self.world.hosts[name].image = artifact.key
        self.world.changed(name, "image")

    def restore(self, name: str) -> None:
        self.world.hosts[name].image = "old"
        self.world.hosts[name].after_change = []
        self.world.changed(name, "restore")


class NewImage:
    name = key = "new"


def test_an_image_that_fails_its_health_check_is_rolled_back_and_the_node_stays_out(world: World, inventory: Path,
                                                                                     tmp_path: Path) -> None:
    from goldenimage.apply.inventory import load_inventory

    hosts_plan = ha_plan()
    hosts = Hosts(load_inventory(inventory), SSHOptions(), factory(world), {h.name: h.profile for h in hosts_plan})
    world.hosts["db2"].after_change = ["galera: Joining, cluster Primary of 2"]
    change = ImageChange(hosts, FakeReplacer(world), {p: NewImage() for p in ("lb", "sql-galera")}, FAST)
    with pytest.raises(UpgradeStopped, match="^db2: health check failed after the image: galera: Joining.*back on "
                                             "its previous image"):
        Rolling(hosts, nodes(hosts_plan), change, waits=FAST, progress=world.progress.append).run()
    assert [e.split(" [")[0] for e in world.events if " image" in e or " restore" in e] == [
        "lb2 image", "lb1 image", "db2 image", "db2 restore"]
    assert world.hosts["db2"].image == "old" and world.hosts["db1"].image == "old"
    assert world.haproxy["lb1"][("sql", "db2")][0] == "MAINT"


def test_a_node_that_does_not_boot_on_the_new_image_is_put_back_on_its_previous_one(world: World, inventory: Path,
                                                                                     tmp_path: Path) -> None:
    from goldenimage.apply.inventory import load_inventory

    class Silent(FakeReplacer):
        def replace(self, name: str, artifact: Any) -> None:
            self.world.hosts[name].image = artifact.key  # the platform says done; the node never answers again

    hosts_plan = ha_plan()
    hosts = Hosts(load_inventory(inventory), SSHOptions(), factory(world), {h.name: h.profile for h in hosts_plan})
    change = ImageChange(hosts, Silent(world), {"web": NewImage()}, FAST)
    with pytest.raises(UpgradeStopped, match="^web1: image failed: web1: booted again: not after 2s; back on its "
                                             "previous image; it stays out of its pools"):
        Rolling(hosts, nodes(hosts_plan), change, waits=FAST, progress=world.progress.append).run()
    assert world.hosts["web1"].image == "old" and world.hosts["web2"].image == "old"
    assert [e.split(" [")[0] for e in world.events if " restore" in e] == ["web1 restore"]


def test_the_order_reads_the_pools_from_the_load_balancers_settings(tmp_path: Path) -> None:
    found = {n.name: n for n in nodes(ha_plan())}
    assert found["web1"].kind is Kind.WEB and found["web1"].standin
    assert [str(p) for p in found["web1"].pools] == ["web/web1 on lb1", "web-tls/web1 on lb1", "web/web1 on lb2",
                                                     "web-tls/web1 on lb2"]
    assert [str(p) for p in found["db1"].pools] == ["sql/db1 on lb1", "sql/db1 on lb2"]
    assert found["db1"].rank == 0 and found["db2"].rank == 1
    assert found["lb1"].keepalived and found["lb1"].standin and found["lb1"].virtual_address == "10.10.0.5/24"
    assert found["lb2"].virtual_address == found["lb1"].virtual_address
    assert found["nfs1"].kind is Kind.ALONE and not found["nfs1"].standin
    assert [n.name for n in order(list(found.values()), {"lb1"})] == [
        "lb2", "lb1", "db2", "db1", "web1", "web2", "nfs1"]


def test_needrestart_and_the_flag_file_are_reasons_to_reboot() -> None:
    out = ("reboot-required\nNEEDRESTART-VER: 3.6\nNEEDRESTART-KCUR: 6.1.0-1\nNEEDRESTART-KEXP: 6.1.0-2\n"
           "NEEDRESTART-KSTA: 3\nNEEDRESTART-UCSTA: 1\nNEEDRESTART-SVC: apache2.service\n"
           "NEEDRESTART-SVC: mariadb.service\n")
    assert reboot_reasons(out) == ["/run/reboot-required", "needrestart: a newer kernel",
                                   "needrestart: 2 service(s) on replaced libraries (apache2.service, "
                                   "mariadb.service)"]
    assert reboot_reasons("NEEDRESTART-VER: 3.6\nNEEDRESTART-KSTA: 1\nNEEDRESTART-UCSTA: 1\n") == []


def test_image_without_a_platform_is_refused_in_one_line_naming_the_inventory(inventory: Path, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from goldenimage.rolling import upgrade

    monkeypatch.setattr(upgrade, "load_images", lambda paths, profiles: {"web": NewImage()})
    with pytest.raises(GoldenError, match="^.*inventory.yaml: platform: missing: --image boots each host"):
        rolling_cluster(HA, inventory, "image", out_dir=tmp_path, options=SSHOptions(), images=[Path("x.qcow2")])


def test_a_host_that_does_not_answer_is_a_stop_naming_it(world: World, inventory: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    original = world.answer

    def answer(name: str, argv: Sequence[str]) -> str:
        if name == "web2" and argv[0] == "mktemp":
            raise CommandError("web2: mktemp", 255, "Connection refused")
        return original(name, argv)

    monkeypatch.setattr(world, "answer", answer)
    with pytest.raises(UpgradeStopped, match=r"before the reboot: web2 \(unreachable: .*web2: mktemp"):
        reboot(world, inventory, tmp_path)


def test_a_node_left_out_by_an_earlier_stop_is_put_back_once_healthy(world: World, inventory: Path,
                                                                    tmp_path: Path) -> None:
    world.hosts["web1"].after_change = ["web: /healthz answered 503"]
    with pytest.raises(UpgradeStopped):
        reboot(world, inventory, tmp_path)
    world.hosts["web1"].problems = []  # repaired by hand
    world.events.clear()
    results = reboot(world, inventory, tmp_path)
    assert world.events == [*web_back("web1"), *web_out("web2"), f"web2 reboot {WEB_MAINT}", *web_back("web2")]
    assert {r.name: r.outcome for r in results}["web1"] == "nothing to do, put back in service"
    assert all(state == ["UP", 0] for servers in world.haproxy.values() for state in servers.values())
