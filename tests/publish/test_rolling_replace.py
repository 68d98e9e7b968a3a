"""`golden cluster upgrade --image` on OpenStack and Proxmox VE: the rolling flow of rolling/upgrade.py over the
fake host world (tests/unit/rolling_fake.py), its replace step through openstacksdk and proxmoxer against the
local Nova/Glance and PVE fakes. A fake platform tells the host world when a node boots which disk: the old one
is healthy, the new one as the test says."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from goldenimage import cli
from goldenimage.apply.transport import SSHOptions
from goldenimage.bake.store import Artifact
from goldenimage.publish import proxmox, publisher
from goldenimage.rolling.hosts import Waits
from goldenimage.rolling.platform import PlatformErrors
from goldenimage.rolling.upgrade import UpgradeStopped, rolling_cluster
from tests.unit.rolling_fake import HA, World, factory, ha_plan

from .fakes.openstack import FakeOpenStack
from .fakes.proxmox import SECRET, TOKEN_ID, USER, FakeProxmox
from .fakes.tls import localhost_tls
from .test_openstack import clouds_yaml

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
FAST = Waits(drain=5, up=5, health=0.5, boot=5, address=2, poll=0.01, runtime_poll=0.01)
OLD_IMAGE = "0b5d6a3e-0000-4000-8000-000000000001"
SERVERS = {h.name: str(uuid.UUID(int=i + 1)) for i, h in enumerate(ha_plan())}
VMIDS = {h.name: str(101 + i) for i, h in enumerate(ha_plan())}


@pytest.fixture(autouse=True)
def no_agent_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("goldenimage.apply.remote_agent.shipped_agent", lambda: b"agent")
    monkeypatch.setattr(publisher, "RETRY_BACKOFF_S", 0.01)
    monkeypatch.setattr(proxmox, "TASK_POLL_S", 0.01)


def inventory(tmp_path: Path, platform: dict[str, Any] | None) -> Path:
    path = tmp_path / "inventory.yaml"
    data: dict[str, Any] = {"hosts": {h.name: h.address for h in ha_plan()}}
    if platform is not None:
        data["platform"] = platform
    path.write_text(yaml.safe_dump(data))
    return path


def boots(world: World, name: str, old: bool) -> None:
    """The host boots its old disk (healthy) or its new one (with the problems the test gave it)."""
    if old:
        world.hosts[name].after_change = []
    world.hosts[name].image = "old" if old else "new"
    world.changed(name, "restore" if old else "image")


def upgrade(world: World, inv: Path, tmp_path: Path, *images: Artifact) -> list[Any]:
    return rolling_cluster(HA, inv, "image", images=[a.qcow2 for a in images], out_dir=tmp_path / "out",
                           options=SSHOptions(), factory=factory(world), waits=FAST, progress=world.progress.append)


# --- OpenStack ------------------------------------------------------------------------------------------------


@pytest.fixture
def nova(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenStack]:
    with FakeOpenStack() as fake:
        monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds_yaml(tmp_path, fake, fake.password)))
        for name in ("OS_AUTH_URL", "OS_PASSWORD", "OS_USERNAME", "OS_PROJECT_NAME", "OS_CLOUD", "OS_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        fake.images[OLD_IMAGE] = {"id": OLD_IMAGE, "name": "sql-galera-old", "status": "active", "tags": ["golden"],
                                  "golden_content_key": "1111111111111111", "disk_format": "qcow2",
                                  "container_format": "bare", "visibility": "private"}
        fake.servers = [{"id": sid, "name": name, "image": {"id": OLD_IMAGE}} for name, sid in SERVERS.items()]
        yield fake
        assert fake.errors == [], fake.errors


def nova_world(nova: FakeOpenStack) -> World:
    world = World()
    nova.on_boot = lambda server: boots(world, server["name"], server["image"]["id"] == OLD_IMAGE)
    return world


def openstack_inventory(tmp_path: Path) -> Path:
    return inventory(tmp_path, {"openstack": {"cloud": "fake"}, "servers": SERVERS})


def rebuilds(nova: FakeOpenStack) -> list[tuple[str, str]]:
    """(server name, image) of every rebuild asked, in order."""
    names = {sid: name for name, sid in SERVERS.items()}
    return [(names[r.path.split("/")[-2]], r.json()["rebuild"]["imageRef"])
            for r in nova.sent("POST", "/compute/v2.1/servers/")]


def test_openstack_rebuilds_each_node_of_the_images_profile_on_it_one_at_a_time(
        nova: FakeOpenStack, tmp_path: Path, make_artifact: Callable[..., Artifact]) -> None:
    world = nova_world(nova)
    artifact = make_artifact("sql-galera", key="2222222222222222")
    inv = openstack_inventory(tmp_path)
    upgrade(world, inv, tmp_path, artifact)
    assert len(nova.sent("POST", "/image/v2/images")) == 1  # uploaded once, then found by its content key
    image_id = next(i for i, image in nova.images.items() if f"golden-key-{artifact.key}" in image["tags"])
    assert rebuilds(nova) == [("db2", image_id), ("db1", image_id)]
    by_name = {s["name"]: s for s in nova.servers}
    assert by_name["db1"]["image"]["id"] == by_name["db2"]["image"]["id"] == image_id
    assert by_name["web1"]["image"]["id"] == OLD_IMAGE  # another profile: left alone
    # each rebuilt while out of both load balancers' pools, and put back
    assert [e for e in world.events if " image" in e] == ["db2 image [lb1:MAINT/0 lb2:MAINT/0]",
                                                          "db1 image [lb1:MAINT/0 lb2:MAINT/0]"]
    assert world.haproxy["lb1"][("sql", "db2")][0] == "UP"
    # a second run finds both on the image already: nothing is rebuilt
    upgrade(world, inv, tmp_path, artifact)
    assert len(rebuilds(nova)) == 2


def test_openstack_node_failing_its_health_check_is_rebuilt_on_its_previous_image(
        nova: FakeOpenStack, tmp_path: Path, make_artifact: Callable[..., Artifact]) -> None:
    world = nova_world(nova)
    world.hosts["db2"].after_change = ["galera: Joining, cluster Primary of 2"]
    artifact = make_artifact("sql-galera", key="3333333333333333")
    with pytest.raises(UpgradeStopped, match="^db2: health check failed after the image: galera: Joining.*back on "
                                             "its previous image"):
        upgrade(world, openstack_inventory(tmp_path), tmp_path, artifact)
    new = next(i for i in nova.images if i != OLD_IMAGE)
    assert rebuilds(nova) == [("db2", new), ("db2", OLD_IMAGE)]
    assert {s["name"]: s["image"]["id"] for s in nova.servers}["db2"] == OLD_IMAGE
    assert world.hosts["db2"].image == "old" and not world.hosts["db2"].problems
    assert world.haproxy["lb1"][("sql", "db2")][0] == "MAINT"  # out of its pools until someone looks
    assert world.hosts["db1"].boot == 1  # the run stopped before db1


def test_an_unknown_server_is_refused_before_anything_changes(
        nova: FakeOpenStack, tmp_path: Path, make_artifact: Callable[..., Artifact]) -> None:
    world = nova_world(nova)
    nova.servers = [s for s in nova.servers if s["name"] != "db1"]
    with pytest.raises(PlatformErrors, match=f"inventory.yaml: platform.servers.db1: no server {SERVERS['db1']} in "
                                             "this OpenStack project"):
        upgrade(world, openstack_inventory(tmp_path), tmp_path, make_artifact("sql-galera"))
    assert rebuilds(nova) == [] and not nova.sent("POST", "/image/v2/images") and world.events == []


# --- Proxmox VE -----------------------------------------------------------------------------------------------


@pytest.fixture
def pve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProxmox]:
    context, ca = localhost_tls(tmp_path)
    with FakeProxmox(context) as fake:
        monkeypatch.setenv("PROXMOX_URL", fake.url)
        monkeypatch.setenv("PROXMOX_TOKEN_ID", f"{USER}!{TOKEN_ID}")
        monkeypatch.setenv("PROXMOX_TOKEN_SECRET", SECRET)
        monkeypatch.setenv("PROXMOX_CA_BUNDLE", str(ca))
        monkeypatch.delenv("PROXMOX_NODE", raising=False)
        for name, vmid in VMIDS.items():
            fake.vms[int(vmid)] = {"name": name, "scsi0": f"local-lvm:vm-{vmid}-disk-0,discard=on,iothread=1,size=10G",
                                   "scsi1": f"local-lvm:vm-{vmid}-cloudinit,media=cdrom", "boot": "order=scsi0",
                                   "tags": "shop"}
            fake.power[int(vmid)] = "running"
        yield fake
        assert fake.errors == [], fake.errors


def pve_world(pve: FakeProxmox) -> World:
    world = World()
    pve.on_start = lambda vmid, config: boots(world, config["name"], "-disk-0," in config["scsi0"])
    return world


def proxmox_inventory(tmp_path: Path) -> Path:
    return inventory(tmp_path, {"proxmox": {"node": "pve1"}, "servers": {k: int(v) for k, v in VMIDS.items()}})


def test_proxmox_replaces_the_boot_disk_with_the_templates_and_keeps_the_old_one(
        pve: FakeProxmox, tmp_path: Path, make_artifact: Callable[..., Artifact]) -> None:
    world = pve_world(pve)
    artifact = make_artifact("web", key="4444444444444444")
    upgrade(world, proxmox_inventory(tmp_path), tmp_path, artifact)
    template = next(v for v, c in pve.vms.items() if str(c.get("template")) == "1")
    assert len(pve.sent("POST", "/api2/json/nodes/pve1/qemu/")) >= 1
    for name in ("web1", "web2"):
        vmid = VMIDS[name]
        config = pve.vms[int(vmid)]
        # a copy of the template's disk on the old disk's storage, its options kept, grown to the old size
        assert config["scsi0"] == f"local-lvm:vm-{vmid}-disk-1,discard=on,iothread=1,size=10G"
        assert config["unused0"] == f"local-lvm:vm-{vmid}-disk-0"
        assert config["tags"] == f"shop;golden-key-{artifact.key}" and pve.power[int(vmid)] == "running"
        copy = [r for r in pve.sent("POST", f"/api2/json/nodes/pve1/qemu/{vmid}/config")][0]
        assert f"import-from%3Dlocal-lvm%3Abase-{template}-disk-0".lower() in copy.body.decode().lower()
    assert pve.vms[int(VMIDS["db1"])]["scsi0"].startswith(f"local-lvm:vm-{VMIDS['db1']}-disk-0,")
    assert [e.split(" [")[0] for e in world.events if " image" in e] == ["web1 image", "web2 image"]
    assert len([c for c in pve.vms.values() if str(c.get("template")) == "1"]) == 1  # published once


def test_proxmox_node_failing_its_health_check_gets_its_previous_disk_back(
        pve: FakeProxmox, tmp_path: Path, make_artifact: Callable[..., Artifact]) -> None:
    world = pve_world(pve)
    world.hosts["web1"].after_change = ["apache2: not active"]
    artifact = make_artifact("web", key="5555555555555555")
    with pytest.raises(UpgradeStopped, match="^web1: health check failed after the image: apache2.*back on its "
                                             "previous image"):
        upgrade(world, proxmox_inventory(tmp_path), tmp_path, artifact)
    vmid = VMIDS["web1"]
    config = pve.vms[int(vmid)]
    assert config["scsi0"] == f"local-lvm:vm-{vmid}-disk-0,discard=on,iothread=1,size=10G"
    assert config["unused0"] == f"local-lvm:vm-{vmid}-disk-1"  # the failed disk, kept for a look
    assert config["tags"] == "shop" and pve.power[int(vmid)] == "running"
    assert [e.split(" [")[0] for e in world.events if " image" in e or " restore" in e] == [
        "web1 image", "web1 restore"]
    assert pve.vms[int(VMIDS["web2"])]["scsi0"].startswith(f"local-lvm:vm-{VMIDS['web2']}-disk-0,")


# --- the inventory's platform section, before anything changes ------------------------------------------------


@pytest.mark.parametrize(("platform", "expected"), [
    (None, "inventory.yaml: platform: missing: --image boots each host"),
    ({"openstack": {}, "proxmox": {"node": "pve1"}, "servers": SERVERS},
     "inventory.yaml: platform: name exactly one of openstack or proxmox (found: openstack, proxmox)"),
    ({"openstack": {"cloud": "fake"}, "servers": {**SERVERS, "db1": "101"}},
     "inventory.yaml: platform.servers.db1: '101' is not a Nova server id"),
    ({"openstack": {"cloud": "fake"}, "servers": {k: v for k, v in SERVERS.items() if k != "db2"}},
     "inventory.yaml: platform.servers.db2: missing: the openstack id of host db2"),
    ({"openstack": {"cloud": "fake", "password": "x"}, "servers": SERVERS},
     "inventory.yaml: platform.openstack.password: unknown key"),
    ({"proxmox": {"node": "pve1"}, "servers": {k: int(v) for k, v in VMIDS.items()}},
     "inventory.yaml: platform.proxmox: PROXMOX_URL, PROXMOX_TOKEN_ID, PROXMOX_TOKEN_SECRET not set"),
], ids=["missing", "two-platforms", "bad-id", "no-id", "secret-key", "no-token"])
def test_the_platform_section_is_checked_in_one_line_per_problem_with_exit_2(
        tmp_path: Path, make_artifact: Callable[..., Artifact], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, platform: dict[str, Any] | None, expected: str) -> None:
    for name in ("PROXMOX_URL", "PROXMOX_TOKEN_ID", "PROXMOX_TOKEN_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    inv = inventory(tmp_path, platform)
    artifact = make_artifact("sql-galera")
    status = cli.main(["cluster", "upgrade", str(HA), "--inventory", inv.name, "--image", str(artifact.qcow2),
                       "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2, err
    assert expected in " ".join(err.split()), err


def test_an_image_of_a_profile_no_host_runs_is_refused(tmp_path: Path, make_artifact: Callable[..., Artifact],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    inv = inventory(tmp_path, {"openstack": {}, "servers": SERVERS})
    status = cli.main(["cluster", "upgrade", str(HA), "--inventory", str(inv), "--image",
                       str(make_artifact("plesk").qcow2), "--out", str(tmp_path / "out")])
    err = " ".join(capsys.readouterr().err.split())
    assert status == 2 and "profile plesk: no host of the cluster runs it" in err, err
