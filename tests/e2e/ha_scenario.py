"""The HA drill shared by `make test-ha` (tests/e2e/test_ha.py) and bench/ha: examples/cluster-ha.yaml booted on
a private network with a load client; a bounded request stream to the virtual address while the active load
balancer, a web node and the SQL node taking writes are killed (QEMU killed: no shutdown) and booted again,
one at a time. The figures (tests/e2e/ha_figures.py: per phase requests sent, failed, served late, the client's
liveness, outages measured from answers, latency percentiles; time back in service) come from the client's log.

`sql_infrastructure` is the short drill: the load balancer pair and the Galera pair alone (no web tier), a
client guest writing through the mysql client to VIP:3306; it kills the active load balancer and the SQL
writer. Five guests, no web or nfs image.

Knobs (environment, for shorter runs): HA_RATE (requests/s, 5), HA_DWELL (seconds the stream runs between
events, 30), HA_MAX_SECONDS (the stream's hard limit, 2400), HA_IMAGES=latest (boot the newest artifacts of
images/ as they are, instead of baking the current tree: for a run right after a change that does not touch
what the guests run), HA_LOGS (a folder for what the drill leaves to read afterwards: the client's records and
each guest's journal of the units that matter; default: the test's temporary folder, logs/)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from goldenimage.bake import store
from goldenimage.bake.pipeline import bake
from goldenimage.core.ssh_keys import ephemeral_keypair
from goldenimage.render.cluster import render_cluster
from goldenimage.render.seed import write_seed_iso
from goldenimage.render.userdata import render_host_user_data, render_meta_data
from goldenimage.verify.cluster_vms import ClusterHost, ClusterNet
from goldenimage.verify.mirror_relay import apt_proxy_conf, guestfwd, mirror_hosts
from goldenimage.verify.vm import VM
from tests.e2e.drill_record import BOOTED
from tests.e2e.ha_figures import (  # noqa: F401 -- test_ha and bench/ha take them from here
    PhaseFigures,
    acknowledged_ids,
    figures,
    outages,
    success_rate,
    table,
)

ROOT = Path(__file__).resolve().parents[2]
CLIENT_SCRIPT = Path(__file__).with_name("ha_client.py")
VIRTUAL_ADDRESS = "10.10.0.5"
CLIENT = {"name": "client", "profile": "nfs", "address": "10.10.0.40", "exports": ["/srv/nfs/unused"]}
PHASE_FILE = "/tmp/ha-phase"
STOP_FILE = "/tmp/ha-stop"
CLIENT_LOG = "/tmp/ha-client.log"
POLL = 3.0
BOOT_TIMEOUT = 1800.0
BACK_TIMEOUT = 1200.0
SQL_MEMORY = 1024
OTHER_MEMORY = 768
SSH_ATTEMPTS = 4
#: the units whose journal each guest leaves in HA_LOGS (a missing unit prints nothing)
JOURNAL_UNITS = ("golden-firstboot", "mariadb", "golden-galera-health", "garbd", "haproxy", "keepalived",
                 "apache2", "nfs-server", "remote-fs.target")


def knob(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


def image(profile: str) -> Path:
    """The profile's image the drill boots (kept in drill_record.BOOTED: the drill's outcome is recorded for it)."""
    if os.environ.get("HA_IMAGES") == "latest":
        found = store.latest(profile, 12)
        if found is None:
            raise AssertionError(f"HA_IMAGES=latest: no {profile} artifact in images/")
    else:
        found = bake(profile, 12)
    BOOTED.append(found.qcow2)
    return found.qcow2


# --- the figures, from the client's log: tests/e2e/ha_figures.py ------------------------------------------------


# --- the infrastructure -----------------------------------------------------------------------------------------

INSERT_PHP = """<?php
// goldenimage HA drill: one row inserted through the load balancers' SQL address; its id is the acknowledgement.
header('Content-Type: text/plain');
header('Cache-Control: no-store');
mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);
try {
    $db = mysqli_init();
    $db->options(MYSQLI_OPT_CONNECT_TIMEOUT, 3);
    $db->real_connect('%(vip)s', 'shop', '%(password)s', 'shop', 3306);
    $db->query("INSERT INTO ha_log (web) VALUES ('" . gethostname() . "')");
    $id = $db->insert_id;
    $node = $db->query('SELECT @@hostname')->fetch_row()[0];
    echo "id=$id node=$node\\n";
} catch (Throwable $e) {
    http_response_code(503);
    echo "error\\n";
}
"""

READ_PHP = """<?php
header('Content-Type: text/plain');
header('Cache-Control: no-store');
mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);
try {
    $db = mysqli_init();
    $db->options(MYSQLI_OPT_CONNECT_TIMEOUT, 3);
    $db->real_connect('%(vip)s', 'shop', '%(password)s', 'shop', 3306);
    $row = $db->query('SELECT COUNT(*), @@hostname FROM ha_log')->fetch_row();
    echo "count=$row[0] node=$row[1]\\n";
} catch (Throwable $e) {
    http_response_code(503);
    echo "error\\n";
}
"""


@dataclass
class Drill:
    net: ClusterNet
    rendered: Path
    hosts: dict[str, dict[str, Any]]
    log: Callable[[str], None] = print
    #: the short drill's target (mysql://...); the full drill's is the web tier on the virtual address
    sql_url: str | None = None

    def __getitem__(self, name: str) -> VM:
        return self.net[name]

    def sh(self, name: str, command: str, check: bool = True, timeout: float = 120) -> str:
        """Run a command on a guest; SSH itself failing (exit 255: a starved guest slow to answer) is retried a
        few times, a failing command is not."""
        for attempt in range(SSH_ATTEMPTS):
            done = self.net[name].ssh(command, check=False, timeout=timeout)
            if done.returncode != 255 or attempt == SSH_ATTEMPTS - 1:
                break
            self.log(f"{name}: ssh failed ({done.stderr.strip()[-120:]}), again")
            time.sleep(5)
        if check and done.returncode != 0:
            raise AssertionError(f"{name}: `{command}` exited {done.returncode}: {done.stderr.strip()[-500:]}")
        return done.stdout

    def sql(self, name: str, query: str) -> str:
        return self.net[name].ssh(["sudo", "mysql", "-N", "-B", "-e", query], timeout=120).stdout.strip()

    def holder(self) -> str | None:
        """The load balancer holding the virtual address."""
        for name in ("lb1", "lb2"):
            if self.net[name].running:
                out = self.sh(name, "ip -4 -o addr show", check=False, timeout=60)
                if f" {VIRTUAL_ADDRESS}/" in out:
                    return name
        return None

    def client_get(self, url: str) -> tuple[int, str]:
        out = self.sh("client", f"curl -s -m 5 -o /dev/stdout -w ' %{{http_code}}' {url}", check=False, timeout=60)
        body, _, code = out.rpartition(" ")
        return (int(code) if code.isdigit() else 0), body

    def wait(self, what: str, ready: Callable[[], bool], timeout: float = BACK_TIMEOUT) -> float:
        """Poll ready() (bounded); the seconds it took. AssertionError when it never came."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            try:
                if ready():
                    return time.monotonic() - start
            except Exception as exc:  # noqa: BLE001 -- a guest still booting refuses SSH: keep polling
                self.log(f"{what}: not yet ({type(exc).__name__})")
            time.sleep(POLL)
        raise AssertionError(f"{what}: not after {timeout:.0f}s")

    def phase(self, name: str) -> None:
        self.sh("client", f"echo {name} > {PHASE_FILE}")
        self.log(f"phase {name}")


def cluster_spec(public_key: str) -> dict[str, Any]:
    spec = yaml.safe_load((ROOT / "examples" / "cluster-ha.yaml").read_text())
    spec["ssh_authorized_keys"] = [public_key]
    spec["hosts"].append(dict(CLIENT))
    return spec


def render_spec(tmp: Path, spec: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Write the cluster file, render it; the rendered folder and its hosts.json."""
    (tmp / "cluster.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    rendered = tmp / "rendered"
    render_cluster(tmp / "cluster.yaml", rendered)
    return rendered, json.loads((rendered / "hosts.json").read_text())


def boot_hosts(net: ClusterNet, rendered: Path, hosts: dict[str, Any], images: dict[str, Path]) -> None:
    """Boot every rendered host from its profile's image (Galera nodes get more memory)."""
    for name, host in hosts.items():
        net.memory_mib = SQL_MEMORY if host["profile"] == "sql-galera" else OTHER_MEMORY
        net.boot(ClusterHost(name, images[host["profile"]], rendered / name / "seed.iso", host["mac"],
                             host.get("uplink_mac")))


@contextmanager
def infrastructure(tmp: Path, log: Callable[[str], None] = print, mirror: bool = False) -> Iterator[Drill]:
    """examples/cluster-ha.yaml + the client, baked (or reused), rendered, booted, first boot done everywhere,
    the drill's table and PHP pages in place. Every guest is stopped on the way out. With `mirror`, apt in each
    guest reaches the Debian mirror through the mirror relay (and nothing else): for a converge over SSH."""
    images = {name: image(name) for name in ("sql-galera", "lb", "web", "nfs")}
    key = ephemeral_keypair(tmp)
    rendered, hosts = render_spec(tmp, cluster_spec(key.public))
    relay = [guestfwd(mirror_hosts(12))] if mirror else []
    with ClusterNet(key, tmp / "vms", memory_mib=OTHER_MEMORY, netdev_options=relay) as net:
        boot_hosts(net, rendered, hosts, images)
        drill = Drill(net, rendered, hosts, log)
        with kept_logs(drill, tmp):
            net.wait_for_ssh(timeout=BOOT_TIMEOUT)
            for name in hosts:
                wait_firstboot(drill, name)
                if mirror:
                    net[name].ssh("sudo tee /etc/apt/apt.conf.d/00proxy >/dev/null", input=apt_proxy_conf())
            prepare(drill)
            yield drill


def keep_logs(drill: Drill, folder: Path) -> None:
    """What a failed (or passed) drill leaves to read: the client's records and, per running guest, the journal
    of the units that matter since boot, and every guest's serial console (what a guest without SSH leaves).
    Best effort: a guest that does not answer is noted, not fatal."""
    folder.mkdir(parents=True, exist_ok=True)
    units = " ".join(f"-u {unit}" for unit in JOURNAL_UNITS)
    for name in list(drill.net.vms):
        if drill.net[name].serial_log.is_file():
            shutil.copyfile(drill.net[name].serial_log, folder / f"{name}-console.log")
        if not drill.net[name].running:
            continue
        try:
            text = drill.sh(name, f"sudo journalctl -b -o short-monotonic --no-pager {units}", check=False, timeout=120)
            if name == "client":
                text += drill.sh(name, f"cat {CLIENT_LOG} 2>/dev/null", check=False, timeout=300)
        except Exception as exc:  # noqa: BLE001 -- a starved or dead guest: say so and go on
            text = f"(no journal: {type(exc).__name__}: {exc})\n"
        (folder / f"{name}.log").write_text(text)
    drill.log(f"logs of the drill: {folder}")


@contextmanager
def kept_logs(drill: Drill, tmp: Path) -> Iterator[Drill]:
    try:
        yield drill
    finally:
        keep_logs(drill, Path(os.environ.get("HA_LOGS") or tmp / "logs"))


def wait_firstboot(drill: Drill, name: str, timeout: float = BOOT_TIMEOUT) -> None:
    def done() -> bool:
        out = drill.sh(name, "sudo golden-firstboot status --json", check=False, timeout=60).strip()
        data = json.loads(out) if out.startswith("{") else {}
        if data.get("result") == "failed":
            journal = drill.sh(name, "sudo journalctl -b -u golden-firstboot --no-pager | tail -n 40", check=False)
            raise AssertionError(f"{name}: first boot failed:\n{journal}")
        return data.get("result") == "done"

    drill.wait(f"{name}: first boot", done, timeout)


def prepare(drill: Drill) -> None:
    """The drill's table (through db1: Galera carries it to db2) and its two PHP pages on the shared docroot."""
    password = json.loads((drill.rendered / "secrets.json").read_text())["db_users.shop"]
    drill.sql("db1", "CREATE TABLE IF NOT EXISTS shop.ha_log (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
                     "web VARCHAR(32), at TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP(3))")
    values = {"vip": VIRTUAL_ADDRESS, "password": password}
    for page, text in (("insert.php", INSERT_PHP), ("read.php", READ_PHP)):
        drill.net["nfs1"].ssh(f"sudo mkdir -p /srv/nfs/www/ha && sudo tee /srv/nfs/www/ha/{page} >/dev/null",
                              input=text % values)
    drill.sh("nfs1", "sudo chmod -R a+rX /srv/nfs/www/ha")
    drill.wait("the write page through the virtual address",
               lambda: drill.client_get(f"http://{VIRTUAL_ADDRESS}/ha/insert.php")[0] == 200, 300)


SQL_HOSTS = ("db1", "db2", "lb1", "lb2")


def client_seed(directory: Path, public_key: str) -> Path:
    """The short drill's client: a sql-galera image with no cluster settings (its own MariaDB stays standalone,
    it only lends its mysql client), on the cluster network at the client's address."""
    address = CLIENT["address"]
    user_data = render_host_user_data("client", {"address": address, "network": "10.10.0.0/24"},
                                      ssh_authorized_keys=[public_key])
    network = yaml.safe_dump({"version": 2, "ethernets": {
        "eth0": {"match": {"macaddress": "52:54:00:20:00:28"}, "set-name": "eth0", "dhcp4": True},
        "eth1": {"match": {"macaddress": "52:54:00:10:00:28"}, "set-name": "eth1", "addresses": [f"{address}/24"]},
    }}, sort_keys=False)
    directory.mkdir(parents=True, exist_ok=True)
    return write_seed_iso(directory / "seed.iso", user_data, render_meta_data("ha-client-1", "client"), network)


@contextmanager
def sql_infrastructure(tmp: Path, log: Callable[[str], None] = print) -> Iterator[Drill]:
    """The short drill: lb1, lb2 (garbd), db1, db2 of examples/cluster-ha.yaml and a mysql client guest."""
    images = {name: image(name) for name in ("sql-galera", "lb")}
    key = ephemeral_keypair(tmp)
    spec = yaml.safe_load((ROOT / "examples" / "cluster-ha.yaml").read_text())
    spec["ssh_authorized_keys"] = [key.public]
    spec["hosts"] = [h for h in spec["hosts"] if h["name"] in SQL_HOSTS]
    rendered, hosts = render_spec(tmp, spec)
    with ClusterNet(key, tmp / "vms", memory_mib=OTHER_MEMORY) as net:
        boot_hosts(net, rendered, hosts, images)
        net.memory_mib = OTHER_MEMORY
        net.boot(ClusterHost("client", images["sql-galera"], client_seed(tmp / "client", key.public),
                             "52:54:00:10:00:28", "52:54:00:20:00:28"))
        drill = Drill(net, rendered, hosts, log)
        with kept_logs(drill, tmp):
            net.wait_for_ssh(timeout=BOOT_TIMEOUT)
            for name in hosts:
                wait_firstboot(drill, name)
            drill.sql("db1", "CREATE TABLE IF NOT EXISTS shop.ha_log (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
                         "web VARCHAR(32), at TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP(3))")
            drill.sql_url = "mysql://shop:{}@{}/shop".format(
                json.loads((rendered / "secrets.json").read_text())["db_users.shop"], VIRTUAL_ADDRESS)
            yield drill


def start_client(drill: Drill, rate: float, max_seconds: float) -> None:
    client = drill.net["client"]
    client.ssh("cat > /tmp/ha_client.py", input=CLIENT_SCRIPT.read_text())
    target = drill.sql_url or f"http://{VIRTUAL_ADDRESS}"
    client.ssh(f"rm -f {STOP_FILE} {CLIENT_LOG}; echo steady > {PHASE_FILE}; "
               f"nohup python3 /tmp/ha_client.py '{target}' {rate} {max_seconds:.0f} {CLIENT_LOG} "
               f"{PHASE_FILE} {STOP_FILE} >/tmp/ha-client.out 2>&1 </dev/null &")


def stop_client(drill: Drill) -> list[dict[str, Any]]:
    # the client must still be running when the last phase ends: one that died early leaves phases without
    # requests, or with fewer than they should have, and its log alone might not show it
    alive = drill.sh("client", "pgrep -f 'python3 /tmp/[h]a_client' >/dev/null && echo alive || echo gone", check=False)
    if "alive" not in alive:
        output = drill.sh("client", "tail -c 600 /tmp/ha-client.out", check=False)
        raise AssertionError(f"the load client was no longer running when the drill ended (/tmp/ha-client.out: "
                             f"{output})")
    drill.sh("client", f"touch {STOP_FILE}")
    time.sleep(20)  # the requests in flight finish (each is bounded at 5 s)
    text = drill.sh("client", f"cat {CLIENT_LOG}", timeout=300)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --- the failures ------------------------------------------------------------------------------------------------


def lb_failure(drill: Drill, dwell: float) -> tuple[str, float]:
    """Kill the load balancer holding the address; the other takes it; the killed one returns as backup."""
    # VRRP elects a master a few adverts after keepalived starts, which on a starved host can come after the
    # first boot reported done: wait for one (bounded) instead of failing on the first look.
    drill.wait("a load balancer holds the virtual address", lambda: drill.holder() is not None, 180)
    active = drill.holder()
    assert active, "no load balancer holds the virtual address"
    other = "lb2" if active == "lb1" else "lb1"
    drill.phase(f"lb:{active}")
    drill[active].power_off()
    drill.wait(f"{other} takes {VIRTUAL_ADDRESS}", lambda: drill.holder() == other, 120)
    time.sleep(dwell)
    drill[active].power_on()
    started = time.monotonic()

    def back() -> bool:
        out = drill.sh(active, "systemctl is-active haproxy keepalived; ip -4 -o addr show", check=False, timeout=60)
        return out.splitlines()[:2] == ["active", "active"] and f" {VIRTUAL_ADDRESS}/" not in out

    drill.wait(f"{active} back as backup", back)
    back_after = time.monotonic() - started
    time.sleep(dwell)
    # nopreempt: the address stayed where it went
    assert drill.holder() == other, f"the virtual address moved back to {drill.holder()} (a flap)"
    return active, back_after


def web_failure(drill: Drill, dwell: float, name: str = "web1") -> tuple[str, float]:
    drill.phase(f"web:{name}")
    drill[name].power_off()
    time.sleep(dwell)
    drill[name].power_on()
    started = time.monotonic()

    def back() -> bool:
        seen = {drill.client_get(f"http://{VIRTUAL_ADDRESS}/healthz")[1].strip() for _ in range(6)}
        return f"ok {name}" in seen

    drill.wait(f"{name} back in the pool", back)
    back_after = time.monotonic() - started
    time.sleep(dwell)
    return name, back_after


def writer(drill: Drill) -> str:
    """The SQL node taking writes now, as the load balancers route a new connection."""
    if drill.sql_url:
        password = drill.sql_url.split(":", 2)[2].rsplit("@", 1)[0]
        out = drill.net["client"].ssh(f"MYSQL_PWD={password} mysql -h {VIRTUAL_ADDRESS} -u shop -N -B "
                                      "-e 'SELECT @@hostname'", timeout=60).stdout
        return out.strip()
    code, body = drill.client_get(f"http://{VIRTUAL_ADDRESS}/ha/read.php")
    assert code == 200, f"read page answered {code}"
    return body.split("node=", 1)[1].split()[0]


def sql_failure(drill: Drill, dwell: float) -> tuple[str, float]:
    """Kill the node taking writes; writes move to the other; the killed one rejoins (IST) and is Synced."""
    active = writer(drill)
    drill.phase(f"sql:{active}")
    drill[active].power_off()
    time.sleep(dwell)
    drill[active].power_on()
    started = time.monotonic()
    address = drill.hosts[active]["address"]

    def back() -> bool:
        code, _ = drill.client_get(f"http://{address}:9200/")
        return code == 200 and drill.sql(active, "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
                                                 "WHERE VARIABLE_NAME = 'wsrep_local_state_comment'") == "Synced"

    drill.wait(f"{active} Synced again", back)
    back_after = time.monotonic() - started
    time.sleep(dwell)
    return active, back_after


def run_drill(drill: Drill) -> tuple[list[dict[str, Any]], list[PhaseFigures], dict[str, set[int]]]:
    """The stream and the failures (three; two in the short drill, which has no web tier); (client records,
    figures per failure, ids found on each SQL node)."""
    rate, dwell = knob("HA_RATE", 5), knob("HA_DWELL", 30)
    start_client(drill, rate, knob("HA_MAX_SECONDS", 2400))
    time.sleep(dwell)
    back: dict[str, float] = {}
    failures = (lb_failure, sql_failure) if drill.sql_url else (lb_failure, web_failure, sql_failure)
    for failure in failures:
        name, seconds = failure(drill, dwell)
        back[f"{failure.__name__.split('_')[0]}:{name}"] = seconds
    drill.phase("end")
    records = stop_client(drill)
    figs = figures(records, list(back))
    for fig in figs:
        fig.back_in_service = back[fig.phase]
    found = {}
    for name in ("db1", "db2"):
        ids = drill.sql(name, "SELECT id FROM shop.ha_log")
        found[name] = {int(v) for v in ids.split()}
    return records, figs, found
