"""`golden backup restore-env` over fake SSH transports: the writer restores the databases from the backing
host's backups, every web node its own files, and one host's failure is reported without hiding the others'."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from goldenimage.apply.target import SSHTarget
from goldenimage.apply.transport import SSHOptions
from goldenimage.core.errors import InputError
from goldenimage.hosting.restore_env import restore_environment
from tests.unit.test_backup import with_backup
from tests.unit.test_cluster import cluster

AT = datetime(2026, 12, 7, 3, 12, 44, tzinfo=UTC)


class FakeHost:
    calls: list[tuple[str, list[str]]] = []
    failing: set[str] = set()
    unchecked: set[str] = set()

    def __init__(self, target: SSHTarget, options: SSHOptions) -> None:
        self.name = target.host

    def run(self, argv: Sequence[str], *, root: bool = True, timeout: float = 60, check: bool = True,
            secrets: Sequence[str] = (), cleanup: bool = False) -> subprocess.CompletedProcess[str]:
        if argv[0] == "mktemp":
            return subprocess.CompletedProcess(list(argv), 0, "/tmp/golden-env.abc123\n", "")
        if argv[0] != "python3":
            return subprocess.CompletedProcess(list(argv), 0, "", "")
        args = list(argv[2:])
        FakeHost.calls.append((self.name, args))
        if self.name in FakeHost.failing:
            return subprocess.CompletedProcess(list(argv), 2, "", "golden-firstboot: error: no files backup of "
                                               "/srv/env/shop/htdocs at or before 2026-12-07T03:12:44Z\n")
        if "databases" in args:
            report = {"databases": ["shop_1"], "reached": "2026-12-07T03:12:44Z", "archived": "/x.sql",
                      "tables": [{"table": "shop_1.orders", "rows": 12, "checksum": "99"}]}
        else:
            report = {"from": "files abc (2026-12-07T03:00:00Z)", "files": 4, "bytes": 812, "archived": "/y",
                      "checked": "sha256, size, mode, owner and mtime of each file against restic dump"}
            if self.name in FakeHost.unchecked:
                report = {"from": "files abc (2026-12-07T03:00:00Z)", "files": 4, "archived": "/y"}
        return subprocess.CompletedProcess(list(argv), 0, json.dumps(report, indent=2) + "\n", "")

    def put(self, files: Sequence[Path], remote_dir: str, *, timeout: float = 60) -> None:
        pass

    def close(self) -> None:
        pass


def files(tmp_path: Path, data: dict) -> tuple[Path, Path]:
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(data))
    names = [h["name"] for h in data["hosts"]]
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump({"hosts": {n: n for n in names}}))
    FakeHost.calls, FakeHost.failing, FakeHost.unchecked = [], set(), set()
    return tmp_path / "cluster.yaml", tmp_path / "inventory.yaml"


def test_the_writer_restores_from_the_backing_replica_and_each_web_node_its_own_files(tmp_path):
    cluster_file, inventory = files(tmp_path, with_backup())
    FakeHost.failing = {"web9"}
    report = restore_environment("shop", AT, cluster_file, inventory, options=SSHOptions(), factory=FakeHost)
    by_host = {host: args for host, args in FakeHost.calls}
    assert by_host["db1"] == ["backup", "restore-env", "--name", "shop", "--at", "2026-12-07T03:12:44Z",
                              "--part", "databases", "--source", "db2"]  # db2 backs the pair up, db1 writes
    assert {h for h, args in FakeHost.calls if "files" in args} == {"web1", "web2", "web9"}
    assert not report.ok and list(report.failed) == ["web9"] and "no files backup" in report.failed["web9"]
    text = "\n".join(report.lines())
    assert "shop: databases shop_1 as of 2026-12-07T03:12:44Z (1 tables, 12 rows, every table checked)" in text
    assert "shop: files on web1 as of files abc (2026-12-07T03:00:00Z): 4 files, 812 bytes, each checked against " \
           "the snapshot (sha256, size, mode, owner, mtime); the folder replaced: /y" in text
    assert "web9: FAILED: " in text


def test_a_web_node_that_reports_no_check_of_its_files_is_not_reported_as_restored(tmp_path):
    cluster_file, inventory = files(tmp_path, with_backup())
    FakeHost.unchecked = {"web2"}
    report = restore_environment("shop", AT, cluster_file, inventory, options=SSHOptions(), factory=FakeHost)
    assert sorted(report.files) == ["web1", "web9"] and list(report.failed) == ["web2"]
    assert report.failed["web2"] == "restoring shop's files: the host reported no check of what it restored"
    assert not report.ok


def test_a_cluster_without_backups_is_refused_before_any_host(tmp_path):
    cluster_file, inventory = files(tmp_path, cluster())
    with pytest.raises(InputError, match="backup: missing"):
        restore_environment("shop", AT, cluster_file, inventory, options=SSHOptions(), factory=FakeHost)
    assert FakeHost.calls == []
