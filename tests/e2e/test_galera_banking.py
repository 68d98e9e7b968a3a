"""The banking variant of Galera on booted images: two hardened sql-galera nodes of
examples/cluster-banking-galera.yaml (its arbitrator is rendered, not booted: two guests at most). db1
bootstraps, db2 joins by a full rsync state transfer through stunnel; both run with the cluster's key (the same
file, the one in the cluster secrets) and Galera's TLS; a row written on db1 is read on db2 and, after a clean
stop, is in no file of db2's data directory but Galera's write-set cache (README: still in clear).

Marked `vm` and `extended`: `make test-extended` runs it.
"""

from __future__ import annotations

import hashlib
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
from tests.conftest import EXAMPLES
from tests.e2e.test_cluster_sql import wait_firstboot
from tests.e2e.test_encryption_at_rest import KEY_FILE, files_holding, sql

pytestmark = [pytest.mark.vm, pytest.mark.extended]
NODES = ("db1", "db2")
SSH_TIMEOUT = 1500
GCACHE = "/var/lib/mysql/galera.cache"


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClusterNet, dict[str, str]]]:
    work = tmp_path_factory.mktemp("galera-banking")
    key = ephemeral_keypair(work)
    spec = yaml.safe_load((EXAMPLES / "cluster-banking-galera.yaml").read_text())
    for host in spec["hosts"]:
        if host["profile"].endswith(".yaml"):
            host["profile"] = str(EXAMPLES / host["profile"])
    spec["ssh_authorized_keys"] = [key.public]
    (work / "cluster.yaml").write_text(yaml.safe_dump(spec))
    render_cluster(work / "cluster.yaml", work / "rendered")
    rendered = json.loads((work / "rendered" / "hosts.json").read_text())
    stored = json.loads((work / "rendered" / "secrets.json").read_text())
    image = bake(str(EXAMPLES / "banking-sql-galera.yaml"), 12)
    machines = [ClusterHost(n, image.qcow2, work / "rendered" / n / "seed.iso", rendered[n]["mac"],
                            rendered[n]["uplink_mac"]) for n in NODES]
    with boot_cluster(machines, key, work, ssh_timeout=SSH_TIMEOUT, memory_mib=1024, cpus=1) as net:
        for name in NODES:
            wait_firstboot(net.vms[name])
            print(f"{name}: first boot done after {time.monotonic() - net.vms[name].started_at:.0f}s")
        yield net, stored


def test_both_nodes_hold_the_clusters_key_and_run_galera_over_tls(nodes):
    net, stored = nodes
    wanted = hashlib.sha256(f"1;{stored['galera_encryption_key']}\n".encode()).hexdigest()
    for name in NODES:
        vm = net.vms[name]
        assert vm.ssh(["sudo", "sha256sum", KEY_FILE]).stdout.split()[0] == wanted, name
        options = sql(vm, "SELECT @@GLOBAL.wsrep_provider_options;\n")
        assert "socket.ssl = YES" in options and "galera-tls/cert.pem" in options, options
        assert sql(vm, "SHOW GLOBAL STATUS LIKE 'wsrep_cluster_size';\n").split() == ["wsrep_cluster_size", "2"]
        pending = sql(vm, "SELECT COUNT(*) FROM information_schema.INNODB_TABLESPACES_ENCRYPTION "
                          "WHERE ENCRYPTION_SCHEME = 0 OR MIN_KEY_VERSION = 0;\n")
        assert pending == "0", f"{name}: {pending} InnoDB tablespaces not encrypted"
    # db2 joined by a state transfer that went through stunnel
    log = net.vms["db2"].ssh("sudo journalctl -b -u mariadb --no-pager", check=False).stdout
    assert "Using stunnel for SSL encryption" in log, log[-4000:]


def test_a_row_written_on_one_node_is_read_on_the_other_and_on_no_disk_in_clear(nodes):
    net, _ = nodes
    db1, db2 = net.vms["db1"], net.vms["db2"]
    marker = "golden-galera-" + secrets.token_hex(12)
    sql(db1, "CREATE TABLE ledger.at_rest (id INT PRIMARY KEY, v VARCHAR(100)) ENGINE=InnoDB;\n"
             f"INSERT INTO ledger.at_rest VALUES (1, '{marker}');\n")
    assert sql(db2, "SELECT v FROM ledger.at_rest WHERE id = 1;\n") == marker
    db2.ssh("sudo systemctl stop mariadb", timeout=300)
    try:
        found = files_holding(db2, marker)
    finally:
        db2.ssh("sudo systemctl start mariadb", timeout=600)
    assert [f for f in found if f != GCACHE] == [], found
    # db2 rejoined (IST over TLS) with its encrypted files and the same key
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = sql(db2, "SHOW GLOBAL STATUS LIKE 'wsrep_local_state_comment';\n", check=False)
        if state.split()[-1:] == ["Synced"]:
            break
        time.sleep(5)
    assert sql(db2, "SELECT v FROM ledger.at_rest WHERE id = 1;\n") == marker
