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

from goldenimage.apply.backup import AGENT, list_backups, parse_at, restore_files, restore_host
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


FILES = {"snapshot": "ab12cd34", "snapshot_time": "2026-12-07T03:00:00Z", "path": "/srv/nfs/www/logo.png",
         "restored": "/srv/nfs/www/logo.png", "archived": "/var/lib/golden/files-archive/20261207T031500Z/srv/nfs/www/"
         "logo.png", "files": 1, "bytes": 2048, "entries": 1, "checked": "sha256, size, mode, owner and mtime"}


def test_restore_files_sends_the_path_and_utc_and_says_where_the_replaced_version_went() -> None:
    agent = Agent(FILES)
    report = restore_files(agent, "/srv/nfs/www/logo.png", parse_at("2026-12-07T04:15:00+01:00"))  # type: ignore[arg-type]
    assert agent.argv == [AGENT, "backup", "restore-files", "--path", "/srv/nfs/www/logo.png",
                          "--at", "2026-12-07T03:15:00Z"]
    assert report.lines() == [
        "restored /srv/nfs/www/logo.png as of files snapshot ab12cd34 (2026-12-07T03:00:00Z): 1 files, 2048 bytes, "
        "each checked against the snapshot (sha256, size, mode, owner, mtime)",
        "  the version it replaced: /var/lib/golden/files-archive/20261207T031500Z/srv/nfs/www/logo.png (on the host)"]


def test_restore_files_to_a_folder_says_nothing_live_was_touched() -> None:
    agent = Agent(dict(FILES, restored="/root/back/srv/nfs/www/logo.png", archived=None))
    report = restore_files(agent, "/srv/nfs/www/logo.png", parse_at("now"), "/root/back")  # type: ignore[arg-type]
    assert agent.argv[-2:] == ["--to", "/root/back"]
    assert report.lines()[1] == "  under /root/back/srv/nfs/www/logo.png (nothing live touched)"


@pytest.mark.parametrize(("path", "reason"), [("srv/www/x", "not an absolute path"), ("/srv/www/../etc", "not a plain"),
                                              ("/srv//www", "not a plain"), ("/srv/www/", "not a plain"),
                                              ("/srv/www/x\n/etc", "holds a control character")])
def test_restore_files_refuses_a_path_that_is_not_plain_before_asking_the_host(path: str, reason: str) -> None:
    agent = Agent(FILES)
    with pytest.raises(InputError, match=f"^--path .*: {reason}"):
        restore_files(agent, path, parse_at("now"))  # type: ignore[arg-type]
    with pytest.raises(InputError, match=f"^--to .*: {reason}"):
        restore_files(agent, "/srv/www/x", parse_at("now"), path)  # type: ignore[arg-type]
    assert agent.argv == []


def test_restore_files_without_the_hosts_check_is_not_reported_as_done() -> None:
    agent = Agent({k: v for k, v in FILES.items() if k != "checked"})
    with pytest.raises(GoldenError, match="reported no check of what it restored"):
        restore_files(agent, "/srv/nfs/www/logo.png", parse_at("now"))  # type: ignore[arg-type]
    agent = Agent("", 2, "golden-firstboot: error: --path /etc/passwd: not inside this host's backed-up folders "
                         "(/srv/nfs/www)\n")
    with pytest.raises(GoldenError, match=r"^restoring /etc/passwd failed: --path /etc/passwd: not inside this host's "
                                          r"backed-up folders \(/srv/nfs/www\)$"):
        restore_files(agent, "/etc/passwd", parse_at("now"))  # type: ignore[arg-type]


class OpenAgent(Agent):
    def __enter__(self) -> OpenAgent:
        return self

    def __exit__(self, *_: Any) -> None:
        pass


def test_the_restore_files_command_prints_the_report(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    agent = OpenAgent(FILES)
    monkeypatch.setattr("goldenimage.commands.backup_cli._transport", lambda args: agent)
    assert main(["backup", "restore-files", "root@10.10.0.30", "--path", "/srv/nfs/www/logo.png",
                 "--at", "2026-12-07T03:15:00Z"]) == 0
    out = capsys.readouterr().out
    assert "restored /srv/nfs/www/logo.png as of files snapshot ab12cd34" in out and "files-archive" in out
    assert main(["backup", "restore-files", "root@10.10.0.30", "--path", "/srv/nfs/www/../../etc",
                 "--at", "now"]) == 2
    assert "--path '/srv/nfs/www/../../etc': not a plain path" in capsys.readouterr().err
