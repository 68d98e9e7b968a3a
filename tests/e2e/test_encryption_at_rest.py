"""MariaDB encryption at rest on hardened hosts, proven on booted images.

A hardened primary, its hardened replica and a plain sql-primary boot on one private network (the loopback
switch). A random string written on the hardened primary reaches the replica, and `grep` finds it in no file
of either hardened host: data directory (tables, system tablespace with the undo logs, redo log, Aria files
and log, binary and relay logs), temporary directories, first-boot state, logs. The same writes on the plain
host are found by the same grep, after the same clean stop of MariaDB: the grep sees what is on disk. Each
hardened host has its own key, readable by mysql only; the replica's outlives a reboot and a rerun of first boot.

Marked `vm` and `cluster`: `make test` and `make test-cluster` run it.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator

import pytest
import yaml

from goldenimage.bake.pipeline import bake
from goldenimage.core.ssh_keys import ephemeral_keypair
from goldenimage.render.cluster import render_cluster
from goldenimage.verify.cluster_vms import ClusterHost, ClusterNet, boot_cluster
from goldenimage.verify.vm import VM
from tests.conftest import EXAMPLES
from tests.e2e.test_cluster_sql import wait_firstboot

pytestmark = [pytest.mark.vm, pytest.mark.cluster, pytest.mark.extended]

HARDENED = ("db1", "db2")  # the primary and replica of examples/cluster-banking-sql.yaml
PLAIN = "db3"
KEY_DIR = "/etc/mysql/encryption"
KEY_FILE = KEY_DIR + "/keyfile"
#: where a row could land on disk: MariaDB's files, temporary files, first-boot state, logs
SEARCHED = ("/var/lib/mysql", "/tmp", "/var/tmp", "/var/lib/golden", "/var/log")
ENCRYPTION_STEPS = ("hardened.mariadb-keyfile", "hardened.mariadb-encryption", "hardened.mariadb-encrypted")
SSH_TIMEOUT = 1200  # three guests under TCG on two shared cores
POLL = 5


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterNet]:
    """The banking pair and a plain sql-primary, booted once for the module, first boot finished on each."""
    work = tmp_path_factory.mktemp("at-rest")
    key = ephemeral_keypair(work)
    spec = yaml.safe_load((EXAMPLES / "cluster-banking-sql.yaml").read_text())
    for host in spec["hosts"]:
        host["profile"] = str(EXAMPLES / host["profile"])  # relative to the example, which stays where it is
    spec["hosts"].append({"name": PLAIN, "profile": "sql-primary", "address": "10.10.0.13"})
    spec["ssh_authorized_keys"] = [key.public]
    (work / "cluster.yaml").write_text(yaml.safe_dump(spec))
    render_cluster(work / "cluster.yaml", work / "rendered")
    rendered = json.loads((work / "rendered" / "hosts.json").read_text())
    images = {p: bake(p, 12) for p in {h["profile"] for h in spec["hosts"]}}
    machines = [
        ClusterHost(h["name"], images[h["profile"]].qcow2, work / "rendered" / h["name"] / "seed.iso",
                    rendered[h["name"]]["mac"], rendered[h["name"]]["uplink_mac"])
        for h in spec["hosts"]
    ]
    with boot_cluster(machines, key, work, ssh_timeout=SSH_TIMEOUT, memory_mib=1024, cpus=1) as net:
        for vm in net.vms.values():
            wait_firstboot(vm)
            print(f"{vm.name}: first boot done after {time.monotonic() - vm.started_at:.0f}s")
        yield net


def sql(vm: VM, statements: str, check: bool = True) -> str:
    """Run SQL as root through stdin: the test's values never appear on a command line (auditd logs those)."""
    proc = vm.ssh("sudo mysql -N -B", input=statements, check=check)
    return (proc.stdout if proc.returncode == 0 else proc.stderr).strip()


def files_holding(vm: VM, marker: str) -> list[str]:
    """The files under SEARCHED that hold `marker`, read as root and as binary; the pattern comes on stdin."""
    proc = vm.ssh(["sudo", "grep", "-rlaF", "-f", "-", *SEARCHED], input=marker + "\n", check=False, timeout=600)
    assert proc.returncode in (0, 1), f"{vm.name}: grep failed: {proc.stderr}"
    return sorted(proc.stdout.split())


def stop_mariadb_and_grep(vm: VM, marker: str) -> list[str]:
    """A clean stop writes everything MariaDB holds in memory to its files; then grep, then start again."""
    vm.ssh("sudo systemctl stop mariadb", timeout=300)
    try:
        return files_holding(vm, marker)
    finally:
        vm.ssh("sudo systemctl start mariadb", timeout=300)


def wait_for(vm: VM, query: str, expected: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sql(vm, query, check=False) == expected:
            return
        time.sleep(POLL)
    status = vm.ssh("sudo mysql -e 'SHOW SLAVE STATUS\\G'", check=False).stdout
    pytest.fail(f"{vm.name}: {query} never returned {expected!r}: {status}")


def write_rows(vm: VM, marker: str) -> None:
    """The marker in a row, and in an older version of another row (only the undo log keeps that one)."""
    sql(vm, "CREATE TABLE ledger.at_rest (id INT PRIMARY KEY, v VARCHAR(100)) ENGINE=InnoDB;\n"
            f"INSERT INTO ledger.at_rest VALUES (1, '{marker}-row'), (2, '{marker}-old');\n"
            "UPDATE ledger.at_rest SET v = 'updated' WHERE id = 2;\n")


def test_each_hardened_host_made_its_own_key_readable_by_mysql_only(hosts):
    digests = []
    for name in HARDENED:
        vm = hosts[name]
        modes = vm.ssh(["sudo", "stat", "-c", "%n %a %U %G", KEY_DIR, KEY_FILE]).stdout.splitlines()
        assert modes == [f"{KEY_DIR} 750 root mysql", f"{KEY_FILE} 400 mysql mysql"], modes
        digests.append(vm.ssh(["sudo", "sha256sum", KEY_FILE]).stdout.split()[0])
        journal = vm.ssh("sudo journalctl -b -u golden-firstboot --no-pager").stdout
        # first boot makes a key only where there is none: the image carried none
        assert "made a new MariaDB encryption key in " + KEY_FILE in journal, journal[-3000:]
        assert "MariaDB encryption at rest: " in journal and "Aria tables of the mysql schema rebuilt" in journal
        pending = sql(vm, "SELECT COUNT(*) FROM information_schema.INNODB_TABLESPACES_ENCRYPTION "
                          "WHERE ENCRYPTION_SCHEME = 0 OR MIN_KEY_VERSION = 0;\n")
        assert pending == "0", f"{name}: {pending} InnoDB tablespaces not encrypted"
    assert digests[0] != digests[1], "the primary and the replica share a key"
    assert hosts[PLAIN].ssh(["test", "-e", KEY_DIR], check=False).returncode == 1


def test_a_row_replicated_between_hardened_hosts_is_on_no_disk_in_clear(hosts):
    primary, replica, plain = hosts["db1"], hosts["db2"], hosts[PLAIN]
    marker = "golden-at-rest-" + secrets.token_hex(12)
    for vm in (primary, plain):
        write_rows(vm, marker)
    wait_for(replica, "SELECT v FROM ledger.at_rest WHERE id = 1;\n", f"{marker}-row")
    # Aria's log is never encrypted: the hardened host refuses the engine, the plain one takes the row
    refused = sql(primary, "CREATE TABLE ledger.aria_rows (v VARCHAR(100)) ENGINE=Aria;\n", check=False)
    assert "NO_ENGINE_SUBSTITUTION" in refused, refused
    sql(plain, f"CREATE TABLE ledger.aria_rows (v VARCHAR(100)) ENGINE=Aria;\n"
               f"INSERT INTO ledger.aria_rows VALUES ('{marker}-aria');\n")

    found = {vm.name: stop_mariadb_and_grep(vm, marker) for vm in (primary, replica, plain)}

    assert found["db1"] == [] and found["db2"] == [], found
    # the same grep on the plain host: the table, the redo log, the binary log, the Aria table and Aria's
    # log all hold the string
    plain_files = found[PLAIN]
    expected = ["/var/lib/mysql/ledger/at_rest.ibd", "/var/lib/mysql/ib_logfile0",
                "/var/lib/mysql/ledger/aria_rows.MAD"]
    assert [f for f in expected if f not in plain_files] == [], plain_files
    assert [f for f in plain_files if "/mysql-bin.0" in f], plain_files
    assert [f for f in plain_files if "/aria_log.0" in f], plain_files

    # the key outlives the restart: the rows read back, and replication carries on
    assert sql(primary, "SELECT v FROM ledger.at_rest WHERE id = 1;\n") == f"{marker}-row"
    sql(primary, "INSERT INTO ledger.at_rest VALUES (3, 'after restart');\n")
    wait_for(replica, "SELECT v FROM ledger.at_rest WHERE id = 3;\n", "after restart")


def test_the_key_outlives_a_reboot_and_a_rerun_of_first_boot(hosts):
    primary, replica = hosts["db1"], hosts["db2"]
    sql(primary, "CREATE TABLE ledger.reboot_rows (id INT PRIMARY KEY, v VARCHAR(40)) ENGINE=InnoDB;\n"
                 "INSERT INTO ledger.reboot_rows VALUES (1, 'before reboot');\n")
    wait_for(replica, "SELECT v FROM ledger.reboot_rows WHERE id = 1;\n", "before reboot")
    before = replica.ssh(["sudo", "sha256sum", KEY_FILE]).stdout
    replica.ssh("sudo systemctl reboot", check=False, timeout=30)
    time.sleep(15)
    replica.wait_for_ssh(timeout=SSH_TIMEOUT)
    assert replica.ssh(["sudo", "sha256sum", KEY_FILE]).stdout == before
    # MariaDB started from its encrypted files with the same key, and replication carries on
    wait_for(replica, "SELECT v FROM ledger.reboot_rows WHERE id = 1;\n", "before reboot")
    sql(primary, "INSERT INTO ledger.reboot_rows VALUES (2, 'after reboot');\n")
    wait_for(replica, "SELECT v FROM ledger.reboot_rows WHERE id = 2;\n", "after reboot")
    proc = replica.ssh("sudo golden-firstboot --rerun", check=False, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert replica.ssh(["sudo", "sha256sum", KEY_FILE]).stdout == before
    steps = json.loads(replica.ssh("sudo golden-firstboot status --json").stdout)["steps"]
    encryption = {s: (steps[s]["state"], steps[s]["changed"]) for s in ENCRYPTION_STEPS}
    assert encryption == {s: ("done", False) for s in ENCRYPTION_STEPS}, encryption
