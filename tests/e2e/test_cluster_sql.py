"""A MariaDB primary and its replica, booted from the baked images on a private network that the test
builds (a switch on 127.0.0.1 between QEMU's unicast UDP links): replication converges whatever the order.

Marked `vm` and `cluster`: `make test-cluster` runs these (CI too).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from goldenimage.bake import store
from goldenimage.bake.pipeline import bake
from goldenimage.core.ssh_keys import SSHKey, ephemeral_keypair
from goldenimage.render.cluster import render_cluster
from goldenimage.verify.l2switch import L2Switch
from goldenimage.verify.vm import VM
from tests.conftest import EXAMPLES, ROOT

pytestmark = [pytest.mark.vm, pytest.mark.cluster]
FIRSTBOOT_TIMEOUT = 900
POLL = 5


@pytest.fixture(scope="module")
def images() -> dict[str, store.Artifact]:
    return {name: bake(name, 12) for name in ("sql-primary", "sql-replica")}


@pytest.fixture
def cluster(tmp_path: Path) -> tuple[Path, SSHKey, dict]:
    return render_sql_cluster(tmp_path)


def render_sql_cluster(tmp_path: Path) -> tuple[Path, SSHKey, dict]:
    """examples/cluster-sql.yaml with this test's SSH key, rendered: (dir, key, hosts.json)."""
    key = ephemeral_keypair(tmp_path)
    spec = yaml.safe_load((EXAMPLES / "cluster-sql.yaml").read_text())
    spec["ssh_authorized_keys"] = [key.public]
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "rendered"
    render_cluster(tmp_path / "cluster.yaml", out)
    return out, key, json.loads((out / "hosts.json").read_text())


@pytest.fixture
def network() -> Iterator[L2Switch]:
    with L2Switch() as switch:
        yield switch


def boot(stack: ExitStack, name: str, images: dict, cluster: tuple, switch: L2Switch, tmp: Path, **vm: Any) -> VM:
    out, key, hosts = cluster
    host = hosts[name]
    vm = VM(images[host["profile"]].qcow2, seed=out / name / "seed.iso", key=key, name=name,
            mac=host["uplink_mac"], extra_args=switch.netdev_args(host["mac"]), workdir=tmp / name, **vm)
    stack.enter_context(vm)
    return vm


def firstboot_status(vm: VM) -> dict:
    proc = vm.ssh("sudo golden-firstboot status --json", check=False, timeout=60)
    # exit status 1 with the status printed when the run failed: the JSON says so
    data = json.loads(proc.stdout) if proc.returncode in (0, 1) and proc.stdout.strip() else None
    return data or {}  # "null" before the agent has started


def wait_firstboot(vm: VM, timeout: float = FIRSTBOOT_TIMEOUT) -> dict:
    """Wait (bounded) for the first-boot agent to finish; fail with its status and journal otherwise."""
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        status = firstboot_status(vm)
        if status.get("result") == "done":
            return status
        if status.get("result") == "failed":
            break
        time.sleep(POLL)
    journal = vm.ssh("sudo journalctl -b -u golden-firstboot --no-pager | tail -n 40", check=False).stdout
    pytest.fail(f"{vm.name}: first boot did not finish: {json.dumps(status, indent=1)}\n{journal}")


def sql(vm: VM, query: str) -> str:
    return vm.ssh(["sudo", "mysql", "-N", "-B", "-e", query]).stdout.strip()


def wait_for_row(replica: VM, value: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sql(replica, "SELECT v FROM shop.golden_probe WHERE id = 1") == value:
            return
        time.sleep(POLL)
    status = replica.ssh("sudo mysql -e 'SHOW SLAVE STATUS\\G'", check=False).stdout
    pytest.fail(f"{value!r} never reached {replica.name}: {status}")


def assert_replicating(primary: VM, replica: VM) -> None:
    status = replica.ssh("sudo mysql -e 'SHOW SLAVE STATUS\\G'").stdout
    assert "Slave_IO_Running: Yes" in status and "Slave_SQL_Running: Yes" in status, status
    assert "Master_Host: 10.10.0.11" in status
    value = f"golden-row-{time.time_ns()}"
    sql(primary, "CREATE TABLE IF NOT EXISTS shop.golden_probe (id INT PRIMARY KEY, v VARCHAR(64))")
    sql(primary, f"REPLACE INTO shop.golden_probe VALUES (1, '{value}')")
    wait_for_row(replica, value)


def assert_no_package_downloaded(vm: VM) -> None:
    # the bake truncated dpkg's log and emptied apt's lists: anything there now came from this boot
    assert vm.ssh("sudo grep -c ' install ' /var/log/dpkg.log || true").stdout.strip() in ("", "0")
    assert vm.ssh("sudo find /var/lib/apt/lists /var/cache/apt/archives -name '*.deb' -o -name '*_Packages'"
                  ).stdout.strip() == ""


def test_row_written_on_the_primary_appears_on_the_replica(images, cluster, network, tmp_path):
    with ExitStack() as stack:
        db1 = boot(stack, "db1", images, cluster, network, tmp_path)
        db2 = boot(stack, "db2", images, cluster, network, tmp_path)
        for vm in (db1, db2):
            vm.wait_for_ssh(timeout=600)
        wait_firstboot(db1)
        wait_firstboot(db2)
        assert_replicating(db1, db2)
        assert sql(db2, "SELECT @@server_id") == "12" and sql(db1, "SELECT @@server_id") == "11"
        for vm in (db1, db2):
            assert_no_package_downloaded(vm)
        # golden cluster status reads the pair over SSH: healthy, then the stopped replica is named with its state
        proc = cluster_status(cluster, tmp_path, db1, db2)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "replica running" in proc.stdout and "2 of 2 host(s) healthy" in proc.stdout
        sql(db2, "STOP SLAVE")
        proc = cluster_status(cluster, tmp_path, db1, db2)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "replica stopped" in proc.stdout and "look at: db2" in proc.stdout


def cluster_status(cluster: tuple, tmp: Path, *vms: VM) -> subprocess.CompletedProcess[str]:
    """`golden cluster status` on the rendered cluster file, each guest reached on its forwarded SSH port."""
    out, key, _ = cluster
    inventory = tmp / "inventory.yaml"
    inventory.write_text(yaml.safe_dump({"user": vms[0].user, "hosts": {
        vm.name: f"127.0.0.1:{vm.ssh_port}" for vm in vms}}))
    return subprocess.run([sys.executable, "-m", "goldenimage.cli", "cluster", "status", str(tmp / "cluster.yaml"),
                           "--inventory", str(inventory), "--identity", str(key.private), "--accept-new-host-key",
                           "--known-hosts", str(tmp / "known_hosts")], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.extended
def test_replica_booted_before_its_primary_still_converges(images, cluster, network, tmp_path):
    with ExitStack() as stack:
        db2 = boot(stack, "db2", images, cluster, network, tmp_path)
        db2.wait_for_ssh(timeout=600)
        # the replica is now retrying against a primary that is not there yet
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and firstboot_status(db2).get("result") != "running":
            time.sleep(POLL)
        assert firstboot_status(db2).get("result") == "running"
        db1 = boot(stack, "db1", images, cluster, network, tmp_path)
        db1.wait_for_ssh(timeout=600)
        wait_firstboot(db1)
        wait_firstboot(db2)
        assert_replicating(db1, db2)


@pytest.mark.extended
def test_replica_rebooted_during_first_boot_converges_without_dumping_twice(images, cluster, network, tmp_path):
    with ExitStack() as stack:
        db1 = boot(stack, "db1", images, cluster, network, tmp_path)
        db1.wait_for_ssh(timeout=600)
        wait_firstboot(db1)
        # enough data (about 40 MB) that the replica's import takes a while: the reboot lands inside it
        sql(db1, "CREATE TABLE shop.bulk (id INT PRIMARY KEY, pad VARCHAR(200)) "
                 "SELECT seq AS id, REPEAT('x', 200) AS pad FROM shop.seq_1_to_200000")
        db2 = boot(stack, "db2", images, cluster, network, tmp_path)
        db2.wait_for_ssh(timeout=600)
        deadline = time.monotonic() + FIRSTBOOT_TIMEOUT
        dumped = "sudo tail -c 300 /var/lib/golden/replica-seed.sql 2>/dev/null | grep -q 'Dump completed'"
        while time.monotonic() < deadline and db2.ssh(dumped, check=False).returncode != 0:
            assert firstboot_status(db2).get("result") != "done", "first boot ended before the dump was seen"
            time.sleep(1)
        assert firstboot_status(db2).get("result") != "done", "first boot ended before the reboot"
        db2.ssh("sudo systemctl reboot --force --force", check=False, timeout=20)
        time.sleep(10)
        db2.wait_for_ssh(timeout=600)
        wait_firstboot(db2)
        assert_replicating(db1, db2)
        assert sql(db2, "SELECT COUNT(*) FROM shop.bulk") == "200000"
        # this boot's run of the agent reused the dump instead of dumping the primary again
        second_run = db2.ssh("sudo journalctl -b 0 -u golden-firstboot --no-pager").stdout
        assert "mariadb-dump --defaults-extra-file" not in second_run, second_run[-3000:]
