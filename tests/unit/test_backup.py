"""Backups from the cluster file to the hosts: which host backs up what (the replica, not the writer), the
repository key generated once and kept with the cluster's secrets, the store's credentials never generated;
on the host, one systemd timer per job and a first full backup started; facts per kind."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from goldenimage.model.profiles import resolve
from goldenimage.render.firstboot_bundle import bundle_files
from goldenimage.render.userdata import image_info
from tests.unit.firstboot_fake import run_scenario
from tests.unit.test_cluster import cluster, host_json, problems, render

from golden_firstboot import facts  # isort: skip  (firstboot/ is on sys.path through firstboot_fake)

STORE = {"endpoint": "https://s3.gra.io.cloud.ovh.net", "bucket": "golden-backups", "region": "gra"}
CREDENTIALS = {"backup_access_key": {"env": "S3_ACCESS_KEY"}, "backup_secret_key": {"env": "S3_SECRET_KEY"}}
ENVIRON = {"S3_ACCESS_KEY": "AKIAEXAMPLE", "S3_SECRET_KEY": "s3-secret-example-0123456789"}


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def with_backup(**backup: Any) -> dict[str, Any]:
    data = cluster(backup={"store": dict(STORE), **backup})
    data["secrets"].update(CREDENTIALS)
    data["hosts"].append({"name": "web9", "profile": "web", "address": "10.10.0.29"})  # a web host without a share
    return data


def test_the_replica_backs_up_the_database_and_the_nfs_host_its_exports(tmp_path: Path) -> None:
    out = render(tmp_path, with_backup(schedule={"binlog_seconds": 10}), ENVIRON)
    secrets = json.loads((out / "secrets.json").read_text())
    db2 = host_json(out, "db2")["backup"]
    assert db2 == {
        "repository": "s3:https://s3.gra.io.cloud.ovh.net/golden-backups/shop", "region": "gra", "host": "db2",
        "init": True,
        "password": secrets["backup_password"], "access_key_id": "AKIAEXAMPLE",
        "secret_access_key": "s3-secret-example-0123456789",
        "database": {"schedule": "daily", "binlog_seconds": 10, "max_age": {"full": 86400 + 21600 + 3600,
                                                                           "binlog": 160}},
        "retention": {"last": 3, "daily": 7, "weekly": 4, "monthly": 6}}
    assert len(secrets["backup_password"]) == 32
    db1 = host_json(out, "db1")["backup"]  # the writer is not loaded: it holds the key to be restored onto
    assert "database" not in db1 and "files" not in db1 and db1["password"] == secrets["backup_password"]
    assert host_json(out, "nfs1")["backup"]["files"]["paths"] == ["/srv/nfs/www"]
    assert [h for h in ("db1", "nfs1", "web9") if host_json(out, h)["backup"]["init"]] == []  # db2 alone makes it
    assert "database" not in host_json(out, "nfs1")["backup"]
    # web1's docroot is the NFS export, backed up on nfs1; each web node backs up its environments' homes
    assert host_json(out, "web1")["backup"]["files"]["paths"] == ["/srv/env"]
    assert "database" not in host_json(out, "web1")["backup"]
    assert host_json(out, "web9")["backup"]["files"]["paths"] == ["/var/www/html", "/srv/env"]
    assert "backup" not in host_json(out, "lb1")
    again = render(tmp_path, with_backup(schedule={"binlog_seconds": 10}), ENVIRON)
    assert host_json(again, "db2")["backup"]["password"] == secrets["backup_password"]  # made once, reused


def test_a_primary_without_a_replica_backs_itself_up(tmp_path: Path) -> None:
    data = with_backup()
    data["hosts"] = [h for h in data["hosts"] if h["name"] != "db2"]
    out = render(tmp_path, data, ENVIRON)
    assert host_json(out, "db1")["backup"]["database"]["schedule"] == "daily"


def test_the_store_needs_credentials_that_are_never_generated(tmp_path: Path) -> None:
    data = with_backup()
    data["secrets"].pop("backup_access_key")
    data["secrets"]["backup_secret_key"] = "generate"
    lines = problems(tmp_path, data, ENVIRON)
    assert any("secrets.backup_access_key: missing" in line for line in lines), lines
    assert any("secrets.backup_secret_key: a store credential cannot be generated" in line for line in lines), lines


@pytest.mark.parametrize("store, key", [
    ({"endpoint": "s3.example.com", "bucket": "b-1"}, "backup.store.endpoint"),
    ({"endpoint": "https://s3.example.com/path", "bucket": "b-1"}, "backup.store.endpoint"),
    ({"endpoint": "https://s3.example.com", "bucket": "Bad_Bucket"}, "backup.store.bucket"),
    ({"endpoint": "https://s3.example.com", "bucket": "b-1", "prefix": "../up"}, "backup.store.prefix"),
])
def test_a_bad_store_is_refused_naming_its_key(tmp_path: Path, store: dict[str, str], key: str) -> None:
    data = with_backup()
    data["backup"]["store"] = store
    lines = problems(tmp_path, data, ENVIRON)
    assert any(key in line for line in lines), lines


def test_the_replica_gets_its_timers_and_starts_a_first_full_backup_on_a_fake_host(tmp_path: Path) -> None:
    out = render(tmp_path, with_backup(), ENVIRON)
    scenario = {"image": image_info(resolve("sql-replica"), None), "host": host_json(out, "db2")}
    result = run_scenario(scenario, str(tmp_path / "root"), runs=2)
    first, second = result["runs"]
    assert first["exit"] == 0 and first["steps"]["backup.timers"] == ["done", True], result["log"]
    units = tmp_path / "root" / "etc/systemd/system"
    assert "OnCalendar=daily\nPersistent=true" in (units / "golden-backup-full.timer").read_text()
    assert "OnUnitActiveSec=15s" in (units / "golden-backup-binlog.timer").read_text()
    assert "ExecStart=/usr/local/sbin/golden-firstboot backup run full" in \
        (units / "golden-backup-full.service").read_text()
    assert "ExecStart=/usr/local/sbin/golden-firstboot backup check" in \
        (units / "golden-backup-check.service").read_text()
    assert not (units / "golden-backup-files.timer").exists()
    assert "systemctl start --no-block golden-backup-full.service" in first["commands"]
    secret = "s3-secret-example-0123456789"
    assert not [c for c in first["commands"] if secret in c]
    assert second["exit"] == 0


def test_a_sql_host_that_backs_nothing_up_gets_no_timers_on_a_fake_host(tmp_path: Path) -> None:
    out = render(tmp_path, with_backup(), ENVIRON)
    scenario = {"image": image_info(resolve("sql-primary"), None), "host": host_json(out, "db1")}
    result = run_scenario(scenario, str(tmp_path / "root"), runs=1)
    assert result["runs"][0]["exit"] == 0 and result["runs"][0]["steps"]["backup.timers"][0] == "skipped"
    assert not list((tmp_path / "root" / "etc/systemd/system").glob("golden-backup-*"))


def test_images_carry_no_backup_modules_a_backing_host_gets_them_with_its_settings_and_its_agent_loads_them(
        tmp_path: Path) -> None:
    """Every role's OpenStack bake user-data must stay under Nova's 64 KiB: the image's agent leaves the backup
    out, runs without it, and loads it from the zip a cluster host's user-data writes."""
    import base64
    import gzip
    import subprocess
    import sys
    import zipfile

    import yaml

    from goldenimage.render.firstboot_bundle import BACKUP_ZIP_PATH

    app = gzip.decompress(base64.b64decode(bundle_files()[0]["content"]))
    (tmp_path / "agent.pyz").write_bytes(app)
    assert not [n for n in zipfile.ZipFile(tmp_path / "agent.pyz").namelist() if "backup" in n]
    out = render(tmp_path, with_backup(), ENVIRON)
    files = {f["path"]: f for f in yaml.safe_load((out / "db2" / "user-data").read_text())["write_files"]}
    assert BACKUP_ZIP_PATH not in {f["path"] for f in
                                   yaml.safe_load((out / "lb1" / "user-data").read_text())["write_files"]}
    (tmp_path / "backup.zip").write_bytes(gzip.decompress(base64.b64decode(files[BACKUP_ZIP_PATH]["content"])))

    def agent(*argv: str, extra: bool) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "GOLDEN_FIRSTBOOT_BACKUP_ZIP": str(tmp_path / ("backup.zip" if extra else "none"))}
        return subprocess.run([sys.executable, str(tmp_path / "agent.pyz"), *argv], capture_output=True, text=True,
                              timeout=60, env=env)

    for argv in (["--root", str(tmp_path), "status"], ["--help"]):
        proc = agent(*argv, extra=False)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "backup" not in agent("--help", extra=False).stdout
    loaded = agent("backup", "run", "--help", extra=True)
    assert loaded.returncode == 0 and "full,binlog,files,prune" in loaded.stdout, loaded.stderr
    code = "from golden_firstboot.roles import STEPS; print([s.id for s in STEPS if s.id.startswith('backup')])"
    steps = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(tmp_path / 'agent.pyz')!r}); "
                            + code], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "GOLDEN_FIRSTBOOT_BACKUP_ZIP": str(tmp_path / "backup.zip")})
    assert steps.stdout.strip() == "['backup.timers']", steps.stderr


def test_facts_give_each_kinds_last_good_backup(tmp_path: Path) -> None:
    mark = tmp_path / "var/lib/golden/backup-last-success.binlog"
    mark.parent.mkdir(parents=True)
    mark.write_text("x\n")
    os.utime(mark, (1700000000, 1700000000))
    text = facts.collect(str(tmp_path), now=1700000100.0, addresses=lambda: [], enddate=lambda p: None)
    assert 'golden_backup_last_success_timestamp_seconds{kind="binlog"} 1700000000.0' in text
    assert 'kind="full"' not in text
