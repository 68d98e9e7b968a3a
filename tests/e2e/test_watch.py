"""A real Prometheus (Debian's, started by the test on 127.0.0.1) scrapes a booted cluster through the
configuration and rules `golden cluster monitoring` writes; the test breaks one thing at a time and checks that
exactly the alerts that thing explains fire within their `for:` windows, then that they resolve after the repair.

Prometheus reaches each exporter through an SSH forward into its guest (the exporters listen on the cluster
address only, which the host has no route to); each target keeps the labels the generated file gives it.
Marked `vm` and `watch`: `make test-watch` runs it (six TCG guests, two at a time for the SQL pair, four for the
web cluster); CI does not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from goldenimage.core.run import spawn, stop
from goldenimage.render.monitoring import CONFIG_FILE, RULES_FILE, write_monitoring
from goldenimage.verify.vm import SSH_OPTIONS, VM, free_port
from tests.e2e.cluster_boot import booted_cluster
from tests.e2e.test_cluster_sql import wait_firstboot

pytestmark = [pytest.mark.vm, pytest.mark.watch,
              pytest.mark.skipif(shutil.which("prometheus") is None,
                                 reason="Debian's prometheus package is installed by scripts/install-deps")]
POLL = 5
# node-exporter waits up to 5 s on a file system that does not answer (the dead share) before it skips it.
INTERVAL, TIMEOUT = "10s", "9s"
#: Longer than every `for:` of the rules these drills can raise.
QUIET = 150
#: The longest `for:` of the alerts these drills raise is 2 minutes; scrapes through TCG guests are slow.
FIRE_WITHIN = 420
RESOLVE_WITHIN = 600
NET = {"network": "10.10.0.0/24", "interface": {"mac_prefix": "52:54:00:10:00", "name": "eth1"},
       "uplink": {"mac_prefix": "52:54:00:20:00", "name": "eth0"}, "monitoring": {}}
WEB = {"name": "watchweb", **NET, "hosts": [
    {"name": "nfs1", "profile": "nfs", "address": "10.10.0.30", "exports": ["/srv/nfs/www"]},
    {"name": "web1", "profile": "web", "address": "10.10.0.21", "lb": "lb1", "nfs": "nfs1"},
    {"name": "web2", "profile": "web", "address": "10.10.0.22", "lb": "lb1", "nfs": "nfs1"},
    {"name": "lb1", "profile": "lb", "address": "10.10.0.10", "virtual_address": "10.10.0.5"},
]}
SQL = {"name": "watchsql", **NET, "databases": ["shop"], "hosts": [
    {"name": "db1", "profile": "sql-primary", "address": "10.10.0.11"},
    {"name": "db2", "profile": "sql-replica", "address": "10.10.0.12", "primary": "db1"},
]}
Firing = set[tuple[str, str]]  # (alertname, the host it names: `server` for OutOfPool, else `host`)


class Tunnels:
    """One `ssh -N -L` per guest, forwarding a fixed 127.0.0.1 port to each of its exporters; restarted after a
    guest's power cycle with the same ports, so Prometheus's configuration never changes."""

    def __init__(self) -> None:
        self.forwards: dict[str, list[tuple[int, str, int]]] = {}
        self.procs: dict[str, Any] = {}

    def add(self, host: str, address: str, port: int) -> int:
        local = free_port()
        self.forwards.setdefault(host, []).append((local, address, port))
        return local

    def start(self, vm: VM) -> None:
        argv = ["ssh", *SSH_OPTIONS, "-N", "-o", "ExitOnForwardFailure=yes", "-p", str(vm.ssh_port)]
        if vm.key:
            argv += ["-i", str(vm.key)]
        for local, address, port in self.forwards[vm.name]:
            argv += ["-L", f"127.0.0.1:{local}:{address}:{port}"]
        self.procs[vm.name] = spawn([*argv, f"{vm.user}@127.0.0.1"], stdout=subprocess.DEVNULL)

    def stop(self, name: str) -> None:
        if name in self.procs:
            stop(self.procs.pop(name))

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # 127.0.0.1 only
        return json.load(response)


@contextmanager
def prometheus(cluster: dict[str, Any], vms: dict[str, VM], tmp: Path) -> Iterator[tuple[str, Tunnels]]:
    """Prometheus on 127.0.0.1 with the generated rules, scraping every exporter through the tunnels: its URL."""
    (tmp / "cluster.yaml").write_text(yaml.safe_dump(cluster))
    write_monitoring(tmp / "cluster.yaml", tmp / "monitoring")
    config = yaml.safe_load((tmp / "monitoring" / CONFIG_FILE).read_text())
    tunnels = Tunnels()
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            address, port = static["targets"][0].split(":")
            static["targets"] = [f"127.0.0.1:{tunnels.add(static['labels']['host'], address, int(port))}"]
    config["global"] = {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL, "scrape_timeout": TIMEOUT}
    config["rule_files"] = [str(tmp / "monitoring" / RULES_FILE)]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = os.open(tmp / "prometheus.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    server = spawn(["prometheus", f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}"], stdout=log)
    os.close(log)
    try:
        for vm in vms.values():
            tunnels.start(vm)
        deadline = time.monotonic() + 300
        down: list[str] = ["(not asked yet)"]
        while time.monotonic() < deadline and down:
            time.sleep(POLL)
            try:
                targets = get(url + "/api/v1/targets")["data"]["activeTargets"]
            except OSError:
                continue
            down = [f"{t['labels']['job']}@{t['labels']['host']}: {t['lastError']}" for t in targets
                    if t["health"] != "up"]
        assert not down, f"targets not up after 300 s: {down}"
        yield url, tunnels
    finally:
        tunnels.close()
        stop(server)


def firing(url: str) -> Firing:
    alerts = get(url + "/api/v1/alerts")["data"]["alerts"]
    return {(a["labels"]["alertname"], a["labels"].get("server") if a["labels"]["alertname"] == "OutOfPool"
             else a["labels"].get("host", "")) for a in alerts if a["state"] == "firing"}


def wait_alerts(url: str, expected: Firing, within: float, what: str, leaving: Firing | None = None) -> None:
    """Until exactly `expected` fires (bounded); alerts in `leaving` (the last drill's) may still fire meanwhile.
    Any other alert, or a missing one at the deadline, fails."""
    deadline = time.monotonic() + within
    now: Firing = set()
    leaving = leaving or set()
    while time.monotonic() < deadline:
        now = firing(url)
        assert now <= expected | leaving, f"{what}: alerts that should not fire: {sorted(now - expected - leaving)}"
        if now == expected:
            return
        time.sleep(POLL)
    pytest.fail(f"{what}: after {within:.0f} s, firing {sorted(now)}, expected {sorted(expected)}")


def stays_quiet(url: str, seconds: float, what: str) -> None:
    """No alert fires for `seconds` (longer than every `for:` window)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert firing(url) == set(), f"{what}: {sorted(firing(url))}"
        time.sleep(POLL)


def drill(url: str, expected: Firing, what: str, within: float = FIRE_WITHIN) -> Any:
    """Check that `expected` fires; the returned function checks, after the repair, that it all resolves."""
    wait_alerts(url, expected, within, what)

    def resolved(within: float = RESOLVE_WITHIN) -> None:
        wait_alerts(url, set(), within, what + ", repaired", leaving=expected)

    return resolved


def test_web_cluster_failures_raise_their_alerts_and_resolve(tmp_path: Path) -> None:
    (tmp_path / "guests").mkdir()
    with booted_cluster(WEB, tmp_path / "guests") as vms:
        for vm in vms.values():
            wait_firstboot(vm)
        with prometheus(WEB, vms, tmp_path) as (url, tunnels):
            stays_quiet(url, QUIET, "a healthy cluster")

            # A dead share: both web nodes say so and leave the pool, which is then empty.
            vms["nfs1"].ssh("sudo systemctl stop nfs-server")
            resolved = drill(url, {("ShareDown", "web1"), ("ShareDown", "web2"), ("OutOfPool", "web1"),
                                   ("OutOfPool", "web2"), ("PoolEmpty", "lb1")}, "share stopped")
            vms["nfs1"].ssh("sudo systemctl start nfs-server")
            resolved()

            # The load balancer loses its floating address.
            vms["lb1"].ssh("sudo systemctl stop keepalived")
            resolved = drill(url, {("LbVirtualAddressLost", "lb1")}, "keepalived stopped")
            vms["lb1"].ssh("sudo systemctl start keepalived")
            resolved()

            # A web node killed: it is down, and out of the pool (its exporters' silence is HostDown's).
            tunnels.stop("web2")
            vms["web2"].power_off()
            resolved = drill(url, {("HostDown", "web2"), ("OutOfPool", "web2")}, "web2 killed")
            vms["web2"].power_on().wait_for_ssh(timeout=900)
            tunnels.start(vms["web2"])
            resolved(RESOLVE_WITHIN + 300)


def test_a_replica_that_stops_replicating_raises_its_alert_and_resolves(tmp_path: Path) -> None:
    (tmp_path / "guests").mkdir()
    with booted_cluster(SQL, tmp_path / "guests") as vms:
        for vm in vms.values():
            wait_firstboot(vm)
        with prometheus(SQL, vms, tmp_path) as (url, _):
            stays_quiet(url, QUIET, "a healthy pair")
            vms["db2"].ssh(["sudo", "mysql", "-e", "STOP SLAVE"])
            resolved = drill(url, {("ReplicaNotReplicating", "db2")}, "replication stopped")
            vms["db2"].ssh(["sudo", "mysql", "-e", "START SLAVE"])
            resolved()
