"""`golden backup`: times are UTC seconds with an explicit zone; a restore is reported only with its table check;
the host's agent does the work over SSH (a transport stand-in answers for it here)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from goldenimage.apply.backup import AGENT, list_backups, parse_at, restore_host
from goldenimage.cli import main
from goldenimage.core.errors import GoldenError, InputError
from tests.unit.test_cluster import cluster


class Agent:
    """Answers `golden-firstboot backup ...` as the host's agent would; records the argv."""

    def __init__(self, stdout: Any, returncode: int = 0, stderr: str = "") -> None:
        self.stdout = stdout if isinstance(stdout, str) else json.dumps(stdout)
        self.returncode, self.stderr = returncode, stderr
        self.argv: list[str] = []

    def run(self, argv: Sequence[str], **_: Any) -> subprocess.CompletedProcess[str]:
        self.argv = list(argv)
        return subprocess.CompletedProcess(argv, self.returncode, self.stdout, self.stderr)


def test_at_takes_iso_8601_with_a_zone_and_gives_utc() -> None:
    assert parse_at("2026-12-07T05:42:43+01:00") == datetime(2026, 12, 7, 4, 42, 43, tzinfo=UTC)
    assert parse_at("2026-12-07T04:42:43.9Z") == datetime(2026, 12, 7, 4, 42, 43, tzinfo=UTC)
    assert parse_at("now", now=datetime(2026, 1, 1, 0, 0, 1, 5, tzinfo=UTC)) == datetime(2026, 1, 1, 0, 0, 1,
                                                                                         tzinfo=UTC)
    with pytest.raises(InputError, match="no time zone"):
        parse_at("2026-12-07T04:42:43")
    with pytest.raises(InputError, match="not a time"):
        parse_at("yesterday")


TABLES = [{"table": "shop.orders", "rows": 1234, "checksum": "99"}]


def test_restore_sends_utc_and_prints_the_tables_it_checked() -> None:
    agent = Agent({"reached": "2026-12-07T04:42:43Z", "tables": TABLES})
    report = restore_host(agent, parse_at("2026-12-07T05:42:43+01:00"), "db2")  # type: ignore[arg-type]
    assert agent.argv == [AGENT, "backup", "restore", "--at", "2026-12-07T04:42:43Z", "--source", "db2"]
    assert report.lines()[0] == "restored db2 as of 2026-12-07T04:42:43Z (1 tables, 1234 rows, every table checked)"
    assert len(report.lines()) == 2


def test_a_restore_short_of_its_time_says_so() -> None:
    agent = Agent({"reached": "2026-12-07T04:40:00Z", "tables": TABLES})
    report = restore_host(agent, parse_at("2026-12-07T04:42:43Z"), None)  # type: ignore[arg-type]
    assert report.lines()[-1] == "the store's binary logs reach 2026-12-07T04:40:00Z only: writes after that are " \
                                 "not in it"


def test_a_restore_without_its_table_check_is_not_reported_as_done() -> None:
    agent = Agent({"reached": "2026-12-07T04:42:43Z"})
    with pytest.raises(GoldenError, match="no table check"):
        restore_host(agent, parse_at("now"), None)  # type: ignore[arg-type]


def test_the_agents_one_line_reason_is_the_error() -> None:
    agent = Agent("", 1, "golden-firstboot: $ restic snapshots\ngolden-firstboot: error: no full backup of db2 at "
                         "or before 2026-12-07T04:42:43Z in s3:...\ngolden-firstboot: hint: list them\n")
    with pytest.raises(GoldenError, match="^the restore failed: no full backup of db2 at or before"):
        restore_host(agent, parse_at("now"), None)  # type: ignore[arg-type]


def test_list_reads_the_agents_snapshots() -> None:
    agent = Agent([{"id": "ab12cd34", "time": "2026-12-07T04:00:00Z", "host": "db2", "kind": "full"}])
    (snap,) = list_backups(agent, "db2")  # type: ignore[arg-type]
    assert agent.argv == [AGENT, "backup", "list", "--host", "db2"]
    assert snap.line().split() == ["2026-12-07T04:00:00Z", "full", "db2", "ab12cd34"]


def test_restore_env_refuses_a_cluster_that_backs_nothing_up(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(cluster()))
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump({"hosts": {h["name"]: h["name"]
                                                                       for h in cluster()["hosts"]}}))
    assert main(["backup", "restore-env", "shop", "--at", "now", "--cluster", str(tmp_path / "cluster.yaml"),
                 "--inventory", str(tmp_path / "inventory.yaml")]) == 2
    assert "cluster.yaml: backup: missing: this cluster backs nothing up" in capsys.readouterr().err
