"""`golden cluster monitoring`: a Prometheus scrape configuration for a cluster file's hosts and the alert rules
for every failure the drills know, each with its threshold, `for:` window, runbook text and first command.

DIR/prometheus.yml (scrape jobs: node on every host, mysqld on SQL hosts, apache on web hosts, haproxy on load
balancers; each target labelled cluster, host, role, address) and DIR/alerts.yml (its rule_files) are written
into a staging directory beside DIR, which then replaces it. Built as dicts, written with yaml.safe_dump."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..core.outdir import check_replaceable, mark, replace_dir, stage_dir
from ..core.yamlfile import display_path
from ..model.cluster import Cluster, ClusterErrors, Thresholds, load_cluster
from ..model.cluster_check import Roles, check, resolve_roles
from ..model.profile_schema import SQL_ROLES, Role

CONFIG_FILE = "prometheus.yml"
RULES_FILE = "alerts.yml"


@dataclass(frozen=True)
class Exporter:
    """A scrape job: its port on each host's cluster address, and the roles whose hosts run it (all when empty)."""

    job: str
    port: int
    roles: frozenset[Role] = frozenset()

    def runs_on(self, roles: tuple[Role, ...]) -> bool:
        return not self.roles or bool(self.roles & set(roles))


#: Debian's exporters on their packaged ports; HAProxy's own endpoint on 8405 (its documentation's example).
EXPORTERS = (
    Exporter("node", 9100),
    Exporter("mysqld", 9104, frozenset(SQL_ROLES)),
    Exporter("apache", 9117, frozenset({Role.WEB})),
    Exporter("haproxy", 8405, frozenset({Role.LB})),
)


def exporter_ports(roles: tuple[Role, ...]) -> dict[str, int]:
    """The exporters a host with these roles runs, job -> port (what its host.json `monitoring.ports` says)."""
    return {e.job: e.port for e in EXPORTERS if e.runs_on(roles)}


def role_label(roles: tuple[Role, ...]) -> str:
    return ",".join(str(r) for r in roles)


def scrape_config(cluster: Cluster, roles: Roles) -> dict[str, Any]:
    """prometheus.yml: one job per exporter, one static target per host (labelled cluster, host, role, address)."""
    interval = f"{cluster.monitoring.scrape_interval if cluster.monitoring else 15}s"
    jobs = []
    for exporter in EXPORTERS:
        targets = [{"targets": [f"{h.address}:{exporter.port}"],
                    "labels": {"cluster": cluster.name, "host": h.name, "role": role_label(roles[h.name]),
                               "address": str(h.address)}}
                   for h in cluster.hosts if exporter.runs_on(roles[h.name])]
        if targets:
            jobs.append({"job_name": exporter.job, "metrics_path": "/metrics", "static_configs": targets})
    return {"global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [RULES_FILE], "scrape_configs": jobs}


@dataclass(frozen=True)
class Alert:
    """One alert rule as the README's table shows it: name, expression, window, meaning, threshold, first command."""

    name: str
    expr: str
    window: str
    severity: str
    summary: str
    threshold: str
    runbook: str
    first_command: str

    def rule(self) -> dict[str, Any]:
        return {"alert": self.name, "expr": self.expr, "for": self.window,
                "labels": {"severity": self.severity},
                "annotations": {"summary": self.summary, "threshold": self.threshold, "runbook": self.runbook,
                                "first_command": self.first_command}}


HOST = "{{ $labels.host }} ({{ $labels.role }})"
LOCAL_FS = 'fstype!~"tmpfs|ramfs|nfs|nfs4|squashfs|overlay"'


def alerts(t: Thresholds) -> list[Alert]:
    """Every alert, in the order of the README's table."""
    return [
        Alert("HostDown", 'up{job="node"} == 0', "2m", "critical",
              f"{HOST} does not answer: its node exporter at {{{{ $labels.address }}}} is unreachable",
              "no answer for 2 minutes",
              "The host is off, hung, or cut from the cluster network. Look at it from its console (cloud or "
              "hypervisor); once it is back, `golden-firstboot status` on it says whether its role came back too.",
              "ping -c 3 {{ $labels.address }}"),
        Alert("ExporterDown", 'up{job!="node"} == 0 unless on(host) (up{job="node"} == 0)', "5m", "warning",
              f"{HOST}: the {{{{ $labels.job }}}} exporter does not answer (the host does)",
              "no answer for 5 minutes",
              "The exporter's unit stopped or its service (MariaDB, Apache, HAProxy) refuses it: the alerts that "
              "depend on it are blind until it answers. `systemctl --failed` names the unit.",
              "ssh {{ $labels.host }} systemctl --failed"),
        Alert("FirstBootFailed", 'golden_firstboot_step{state="failed"} == 1', "1m", "critical",
              f"{HOST}: first boot failed at step {{{{ $labels.step }}}}",
              "a failed step",
              "golden-firstboot stopped at this step; its status names the reason and the units' journal. Fix "
              "the cause, then `golden-firstboot --rerun` (every step checks before it acts).",
              "ssh {{ $labels.host }} golden-firstboot status"),
        Alert("FirstBootUnfinished", 'golden_firstboot_result{result=~"running|none"} == 1', "1h", "warning",
              f"{HOST}: first boot has not finished",
              "not done after 1 hour",
              "First boot is still waiting (a peer not up, a service that does not start) or never ran.",
              "ssh {{ $labels.host }} golden-firstboot status"),
        Alert("MariaDBDown", "mysql_up == 0", "2m", "critical",
              f"{HOST}: MariaDB does not answer its exporter",
              "down for 2 minutes",
              "The server is stopped or refuses connections; replication and the load balancer's SQL pool "
              "depend on it. Its journal says why.",
              "ssh {{ $labels.host }} journalctl -u mariadb -n 50"),
        Alert("ReplicaNotReplicating",
              "mysql_slave_status_slave_io_running == 0 or mysql_slave_status_slave_sql_running == 0",
              "2m", "critical",
              f"{HOST}: replication from {{{{ $labels.master_host }}}} is stopped",
              "IO or SQL thread not running for 2 minutes",
              "The replica no longer applies its primary's changes: Last_IO_Error or Last_SQL_Error says why "
              "(the primary unreachable, a wrong password, a conflicting row). Reads from it are getting stale.",
              "ssh {{ $labels.host }} mariadb -e 'SHOW SLAVE STATUS\\G'"),
        Alert("ReplicaLagging", f"mysql_slave_status_seconds_behind_master > {t.replica_lag_seconds}", "5m",
              "warning",
              f"{HOST}: the replica is more than {t.replica_lag_seconds} s behind {{{{ $labels.master_host }}}}",
              f"lag over {t.replica_lag_seconds} s for 5 minutes",
              "The replica applies changes slower than its primary makes them (a long transaction, a starved "
              "disk). It catches up by itself once the load falls; reads from it are stale until then.",
              "ssh {{ $labels.host }} mariadb -e 'SHOW SLAVE STATUS\\G'"),
        Alert("GaleraNodeNotSynced",
              "mysql_global_status_wsrep_local_state != 4 or mysql_global_status_wsrep_ready != 1",
              "2m", "critical",
              f"{HOST}: this Galera node is not Synced",
              "not Synced (wsrep_local_state 4) for 2 minutes",
              "The node left the primary component or is still receiving a state transfer: the load balancer's "
              "health check keeps it out of the SQL pool meanwhile. With one node left, the cluster has no "
              "spare.",
              "ssh {{ $labels.host }} mariadb -e \"SHOW STATUS LIKE 'wsrep_local_state_comment'\""),
        Alert("LbVirtualAddressLost",
              "golden_lb_virtual_address_held == 0 and on(cluster, virtual_address) "
              "(sum by (cluster, virtual_address) (golden_lb_virtual_address_held) == 0)",
              "1m", "critical",
              f"{HOST}: no load balancer of the group holds {{{{ $labels.virtual_address }}}}",
              "held by none for 1 minute",
              "Clients reach nothing at the floating address: keepalived is stopped or in FAULT on every load "
              "balancer of the group (its HAProxy check failing).",
              "ssh {{ $labels.host }} journalctl -u keepalived -n 30"),
        Alert("LbVirtualAddressTwice",
              "golden_lb_virtual_address_held == 1 and on(cluster, virtual_address) "
              "(sum by (cluster, virtual_address) (golden_lb_virtual_address_held) > 1)",
              "1m", "critical",
              f"{HOST}: {{{{ $labels.virtual_address }}}} is held by more than one load balancer",
              "held by two for 1 minute",
              "The load balancers do not hear each other's VRRP adverts (a network split, a firewall): both "
              "answer ARP for the address.",
              "ssh {{ $labels.host }} journalctl -u keepalived -n 30"),
        Alert("OutOfPool",
              '(haproxy_server_status{state="DOWN"} == 1) or (haproxy_server_status{state=""} == 0)',
              "1m", "warning",
              f"{HOST}: {{{{ $labels.server }}}} is out of pool {{{{ $labels.proxy }}}} (its health check fails)",
              "health check failing for 1 minute",
              "HAProxy sends no request to this node: its health endpoint fails (Apache or PHP-FPM down, its "
              "share dead) or the node is down; in the HTTPS pool (web-tls), also when its port 443 refuses. "
              "The others carry its load.",
              "ssh {{ $labels.server }} curl -s http://localhost/healthz"),
        Alert("PoolEmpty", "haproxy_backend_active_servers + haproxy_backend_backup_servers == 0", "1m",
              "critical",
              f"{HOST}: pool {{{{ $labels.proxy }}}} has no server up",
              "no server up for 1 minute",
              "Every request to this pool fails with 503.",
              "ssh {{ $labels.host }} journalctl -u haproxy -n 30"),
        Alert("ShareDown", "golden_web_share_ok == 0", "1m", "critical",
              f"{HOST}: the shared docroot {{{{ $labels.source }}}} does not answer",
              "the share watcher's verdict down for 1 minute",
              "The NFS server does not answer statfs within the watcher's deadline (or the share is not "
              "mounted): the node's health endpoint says 503, so the load balancer takes it out.",
              "ssh {{ $labels.host }} journalctl -u golden-share-watch -n 20"),
        Alert("CertificateExpiring",
              f"golden_certificate_expiry_timestamp_seconds - time() < {t.certificate_days * 86400}", "10m",
              "warning",
              f"{HOST}: {{{{ $labels.path }}}} expires in less than {t.certificate_days} days",
              f"less than {t.certificate_days} days left",
              "Renew the certificate before clients (or the Galera peers) refuse it.",
              "ssh {{ $labels.host }} openssl x509 -noout -enddate -in {{ $labels.path }}"),
        Alert("BackupTooOld",
              f"time() - golden_backup_last_success_timestamp_seconds > {t.backup_hours * 3600}", "10m",
              "warning",
              f"{HOST}: the last successful backup is more than {t.backup_hours} hours old",
              f"older than {t.backup_hours} hours",
              "The backup job has not succeeded since; a restore now would lose more than a day. Its "
              "own log says why.",
              "ssh {{ $labels.host }} golden-firstboot backup status"),
        Alert("DiskFilling",
              f"100 * node_filesystem_avail_bytes{{{LOCAL_FS}}} / node_filesystem_size_bytes{{{LOCAL_FS}}} "
              f"< {t.disk_free_percent}",
              "10m", "warning",
              f"{HOST}: {{{{ $labels.mountpoint }}}} has less than {t.disk_free_percent}% free",
              f"under {t.disk_free_percent}% free for 10 minutes",
              "A full file system stops MariaDB, logs and uploads. Find what grew.",
              "ssh {{ $labels.host }} df -h {{ $labels.mountpoint }}"),
        Alert("FactsStale", "time() - golden_facts_timestamp_seconds > 300", "5m", "warning",
              f"{HOST}: golden-facts has not refreshed this host's facts for 5 minutes",
              "older than 5 minutes",
              "The first-boot, share, keepalived and certificate alerts of this host read stale facts.",
              "ssh {{ $labels.host }} systemctl status golden-facts.timer"),
    ]


def alert_rules(cluster: Cluster) -> dict[str, Any]:
    """alerts.yml: one group holding every alert rule."""
    thresholds = cluster.monitoring.thresholds if cluster.monitoring else Thresholds()
    return {"groups": [{"name": f"golden-{cluster.name}", "rules": [a.rule() for a in alerts(thresholds)]}]}


def load(path: Path) -> tuple[Cluster, Roles]:
    """The cluster file checked as `golden cluster render` checks it, and each host's roles; it must say who
    scrapes (`monitoring:`), since the exporters listen on loopback only until it does."""
    where = display_path(path)
    cluster = load_cluster(path)
    roles, errors = resolve_roles(cluster, path.parent, where)
    errors += check(cluster, roles, where)
    if cluster.monitoring is None:
        errors.append(f"{where}: monitoring: missing: exporters listen on the cluster address only once the "
                      "cluster file has a monitoring section (examples/cluster.yaml)")
    if errors:
        raise ClusterErrors(errors)
    return cluster, roles


def _dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, width=120, allow_unicode=True)


def write_monitoring(path: Path, out_dir: Path) -> list[Path]:
    """Write DIR/prometheus.yml and DIR/alerts.yml for the cluster file at `path`; InputError, nothing written,
    on bad input. The written files, in order."""
    path, out_dir = Path(path), Path(out_dir)
    check_replaceable(out_dir)
    cluster, roles = load(path)
    stage = stage_dir(out_dir)
    try:
        stage.chmod(0o755)
        (stage / CONFIG_FILE).write_text(_dump(scrape_config(cluster, roles)))
        (stage / RULES_FILE).write_text(_dump(alert_rules(cluster)))
        mark(stage, "golden cluster monitoring")
        replace_dir(stage, out_dir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return [out_dir / CONFIG_FILE, out_dir / RULES_FILE]
