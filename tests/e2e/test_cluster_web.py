"""A load balancer, two web nodes and an NFS server booted from the baked images on one private network that
the test builds (a switch on 127.0.0.1 between QEMU's unicast UDP links).

Marked `vm` and `cluster_web`: `make test` (CI) and `make test-cluster` run them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from goldenimage.verify.vm import VM
from tests.e2e.cluster_boot import booted_cluster
from tests.e2e.test_cluster_sql import wait_firstboot

pytestmark = [pytest.mark.vm, pytest.mark.cluster_web]
POLL = 3

CLUSTER = {
    "name": "www",
    "network": "10.10.0.0/24",
    "interface": {"mac_prefix": "52:54:00:10:00", "name": "eth1"},
    "uplink": {"mac_prefix": "52:54:00:20:00", "name": "eth0"},
    "hosts": [
        {"name": "nfs1", "profile": "nfs", "address": "10.10.0.30", "exports": ["/srv/nfs/www"]},
        {"name": "web1", "profile": "web", "address": "10.10.0.21", "lb": "lb1", "nfs": "nfs1"},
        {"name": "web2", "profile": "web", "address": "10.10.0.22", "lb": "lb1", "nfs": "nfs1"},
        {"name": "lb1", "profile": "lb", "address": "10.10.0.10"},
    ],
}


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, VM]]:
    """The four hosts, booted once for the module, with their first boot finished."""
    with booted_cluster(CLUSTER, tmp_path_factory.mktemp("cluster-web")) as vms:
        for vm in vms.values():
            wait_firstboot(vm)
        yield vms


def through_lb(lb: VM, n: int = 12) -> list[str]:
    """Bodies of n requests to the load balancer's frontend, made on the lb itself."""
    out = lb.ssh(f"for i in $(seq {n}); do curl -s -m 5 http://10.10.0.10/healthz; done")
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def test_http_through_haproxy_reaches_both_web_nodes(hosts):
    answers = set(through_lb(hosts["lb1"]))
    assert answers == {"ok web1", "ok web2"}, answers


def test_a_stopped_web_node_leaves_the_rotation_and_comes_back(hosts):
    lb, web2 = hosts["lb1"], hosts["web2"]
    web2.ssh("sudo systemctl stop apache2")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and set(through_lb(lb, 6)) != {"ok web1"}:
            time.sleep(POLL)
        assert set(through_lb(lb)) == {"ok web1"}
        # no HAProxy restart: the same process is serving throughout
        assert lb.ssh("systemctl show -p NRestarts --value haproxy").stdout.strip() == "0"
    finally:
        web2.ssh("sudo systemctl start apache2")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and set(through_lb(lb, 6)) != {"ok web1", "ok web2"}:
        time.sleep(POLL)
    assert set(through_lb(lb)) == {"ok web1", "ok web2"}


def test_web_docroot_is_the_nfs_export_both_ways(hosts):
    nfs, web1, web2 = hosts["nfs1"], hosts["web1"], hosts["web2"]
    assert "10.10.0.30:/srv/nfs/www" in web1.ssh("findmnt -n -o SOURCE /var/www/html").stdout
    nfs.ssh("echo from-nfs | sudo tee /srv/nfs/www/golden-a.txt >/dev/null")
    assert web1.ssh("curl -s http://127.0.0.1/golden-a.txt").stdout.strip() == "from-nfs"
    # root is squashed on the export (root_squash): content is written as the web user, as a deploy would,
    # once the export belongs to it (www-data is uid 33 on every Debian release)
    nfs.ssh("sudo chown 33:33 /srv/nfs/www")
    web2.ssh("echo from-web2 | sudo -u www-data tee /var/www/html/golden-b.txt >/dev/null")
    assert web2.ssh("echo x | sudo tee /var/www/html/golden-root.txt", check=False).returncode != 0
    assert nfs.ssh("cat /srv/nfs/www/golden-b.txt").stdout.strip() == "from-web2"
    assert web1.ssh("cat /var/www/html/golden-b.txt").stdout.strip() == "from-web2"


def test_first_boot_downloaded_no_package(hosts):
    for vm in hosts.values():
        assert vm.ssh("sudo grep -c ' install ' /var/log/dpkg.log || true").stdout.strip() in ("", "0"), vm.name


def test_exports_are_limited_to_the_cluster_network(hosts):
    exports = hosts["nfs1"].ssh("sudo exportfs -v").stdout
    assert "/srv/nfs/www" in exports and "10.10.0.0/24" in exports
    assert "*(" not in exports.replace(" ", "")
