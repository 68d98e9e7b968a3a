"""`golden cluster monitoring` and the cluster file's `monitoring:` section: who may scrape, one line per bad key,
each host told which exporters to move to its cluster address, and a scrape job per exporter."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from goldenimage.cli import main
from goldenimage.core.errors import InputError
from goldenimage.render.monitoring import CONFIG_FILE, RULES_FILE, write_monitoring
from tests.unit.test_cluster import CLUSTER, host_json, render

MONITORED = {**copy.deepcopy(CLUSTER), "monitoring": {"scrapers": ["10.10.0.50", "10.10.0.64/28"]}}


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def problems(tmp_path: Path, data: dict[str, Any]) -> list[str]:
    path = write(tmp_path, data)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(InputError) as caught:
        write_monitoring(path, tmp_path / "out")
    assert caught.value.exit_status == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    return caught.value.message.splitlines()


def test_each_host_is_told_its_exporters_and_who_may_scrape_them(tmp_path: Path) -> None:
    out = render(tmp_path, MONITORED)
    scrapers = ["10.10.0.50/32", "10.10.0.64/28"]
    assert host_json(out, "db2")["monitoring"] == {"scrapers": scrapers, "ports": {"node": 9100, "mysqld": 9104}}
    assert host_json(out, "web1")["monitoring"]["ports"] == {"node": 9100, "apache": 9117}
    assert host_json(out, "lb1")["monitoring"]["ports"] == {"node": 9100, "haproxy": 8405}
    assert host_json(out, "nfs1")["monitoring"]["ports"] == {"node": 9100}


def test_without_a_monitoring_section_hosts_keep_their_exporters_on_loopback(tmp_path: Path) -> None:
    out = render(tmp_path, CLUSTER)
    assert "monitoring" not in host_json(out, "web1")


def test_without_scrapers_the_whole_cluster_network_may_scrape(tmp_path: Path) -> None:
    out = render(tmp_path, {**CLUSTER, "monitoring": {}})
    assert host_json(out, "nfs1")["monitoring"]["scrapers"] == ["10.10.0.0/24"]


def test_scrape_jobs_cover_each_exporter_on_the_cluster_addresses(tmp_path: Path) -> None:
    write_monitoring(write(tmp_path, MONITORED), tmp_path / "out")
    config = yaml.safe_load((tmp_path / "out" / CONFIG_FILE).read_text())
    jobs = {j["job_name"]: [(s["targets"][0], s["labels"]["host"], s["labels"]["role"]) for s in j["static_configs"]]
            for j in config["scrape_configs"]}
    assert jobs["mysqld"] == [("10.10.0.11:9104", "db1", "sql-primary"), ("10.10.0.12:9104", "db2", "sql-replica")]
    assert jobs["apache"] == [("10.10.0.21:9117", "web1", "web"), ("10.10.0.22:9117", "web2", "web")]
    assert jobs["haproxy"] == [("10.10.0.10:8405", "lb1", "lb")]
    assert len(jobs["node"]) == len(MONITORED["hosts"])
    assert config["rule_files"] == [RULES_FILE] and (tmp_path / "out" / RULES_FILE).is_file()


def test_thresholds_from_the_cluster_file_reach_the_rules(tmp_path: Path) -> None:
    data = {**MONITORED, "monitoring": {"thresholds": {"disk_free_percent": 20, "replica_lag_seconds": 60}}}
    write_monitoring(write(tmp_path, data), tmp_path / "out")
    rules = {r["alert"]: r for r in yaml.safe_load((tmp_path / "out" / RULES_FILE).read_text())["groups"][0]["rules"]}
    assert rules["DiskFilling"]["expr"].endswith("< 20")
    assert rules["ReplicaLagging"]["expr"] == "mysql_slave_status_seconds_behind_master > 60"


@pytest.mark.parametrize(("monitoring", "line"), [
    ({"scrapers": ["192.168.1.5"]},
     "cluster.yaml: monitoring.scrapers[0]: '192.168.1.5' is not an address or a network inside the cluster "
     "network 10.10.0.0/24 (exporters stay in it)"),
    ({"scrapers": ["10.10.0.0/16"]}, "cluster.yaml: monitoring.scrapers[0]: '10.10.0.0/16' is not an address"),
    ({"scrape_interval": 1}, "cluster.yaml: monitoring.scrape_interval: Input should be greater than or equal to 5"),
    ({"thresholds": {"disk_free": 10}}, "cluster.yaml: monitoring.thresholds.disk_free: unknown key"),
    ({"scraper": ["10.10.0.50"]}, "cluster.yaml: monitoring.scraper: unknown key"),
])
def test_a_bad_monitoring_section_is_one_line_naming_the_key(tmp_path: Path, monitoring: dict[str, Any],
                                                             line: str) -> None:
    (found,) = problems(tmp_path, {**CLUSTER, "monitoring": monitoring})
    assert found.startswith(line)


def test_monitoring_needs_the_section_that_moves_the_exporters(tmp_path: Path) -> None:
    (found,) = problems(tmp_path, CLUSTER)
    assert found.startswith("cluster.yaml: monitoring: missing:")


def test_the_command_writes_both_files_and_refuses_a_directory_it_does_not_own(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, MONITORED)
    assert main(["cluster", "monitoring", str(path), "--out", "mon"]) == 0
    assert capsys.readouterr().out.split() == [f"mon/{CONFIG_FILE}", f"mon/{RULES_FILE}"]
    assert main(["cluster", "monitoring", str(path), "--out", "mon"]) == 0  # its own output is replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert main(["cluster", "monitoring", str(path), "--out", "mine"]) == 2
    assert "not written by golden" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_the_shipped_example_has_a_monitoring_section_that_renders(tmp_path: Path) -> None:
    from tests.conftest import EXAMPLES

    assert write_monitoring(EXAMPLES / "cluster.yaml", tmp_path / "out")


def test_the_readme_table_lists_every_alert_with_its_window_and_first_command() -> None:
    import re

    from goldenimage.model.cluster import Thresholds
    from goldenimage.render.monitoring import alerts
    from tests.conftest import ROOT

    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Watching a fleet"):]
    rows = {line.split(" | ")[0].strip("| "): line for line in section.splitlines() if line.startswith("| ")}
    for alert in alerts(Thresholds()):
        row = rows.get(alert.name)
        assert row is not None, alert.name
        command = re.sub(r"\{\{ \$labels\.([a-z_]+) \}\}", r"<\1>", alert.first_command)
        assert f"(`for: {alert.window}`) | `{command}` |" in row, alert.name
