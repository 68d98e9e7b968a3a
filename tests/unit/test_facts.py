"""The agent's facts for node-exporter's textfile collector, and the monitoring first-boot step: exporters moved to
the cluster address, HAProxy's endpoint open to the scrapers only, and an exporter that cannot start failing
its step with one line."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from goldenimage.core.run import run
from goldenimage.model.cluster import Thresholds
from goldenimage.render.monitoring import alerts
from tests.unit.firstboot_fake import load_fixture, run_scenario

from golden_firstboot import facts  # isort: skip  (on sys.path through firstboot_fake)

NOW = 1_800_000_000.0


def make(root: Path, files: dict[str, Any]) -> None:
    for name, content in files.items():
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content))


def samples(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def test_a_web_load_balancer_host_says_what_its_alerts_read(tmp_path: Path) -> None:
    make(tmp_path, {
        facts.STATUS: {"result": "failed", "steps": {"common.host-settings-private": {"state": "done"},
                                                     "web.share-watch": {"state": "failed", "error": "x"}}},
        facts.SHARE_CONF: {"mount": "/var/www/html", "source": "10.10.0.30:/srv/nfs/www"},
        facts.SHARE_STATUS: {"ok": True, "at": NOW - 60},  # a watcher that stopped writing a minute ago
        facts.HOST: {"lb": {"keepalived": {"virtual_address": "10.10.0.5/24"}}},
        facts.CERTIFICATES[0]: "-----BEGIN CERTIFICATE-----\n",
        facts.BACKUP_MARK: "",
    })
    os.utime(tmp_path / facts.BACKUP_MARK.lstrip("/"), (NOW - 3600, NOW - 3600))
    text = facts.collect(str(tmp_path), now=NOW, addresses=lambda: ["10.10.0.10", "10.10.0.5"],
                         enddate=lambda path: NOW + 86400)
    assert samples(text) == {
        "golden_facts_timestamp_seconds": NOW,
        'golden_firstboot_result{result="failed"}': 1,
        'golden_firstboot_step{state="done",step="common.host-settings-private"}': 1,
        'golden_firstboot_step{state="failed",step="web.share-watch"}': 1,
        'golden_web_share_ok{mount="/var/www/html",source="10.10.0.30:/srv/nfs/www"}': 0,  # stale: down
        'golden_lb_virtual_address_held{virtual_address="10.10.0.5"}': 1,
        'golden_certificate_expiry_timestamp_seconds{path="/etc/ssl/certs/ssl-cert-snakeoil.pem"}': NOW + 86400,
        "golden_backup_last_success_timestamp_seconds": NOW - 3600,
    }


def test_a_host_before_its_first_boot_says_so_and_nothing_it_does_not_have(tmp_path: Path) -> None:
    text = facts.collect(str(tmp_path), now=NOW, addresses=lambda: ["10.10.0.10"], enddate=lambda path: None)
    assert samples(text) == {"golden_facts_timestamp_seconds": NOW, 'golden_firstboot_result{result="none"}': 1}


def test_a_run_refused_for_its_settings_is_a_failed_step_too(tmp_path: Path) -> None:
    make(tmp_path, {facts.STATUS: {"result": "failed", "error": "missing settings: address",
                                   "steps": {"common.host-settings-private": {"state": "skipped"}}}})
    found = samples(facts.collect(str(tmp_path), now=NOW, addresses=lambda: [], enddate=lambda p: None))
    assert found['golden_firstboot_step{state="failed",step="settings"}'] == 1


def test_a_fresh_answering_share_and_an_address_held_elsewhere(tmp_path: Path) -> None:
    make(tmp_path, {facts.SHARE_CONF: {"mount": "/srv", "source": "n:/x"}, facts.SHARE_STATUS: {"ok": True, "at": NOW},
                    facts.HOST: {"lb": {"keepalived": {"virtual_address": "10.10.0.5/24"}}}})
    found = samples(facts.collect(str(tmp_path), now=NOW, addresses=lambda: ["10.10.0.9"], enddate=lambda p: None))
    assert found['golden_web_share_ok{mount="/srv",source="n:/x"}'] == 1
    assert found['golden_lb_virtual_address_held{virtual_address="10.10.0.5"}'] == 0


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool comes with Debian's prometheus package")
def test_the_file_is_one_prometheus_parses(tmp_path: Path) -> None:
    make(tmp_path, {facts.STATUS: {"result": "done", "steps": {'odd "step"\\': {"state": "done"}}}})
    text = facts.collect(str(tmp_path), now=NOW, addresses=lambda: [], enddate=lambda path: None)
    result = run(["promtool", "check", "metrics"], input=text, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_fact_an_alert_reads_is_one_the_agent_writes() -> None:
    read = {name for a in alerts(Thresholds()) for name in re.findall(r"\bgolden_[a-z_]+", a.expr)}
    assert read and read <= set(facts.HELP)


def test_the_file_is_replaced_whole_and_readable_by_the_exporter(tmp_path: Path) -> None:
    path = tmp_path / "node-exporter" / "golden.prom"
    facts.write("a 1\n", str(path))
    facts.write("b 2\n", str(path))
    assert path.read_text() == "b 2\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["golden.prom"]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_certificate_expiry_is_read_by_openssl(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", tmp_path / "key.pem", "-out", cert, "-days", "30", "-subj", "/CN=t"])
    import time

    when = facts.openssl_enddate(str(cert))
    assert when is not None and abs(when - (time.time() + 30 * 86400)) < 120
    assert facts.parse_enddate("notAfter=Mar  1 12:00:00 2036 GMT") == 2087985600.0
    assert facts.parse_enddate("garbage") is None


def test_interface_addresses_from_ip_output() -> None:
    out = ("1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n"
           "3: eth1    inet 10.10.0.10/24 brd 10.10.0.255 scope global eth1\n"
           "3: eth1    inet 10.10.0.5/24 scope global secondary eth1\n")
    assert facts.parse_addresses(out) == ["127.0.0.1", "10.10.0.10", "10.10.0.5"]


# The monitoring step, on the fake host.


def scenario(name: str, **facts_: Any) -> dict[str, Any]:
    data = load_fixture(name)
    data["facts"] = {**(data.get("facts") or {}), **facts_}
    return data


def test_exporters_listen_on_the_cluster_address_only(tmp_path: Path) -> None:
    result = run_scenario(load_fixture("web"), str(tmp_path), runs=1)
    assert result["runs"][0]["steps"]["monitoring.exporters"] == ["done", True]
    apache = (tmp_path / "etc/default/prometheus-apache-exporter").read_text()
    assert 'ARGS="--telemetry.address=10.10.0.21:9117"' in apache
    node = (tmp_path / "etc/default/prometheus-node-exporter").read_text()
    assert 'ARGS="--web.listen-address=10.10.0.21:9100"' in node
    dropin = (tmp_path / "etc/systemd/system/prometheus-apache-exporter.service.d/golden-monitoring.conf").read_text()
    assert "After=network-online.target" in dropin and "Restart=always" in dropin
    timer = (tmp_path / "etc/systemd/system/golden-facts.timer").read_text()
    assert "OnUnitActiveSec=15s" in timer


def test_the_load_balancer_serves_haproxys_metrics_to_the_scrapers_only(tmp_path: Path) -> None:
    run_scenario(load_fixture("lb"), str(tmp_path), runs=1)
    cfg = (tmp_path / "etc/haproxy/conf.d/golden-cluster.cfg").read_text()
    frontend = cfg[cfg.index("frontend golden-metrics"):]
    assert frontend.splitlines()[1:7] == [
        "    bind 10.10.0.10:8405", "    mode http", "    no log",
        "    acl golden_scrapers src 10.10.0.50/32", "    http-request deny if !golden_scrapers",
        "    http-request use-service prometheus-exporter if { path /metrics }"]


def test_sql_hosts_get_a_socket_account_that_never_replicates(tmp_path: Path) -> None:
    result = run_scenario(load_fixture("sql-replica"), str(tmp_path), runs=2)
    first = result["runs"][0]["commands"]
    create = first.index("mysql: CREATE USER IF NOT EXISTS 'prometheus'@'localhost' IDENTIFIED VIA unix_socket")
    assert first[create - 1] == "mysql: SET SESSION sql_log_bin = 0"
    assert not any("CREATE USER IF NOT EXISTS 'prometheus'" in c for c in result["runs"][1]["commands"])
    cnf = tmp_path / "etc/golden/mysqld-exporter.cnf"
    assert stat.S_IMODE(cnf.stat().st_mode) == 0o640 and "user=prometheus" in cnf.read_text()
    assert "--config.my-cnf=/etc/golden/mysqld-exporter.cnf" in (
        tmp_path / "etc/default/prometheus-mysqld-exporter").read_text()


def test_an_exporter_that_cannot_start_fails_first_boot_with_one_line(tmp_path: Path) -> None:
    result = run_scenario(scenario("web", start_failures={"prometheus-apache-exporter": 99}), str(tmp_path), runs=1)
    assert result["runs"][0]["exit"] == 1
    assert result["runs"][0]["steps"]["monitoring.exporters"][0] == "failed"
    status = json.loads((tmp_path / "var/lib/golden/firstboot.json").read_text())
    error = status["steps"]["monitoring.exporters"]["error"]
    assert "\n" not in error
    assert error.startswith("prometheus-apache-exporter does not answer on 10.10.0.21:9117: prometheus-apache-exporter "
                            "is failed, result timeout after 3 restart(s) by golden-firstboot; last journal line: ")


def test_without_a_monitoring_section_no_exporter_is_touched(tmp_path: Path) -> None:
    data = load_fixture("web")
    del data["host"]["monitoring"]
    result = run_scenario(data, str(tmp_path), runs=1)
    assert result["runs"][0]["steps"]["monitoring.exporters"] == ["skipped", None]
    assert not any("prometheus" in c for c in result["runs"][0]["commands"])


def test_profiles_bake_the_exporters_disabled() -> None:
    root = Path(__file__).resolve().parents[2] / "profiles"
    expected = {"base.yaml": "prometheus-node-exporter", "roles/web.yaml": "prometheus-apache-exporter",
                "roles/sql-primary.yaml": "prometheus-mysqld-exporter",
                "roles/sql-replica.yaml": "prometheus-mysqld-exporter",
                "roles/sql-galera.yaml": "prometheus-mysqld-exporter"}
    for name, package in expected.items():
        data = yaml.safe_load((root / name).read_text())
        assert package in data["packages"], name
        assert f"systemctl disable {package} || true" in data["bake_commands"], name


def test_on_a_hardened_host_a_firewall_rule_keeps_the_exporters_for_the_scrapers(tmp_path: Path) -> None:
    data = load_fixture("banking-sql-primary")
    data["host"]["monitoring"] = {"scrapers": ["10.10.0.50/32"], "ports": {"node": 9100, "mysqld": 9104}}
    data.setdefault("files", {})["etc/nftables.conf"] = "#!/usr/sbin/nft -f\nflush ruleset\n"
    result = run_scenario(data, str(tmp_path), runs=2)
    assert "nft -f /etc/golden/monitoring.nft" in result["runs"][0]["commands"]
    assert "nft -f /etc/golden/monitoring.nft" not in result["runs"][1]["commands"]
    rules = (tmp_path / "etc/golden/monitoring.nft").read_text()
    assert "        tcp dport { 9100, 9104 } ip saddr { 10.10.0.50/32 } accept\n" \
           "        tcp dport { 9100, 9104 } drop\n" in rules
    conf = (tmp_path / "etc/nftables.conf").read_text().splitlines()
    assert conf[1] == "flush ruleset" and conf[-1] == 'include "/etc/golden/monitoring.nft"'
    assert conf.count('include "/etc/golden/monitoring.nft"') == 1
