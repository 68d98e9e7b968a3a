"""The alert rules of `golden cluster monitoring`, proven by `promtool test rules`: from the series a healthy
cluster exports, each failure the drills know is reproduced alone, and exactly its own alert fires (every other
alert of the file is asserted silent at the same instant), with the labels and annotations an operator reads."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from goldenimage.core.run import run
from goldenimage.render.monitoring import CONFIG_FILE, RULES_FILE, write_monitoring

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None,
                                reason="promtool comes with Debian's prometheus package (scripts/install-deps)")

#: Every role once: an async pair, a Galera pair, an NFS share, two web nodes behind a keepalived pair.
CLUSTER = {
    "name": "watch",
    "network": "10.10.0.0/24",
    "monitoring": {"scrapers": ["10.10.0.50"], "thresholds": {"replica_lag_seconds": 120}},
    "hosts": [
        {"name": "db1", "profile": "sql-primary", "address": "10.10.0.11"},
        {"name": "db2", "profile": "sql-replica", "address": "10.10.0.12", "primary": "db1"},
        {"name": "g1", "profile": "sql-galera", "address": "10.10.0.13"},
        {"name": "g2", "profile": "sql-galera", "address": "10.10.0.14"},
        {"name": "nfs1", "profile": "nfs", "address": "10.10.0.30", "exports": ["/srv/nfs/www"]},
        {"name": "web1", "profile": "web", "address": "10.10.0.21", "lb": "lb1", "nfs": "nfs1"},
        {"name": "web2", "profile": "web", "address": "10.10.0.22", "lb": "lb1", "nfs": "nfs1"},
        {"name": "lb1", "profile": "lb", "address": "10.10.0.10", "virtual_address": "10.10.0.5",
         "arbitrator": True},
        {"name": "lb2", "profile": "lb", "address": "10.10.0.9", "virtual_address": "10.10.0.5"},
    ],
}
DAY = 86400
STEPS = 100  # one sample a minute
Key = tuple[str, str, tuple[tuple[str, str], ...]]  # (metric, host, extra labels)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("monitoring")
    (tmp / "cluster.yaml").write_text(yaml.safe_dump(CLUSTER))
    write_monitoring(tmp / "cluster.yaml", tmp / "out")
    return tmp / "out"


def targets(config: dict[str, Any]) -> dict[tuple[str, str], dict[str, str]]:
    """(host, job) -> the labels Prometheus gives that target's series."""
    out = {}
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            labels = dict(static["labels"], job=job["job_name"], instance=static["targets"][0])
            out[(labels["host"], job["job_name"])] = labels
    return out


def k(metric: str, host: str, **labels: str) -> Key:
    return (metric, host, tuple(sorted(labels.items())))


def const(value: float) -> str:
    return f"{value:g}x{STEPS}"


def healthy() -> dict[Key, str]:
    """What the cluster exports when all is well (values: promtool's expanding notation, one a minute)."""
    series: dict[Key, str] = {}
    hosts = {h["name"]: h["profile"] for h in CLUSTER["hosts"]}  # type: ignore[index]
    now = f"0+60x{STEPS}"  # a timestamp that keeps up with the clock: written just now
    for host, profile in hosts.items():
        series[k("golden_facts_timestamp_seconds", host)] = now
        series[k("golden_firstboot_result", host, result="done")] = const(1)
        series[k("golden_firstboot_step", host, step="common.host-settings-private", state="done")] = const(1)
        for mount, fstype, size, avail in (("/", "ext4", 10e9, 6e9), ("/run", "tmpfs", 1e8, 1e5)):
            labels = {"device": "/dev/vda1" if fstype == "ext4" else "tmpfs", "fstype": fstype, "mountpoint": mount}
            series[k("node_filesystem_size_bytes", host, **labels)] = const(size)
            series[k("node_filesystem_avail_bytes", host, **labels)] = const(avail)
        if profile.startswith("sql"):
            series[k("mysql_up", host)] = const(1)
        if profile == "sql-primary":
            series[k("golden_backup_last_success_timestamp_seconds", host)] = now
        if profile == "sql-replica":
            replication = REPLICATION
            series[k("mysql_slave_status_slave_io_running", host, **replication)] = const(1)
            series[k("mysql_slave_status_slave_sql_running", host, **replication)] = const(1)
            series[k("mysql_slave_status_seconds_behind_master", host, **replication)] = const(0)
        if profile == "sql-galera":
            series[k("mysql_global_status_wsrep_local_state", host)] = const(4)
            series[k("mysql_global_status_wsrep_ready", host)] = const(1)
            series[k("golden_certificate_expiry_timestamp_seconds", host,
                     path="/etc/mysql/galera-tls/cert.pem")] = const(300 * DAY)
        if profile == "web":
            series[k("golden_web_share_ok", host, mount="/var/www/html", source="10.10.0.30:/srv/nfs/www")] = const(1)
            series[k("golden_certificate_expiry_timestamp_seconds", host,
                     path="/etc/ssl/certs/ssl-cert-snakeoil.pem")] = const(90 * DAY)
        if profile == "lb":
            series[k("golden_lb_virtual_address_held", host, virtual_address="10.10.0.5")] = const(
                1 if host == "lb1" else 0)
            for proxy in ("web", "web-tls"):  # HTTP, and HTTPS passed through to the same nodes
                for server, state in (("web1", "UP"), ("web2", "UP"), ("dyn1", "MAINT")):
                    series.update(haproxy_state(host, server, state, proxy))
                series[k("haproxy_backend_active_servers", host, proxy=proxy)] = const(2)
                series[k("haproxy_backend_backup_servers", host, proxy=proxy)] = const(0)
    return series


def down(*keys: Key) -> dict[Key, str]:
    return {key: const(0) for key in keys}


def haproxy_state(host: str, server: str, state: str, proxy: str = "web") -> dict[Key, str]:
    return {k("haproxy_server_status", host, proxy=proxy, server=server, state=each): const(int(each == state))
            for each in ("UP", "DOWN", "MAINT")}


REPLICATION = {"master_host": "10.10.0.11", "master_uuid": "0c6a5e1e-0000-11ef-8000-525400100011"}
#: name -> (changed series, the series whose alerts must fire: [(alert, key)], minutes to evaluate at).
SCENARIOS: dict[str, tuple[dict[Key, str], list[tuple[str, Key]], int]] = {
    "healthy": ({}, [], 15),
    "host down": (down(("up", "web2", (("job", "node"),)), ("up", "web2", (("job", "apache"),))),
                  [("HostDown", ("up", "web2", (("job", "node"),)))], 15),
    "exporter down": (down(("up", "db1", (("job", "mysqld"),))),
                      [("ExporterDown", ("up", "db1", (("job", "mysqld"),)))], 15),
    "first boot failed": (
        {k("golden_firstboot_result", "web1", result="done"): const(0),
         k("golden_firstboot_result", "web1", result="failed"): const(1),
         k("golden_firstboot_step", "web1", step="common.host-settings-private", state="done"): const(0),
         k("golden_firstboot_step", "web1", step="common.host-settings-private", state="failed"): const(1)},
        [("FirstBootFailed", k("golden_firstboot_step", "web1", step="common.host-settings-private",
                               state="failed"))], 15),
    "first boot still running after an hour": (
        {k("golden_firstboot_result", "nfs1", result="done"): const(0),
         k("golden_firstboot_result", "nfs1", result="running"): const(1)},
        [("FirstBootUnfinished", k("golden_firstboot_result", "nfs1", result="running"))], 70),
    "mariadb down": (down(k("mysql_up", "db1")), [("MariaDBDown", k("mysql_up", "db1"))], 15),
    "replica stopped": (down(k("mysql_slave_status_slave_sql_running", "db2", **REPLICATION)),
                        [("ReplicaNotReplicating", k("mysql_slave_status_slave_sql_running", "db2",
                                                     **REPLICATION))], 15),
    "replica lagging": ({k("mysql_slave_status_seconds_behind_master", "db2", **REPLICATION): const(900)},
                        [("ReplicaLagging", k("mysql_slave_status_seconds_behind_master", "db2", **REPLICATION))],
                        15),
    "galera node not synced": (
        {k("mysql_global_status_wsrep_local_state", "g2"): const(1),
         k("mysql_global_status_wsrep_ready", "g2"): const(0)},
        [("GaleraNodeNotSynced", k("mysql_global_status_wsrep_local_state", "g2"))], 15),
    "virtual address lost": (
        down(k("golden_lb_virtual_address_held", "lb1", virtual_address="10.10.0.5")),
        [("LbVirtualAddressLost", k("golden_lb_virtual_address_held", h, virtual_address="10.10.0.5"))
         for h in ("lb1", "lb2")], 15),
    "virtual address on both load balancers": (
        {k("golden_lb_virtual_address_held", "lb2", virtual_address="10.10.0.5"): const(1)},
        [("LbVirtualAddressTwice", k("golden_lb_virtual_address_held", h, virtual_address="10.10.0.5"))
         for h in ("lb1", "lb2")], 15),
    "web node out of the pool": (
        {**haproxy_state("lb1", "web2", "DOWN"), **haproxy_state("lb2", "web2", "DOWN")},
        [("OutOfPool", k("haproxy_server_status", h, proxy="web", server="web2", state="DOWN"))
         for h in ("lb1", "lb2")], 15),
    "web node out of the HTTPS pool only (its 443 refuses)": (
        haproxy_state("lb1", "web1", "DOWN", "web-tls"),
        [("OutOfPool", k("haproxy_server_status", "lb1", proxy="web-tls", server="web1", state="DOWN"))], 15),
    # HAProxy before 2.4 (Debian 11) exports one series per server: 0 DOWN, 1 UP, 2 MAINT.
    "web node out of the pool (haproxy 2.2)": (
        {k("haproxy_server_status", "lb1", proxy="web", server="web1"): const(0),
         k("haproxy_server_status", "lb1", proxy="web", server="dyn1"): const(2)},
        [("OutOfPool", k("haproxy_server_status", "lb1", proxy="web", server="web1"))], 15),
    "pool empty": (down(k("haproxy_backend_active_servers", "lb2", proxy="web")),
                   [("PoolEmpty", k("haproxy_backend_active_servers", "lb2", proxy="web"))], 15),
    "share dead": (down(k("golden_web_share_ok", "web1", mount="/var/www/html", source="10.10.0.30:/srv/nfs/www")),
                   [("ShareDown", k("golden_web_share_ok", "web1", mount="/var/www/html",
                                    source="10.10.0.30:/srv/nfs/www"))], 15),
    "certificate about to expire": (
        {k("golden_certificate_expiry_timestamp_seconds", "g1", path="/etc/mysql/galera-tls/cert.pem"): const(
            5 * DAY)},
        [("CertificateExpiring", k("golden_certificate_expiry_timestamp_seconds", "g1",
                                   path="/etc/mysql/galera-tls/cert.pem"))], 15),
    "backup too old": ({k("golden_backup_last_success_timestamp_seconds", "db1"): const(-27 * 3600)},
                       [("BackupTooOld", k("golden_backup_last_success_timestamp_seconds", "db1"))], 15),
    "disk filling": (
        {k("node_filesystem_avail_bytes", "db1", device="/dev/vda1", fstype="ext4", mountpoint="/"): const(5e8)},
        [("DiskFilling", k("node_filesystem_avail_bytes", "db1", device="/dev/vda1", fstype="ext4",
                           mountpoint="/"))], 15),
    "facts not refreshed": ({k("golden_facts_timestamp_seconds", "nfs1"): const(0)},
                            [("FactsStale", k("golden_facts_timestamp_seconds", "nfs1"))], 15),
}


def labels_of(key: Key, where: dict[tuple[str, str], dict[str, str]]) -> dict[str, str]:
    """A series' labels: its target's (the job named in the key, else node for the agent's facts, else the host's
    exporter of that metric family) and its own."""
    metric, host, extra = key
    own = dict(extra)
    job = own.pop("job", None) or {"mysql": "mysqld", "haproxy": "haproxy"}.get(metric.split("_")[0], "node")
    return {**where[(host, job)], **own}


def selector(metric: str, labels: dict[str, str]) -> str:
    return metric + "{" + ",".join(f'{n}="{v}"' for n, v in sorted(labels.items())) + "}"


def fill(template: str, labels: dict[str, str]) -> str:
    """An annotation as Prometheus renders it, for templates that read only labels: a label the series lacks
    fails the test (Prometheus would print <no value> to the operator)."""
    def one(match: re.Match[str]) -> str:
        return labels[match[1]]

    return re.sub(r"\{\{ \$labels\.([a-z_]+) \}\}", one, template)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_each_failure_raises_its_own_alert_and_no_other(rendered: Path, tmp_path: Path, scenario: str) -> None:
    config = yaml.safe_load((rendered / CONFIG_FILE).read_text())
    rules = yaml.safe_load((rendered / RULES_FILE).read_text())["groups"][0]["rules"]
    where = targets(config)
    changes, expected, minutes = SCENARIOS[scenario]
    series = {("up", host, (("job", job),)): const(1) for host, job in where}
    series.update(healthy())
    series.update(changes)
    input_series = [{"series": selector(m, labels_of((m, h, x), where)), "values": v}
                    for (m, h, x), v in series.items()]
    tests = []
    for rule in rules:
        exp = []
        for name, key in expected:
            if name == rule["alert"]:
                labels = {**labels_of(key, where), **rule["labels"]}
                exp.append({"exp_labels": labels,
                            "exp_annotations": {n: fill(t, labels) for n, t in rule["annotations"].items()}})
        tests.append({"eval_time": f"{minutes}m", "alertname": rule["alert"], "exp_alerts": exp})
    assert {name for name, _ in expected} <= {r["alert"] for r in rules}
    test_file = tmp_path / "test.yml"
    test_file.write_text(yaml.safe_dump({
        "rule_files": [str(rendered / RULES_FILE)], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": input_series, "alert_rule_test": tests}]}))
    result = run(["promtool", "test", "rules", str(test_file)], check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_configuration_is_one_prometheus_accepts(rendered: Path) -> None:
    result = run(["promtool", "check", "config", str(rendered / CONFIG_FILE)], check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_names_the_host_its_role_and_a_first_command(rendered: Path) -> None:
    for rule in yaml.safe_load((rendered / RULES_FILE).read_text())["groups"][0]["rules"]:
        notes = rule["annotations"]
        assert "{{ $labels.host }}" in notes["summary"] and "{{ $labels.role }}" in notes["summary"], rule["alert"]
        assert notes["first_command"] and notes["runbook"] and notes["threshold"], rule["alert"]
        assert rule["for"], rule["alert"]
