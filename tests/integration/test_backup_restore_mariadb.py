"""The backup role's jobs and restore against real components on this host: a throwaway mariadbd (sockets in a
temporary folder, no network), real mariabackup and mysqlbinlog, real restic, and nanio (the S3 server that
verifies Signature V4) on 127.0.0.1. The same functions the golden-backup-* units and `golden-firstboot backup
restore` run, not a copy.

The drill in small: a full copy, a writer acknowledging rows, binlogs shipped, a table dropped at a noted
second; the restore to one second before the drop onto a fresh data directory holds every row acknowledged
before that second and none begun after it. A deleted file comes back. The bucket holds no plaintext."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from goldenimage.apply.backup import AGENT, list_backups
from tests.conftest import ROOT
from tests.mariadb_server import Server
from tests.unit import firstboot_fake  # noqa: F401  (puts firstboot/ on sys.path)

from golden_firstboot import backup_jobs, backup_restore, backup_restore_env, backup_restore_files  # isort: skip
from golden_firstboot.steps import Context  # isort: skip
from golden_firstboot.system import FirstbootError  # isort: skip

ROW_SECRET = "GOLDEN-PLAINTEXT-ROW-7f3a91"
FILE_SECRET = "GOLDEN-PLAINTEXT-FILE-9c1e55"
BUCKET = "golden-drill"


@pytest.fixture
def stack(tmp_path: Path, sigv4_s3) -> Iterator[dict[str, Any]]:
    for tool in ("mariadbd", "mariadb-backup", "mariadb-binlog", "restic"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is missing: scripts/install-deps installs mariadb-server-core, mariadb-backup "
                        "and restic")
    (tmp_path / "src").mkdir()
    source = Server(tmp_path / "src", binlog="mysql-bin")
    servers = [source]
    docroot = tmp_path / "www"
    docroot.mkdir()
    host = {"hostname": "db1", "backup": {"init": True,
        "repository": f"s3:{sigv4_s3.endpoint}/{BUCKET}/{tmp_path.name}", "password": "drill-" + os.urandom(8).hex(),
        "access_key_id": sigv4_s3.access_key, "secret_access_key": sigv4_s3.secret_key,
        "database": {"socket": str(source.socket), "datadir": str(source.data), "spool": str(tmp_path / "spool"),
                     "max_age": {"full": 3600, "binlog": 120}},
        "files": {"paths": [str(docroot)], "max_age": {"files": 3600}}}}
    lines: list[str] = []
    ctx = Context({"roles": ["sql-primary"]}, host, root=str(tmp_path / "root"), logger=lines.append)
    try:
        yield {"ctx": ctx, "source": source, "servers": servers, "tmp": tmp_path, "docroot": docroot,
               "s3": sigv4_s3, "lines": lines}
    finally:
        for server in servers:
            server.stop()


class Writer(threading.Thread):
    """A client inserting rows one at a time, noting when each began and when the server acknowledged it."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.rows: list[tuple[int, float, float]] = []  # (id, began, acknowledged)
        self.stop = threading.Event()

    def run(self) -> None:
        number = 1000
        deadline = time.monotonic() + 120  # bounded whatever happens
        while not self.stop.is_set() and time.monotonic() < deadline:
            number += 1
            began = time.time()
            done = self.server.sql(f"INSERT INTO shop.orders (id, note) VALUES ({number}, 'row {number}');",
                                   check=False)
            if done.returncode != 0:
                return  # the table is gone
            self.rows.append((number, began, time.time()))


class LocalAgent:
    """A transport that runs `golden-firstboot` here, on the context's root, instead of over SSH."""

    def __init__(self, ctx: Context) -> None:
        self.root = Path(ctx.root)
        for name, data in (("image.json", ctx.image), ("host.json", ctx.host)):
            (self.root / "etc/golden").mkdir(parents=True, exist_ok=True)
            (self.root / "etc/golden" / name).write_text(json.dumps(data))

    def run(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert argv[0] == AGENT
        env = {**os.environ, "PYTHONPATH": str(ROOT / "firstboot")}
        return subprocess.run([sys.executable, "-m", "golden_firstboot", "--root", str(self.root), *argv[1:]],
                              capture_output=True, text=True, env=env, timeout=kwargs.get("timeout", 300))


def sleep_to_fraction(low: float, high: float) -> None:
    """Until the wall clock's fraction of a second lies in [low, high)."""
    for _ in range(200):
        if low <= time.time() % 1 < high:
            return
        time.sleep(0.01)


def test_point_in_time_restore_one_second_before_a_drop_and_no_plaintext_in_the_bucket(stack):
    ctx, source, tmp = stack["ctx"], stack["source"], stack["tmp"]
    source.sql("CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, note VARCHAR(200)) ENGINE=InnoDB;"
               f"INSERT INTO shop.orders VALUES (1, '{ROW_SECRET}');")
    (stack["docroot"] / "index.html").write_text(f"<p>{FILE_SECRET}</p>\n")
    backup_jobs.run(ctx, "files")
    files_done = time.time()
    backup_jobs.run(ctx, "full")

    writer = Writer(source)
    writer.start()
    time.sleep(2)
    backup_jobs.run(ctx, "binlog")  # shipped while the writer goes on
    time.sleep(1.5)
    sleep_to_fraction(0.5, 0.7)  # half a second of writes in the drop's own second, which must not come back
    dropped = time.time()
    source.sql("DROP TABLE shop.orders;")
    writer.join(timeout=30)
    backup_jobs.run(ctx, "binlog")  # the logs holding the drop's second, closed and shipped
    at = math.floor(dropped) - 1

    (stack["docroot"] / "index.html").unlink()
    restored_root = tmp / "restored"
    restored_root.mkdir()
    started: list[Server] = []

    def start() -> None:
        started.append(Server(restored_root, install=False))
        stack["servers"].append(started[-1])

    report = backup_restore.restore_database(ctx, at, str(restored_root / "data"), str(restored_root / "mysqld.sock"),
                                             start, source="db1", work=str(tmp / "work"))
    ids = {int(v) for v in started[0].sql("SELECT id FROM shop.orders;").stdout.split()}
    acknowledged_before = {n for n, _, acked in writer.rows if acked < at + 1}
    begun_after = {n for n, began, _ in writer.rows if began >= at + 1}
    assert len(acknowledged_before) > 20 and begun_after, (len(acknowledged_before), len(begun_after))
    assert 1 in ids
    assert acknowledged_before <= ids, sorted(acknowledged_before - ids)[:10]
    assert not ids & begun_after, sorted(ids & begun_after)[:10]
    assert report["tables"] == [{"table": "shop.orders", "rows": len(ids), "checksum": report["tables"][0]["checksum"]}]
    assert report["binlog_files"] >= 2

    back = backup_restore_files.restore_path(ctx, files_done, str(stack["docroot"]), str(tmp / "files-back"),
                                             source="db1")
    assert Path(back["restored"], "index.html").read_text() == f"<p>{FILE_SECRET}</p>\n", back

    # The secrets are on the source's disk in clear (the binlog), so the search below can find what it looks for.
    assert any(ROW_SECRET.encode() in p.read_bytes() for p in source.data.glob("mysql-bin.0*"))
    s3 = boto3.client("s3", endpoint_url=stack["s3"].endpoint, aws_access_key_id=stack["s3"].access_key,
                      aws_secret_access_key=stack["s3"].secret_key, region_name="us-east-1")
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for o in page.get("Contents", [])]
    assert len(keys) > 10
    for key in keys:
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert ROW_SECRET.encode() not in body and FILE_SECRET.encode() not in body, key
    # Nor does any command line or log line carry the repository key or the S3 secret.
    password, secret = ctx.get("backup.password"), ctx.get("backup.secret_access_key")
    assert not [line for line in stack["lines"] if password in line or secret in line]

    # `golden backup list` through the agent's own command line, as SSH would run it on the host.
    listed = list_backups(LocalAgent(ctx), "db1")  # type: ignore[arg-type]
    assert {s.kind for s in listed} == {"full", "binlog", "files"} and {s.host for s in listed} == {"db1"}

    assert [v["kind"] for v in backup_jobs.verdicts(ctx) if v["ok"]] == ["full", "binlog", "files"]
    assert backup_jobs.verdicts(ctx, at=time.time() + 7200)[0]["problem"].startswith("last good")


def test_jobs_starting_together_on_the_init_host_make_one_repository(stack):
    """First boot starts the full job and the binlog timer at once on the host that makes the repository: two
    `restic init` at once would each write a master key, one config would win, and the repository would refuse
    every later job ("config or key ... is damaged")."""
    ctx = stack["ctx"]
    (stack["docroot"] / "index.html").write_text("hello\n")
    agent = LocalAgent(ctx)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "firstboot")}
    jobs = [subprocess.Popen([sys.executable, "-m", "golden_firstboot", "--root", str(agent.root), "backup", "run",
                              kind], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for kind in ("files", "binlog", "files")]
    results = [(job.wait(timeout=300), job.stderr.read() if job.stderr else "") for job in jobs]
    for job in jobs:
        for stream in (job.stdout, job.stderr):
            if stream:
                stream.close()
    assert [code for code, _ in results] == [0, 0, 0], results
    keys = backup_jobs.restic(ctx, ["key", "list", "--json"]).stdout
    assert len(json.loads(keys)) == 1, keys
    assert sum("made the restic repository" in err for _, err in results) == 1, results
    assert len(backup_jobs.snapshots(ctx, "files")) == 2 and len(backup_jobs.snapshots(ctx, "binlog")) == 1


def test_a_failed_backup_fails_in_one_line_and_status_says_why(stack):
    ctx = stack["ctx"]
    stack["source"].stop()
    with pytest.raises(FirstbootError) as failed:
        backup_jobs.run(ctx, "full")
    assert failed.value.message.startswith("backup full failed: command failed")
    assert "\n" not in failed.value.message
    # the tool's own reason comes with the command, in that one line
    assert "Failed to connect to MariaDB server" in failed.value.message
    full = backup_jobs.verdicts(ctx)[0]
    assert full["kind"] == "full" and not full["ok"] and "last run failed: command failed" in full["problem"]
    assert "Failed to connect to MariaDB server" in full["problem"]
    with pytest.raises(FirstbootError, match="backups failing: full: never succeeded"):
        backup_jobs.check(ctx)


def test_one_environment_comes_back_as_of_a_second_and_the_others_are_not_touched(stack, tmp_path, monkeypatch):
    """`golden backup restore-env`'s work on the writer and a web node: alpha's databases restored to a second in a
    scratch server beside the live one and swapped in, beta's left as they are; alpha's files back from the node's
    own backups, the replaced ones archived."""
    ctx, source = stack["ctx"], stack["source"]
    source.sql("CREATE DATABASE alpha_1; CREATE DATABASE alpha_2; CREATE DATABASE beta_1;"
               "CREATE TABLE alpha_1.t (id INT PRIMARY KEY) ENGINE=InnoDB; CREATE TABLE alpha_2.t (id INT PRIMARY KEY);"
               "CREATE TABLE beta_1.t (id INT PRIMARY KEY) ENGINE=InnoDB;"
               "INSERT INTO alpha_1.t VALUES (1), (2); INSERT INTO alpha_2.t VALUES (1);"
               "INSERT INTO beta_1.t VALUES (1);")
    htdocs = stack["docroot"] / "alpha" / "htdocs"
    htdocs.mkdir(parents=True)
    (htdocs / "index.php").write_text("<?php echo 'before';\n")
    ctx.host["backup"]["files"]["paths"] = [str(stack["docroot"])]
    backup_jobs.run(ctx, "full")
    backup_jobs.run(ctx, "files")
    source.sql("INSERT INTO alpha_1.t VALUES (3); INSERT INTO beta_1.t VALUES (2);")
    time.sleep(1.2)
    at = math.floor(time.time())
    time.sleep(1.2)
    # the accident, after `at`: alpha's table emptied and a database dropped; beta goes on writing
    source.sql("DELETE FROM alpha_1.t; DROP DATABASE alpha_2; INSERT INTO beta_1.t VALUES (3);")
    (htdocs / "index.php").write_text("<?php echo 'defaced';\n")
    backup_jobs.run(ctx, "binlog")

    report = backup_restore_env.restore_env_databases(ctx, "alpha", at, source="db1", live_socket=str(source.socket))
    assert report["databases"] == ["alpha_1", "alpha_2"], report
    assert source.sql("SELECT id FROM alpha_1.t ORDER BY id;").stdout.split() == ["1", "2", "3"]
    assert source.sql("SELECT id FROM alpha_2.t;").stdout.split() == ["1"]
    assert source.sql("SELECT id FROM beta_1.t ORDER BY id;").stdout.split() == ["1", "2", "3"]  # untouched
    assert {t["table"]: t["rows"] for t in report["tables"]} == {"alpha_1.t": 3, "alpha_2.t": 1}
    archived = Path(report["archived"]).read_text()  # what was replaced: alpha_1 emptied, no alpha_2
    assert "CREATE DATABASE /*!32312 IF NOT EXISTS*/ `alpha_1`" in archived and "`alpha_2`" not in archived
    assert not list(Path(ctx.path(backup_restore_env.ENV_WORK)).iterdir())  # no scratch data or dump left

    # A restore that differs from the snapshot (restic, the disk or the store lying) is caught before the swap:
    # the live (defaced) folder stays as it was, nothing is archived, no staging folder is left beside it.
    real_restic = backup_restore_files.restic

    def tampering(ctx: Context, argv: list[str], *rest: Any, **kwargs: Any) -> Any:
        done = real_restic(ctx, argv, *rest, **kwargs)
        if argv[0] == "restore":
            for page in Path(argv[argv.index("--target") + 1]).rglob("alpha/htdocs/index.php"):
                page.write_text("<?php echo 'B3fore';\n")  # the same size, other bytes
        return done

    live = {p.name: p.read_bytes() for p in htdocs.iterdir()}
    for module in (backup_restore, backup_restore_files):  # whichever path the files part takes
        monkeypatch.setattr(module, "restic", tampering)
    with pytest.raises(FirstbootError, match="alpha/htdocs/index.php differs from the snapshot's content"):
        backup_restore_env.restore_env_files(ctx, "alpha", time.time(), source="db1", env_root=str(stack["docroot"]))
    assert {p.name: p.read_bytes() for p in htdocs.iterdir()} == live
    assert sorted(p.name for p in htdocs.parent.iterdir()) == ["htdocs"]
    assert not list(Path(ctx.path(backup_restore_env.ENV_ARCHIVE)).glob("alpha-htdocs-*"))
    monkeypatch.undo()

    files = backup_restore_env.restore_env_files(ctx, "alpha", time.time(), source="db1",
                                                 env_root=str(stack["docroot"]))
    assert (htdocs / "index.php").read_text() == "<?php echo 'before';\n"
    archived = Path(files["archived"])  # the defaced folder, in the environment archive, under its full path
    assert archived.relative_to(ctx.path(backup_restore_env.ENV_ARCHIVE)).parts[0].startswith(
        "alpha-htdocs-before-restore-") and str(archived).endswith(str(htdocs))
    assert (archived / "index.php").read_text() == "<?php echo 'defaced';\n"
    assert (files["files"], files["bytes"]) == (1, len("<?php echo 'before';\n")) and files["checked"]
    assert sorted(p.name for p in htdocs.parent.iterdir()) == ["htdocs"]  # no staging folder left

    with pytest.raises(FirstbootError, match="not an environment name"):
        backup_restore_env.restore_env_databases(ctx, "../x", at, source="db1", live_socket=str(source.socket))


HARDENED_PROFILE = ROOT / "profiles/roles/hardened.yaml"


def encrypted_at_rest(key: Path) -> tuple[str, ...]:
    """mariadbd's options for the banking variant's encryption at rest: the profile's own cnf (as the image bakes
    it), with the key file at `key`."""
    from golden_firstboot.roles import hardened  # isort: skip

    def cnfs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if node.get("path") == hardened.ENCRYPTION_SRC:
                yield str(node["content"])
            for value in node.values():
                yield from cnfs(value)
        elif isinstance(node, list):
            for value in node:
                yield from cnfs(value)

    cnf = next(cnfs(yaml.safe_load(HARDENED_PROFILE.read_text())))
    settings = dict(hardened.encryption_settings(cnf), file_key_management_filename=str(key))
    return ("--plugin-load-add=file_key_management",) + tuple(
        "--{}={}".format(name.replace("_", "-"), value) for name, value in sorted(settings.items()))


def wait_encrypted(server: Server) -> None:
    from golden_firstboot.roles import hardened  # isort: skip

    for _ in range(300):  # at most 60 s
        total, done = server.sql(hardened.INNODB_PROGRESS).stdout.split()
        if total == done:
            return
        time.sleep(0.2)
    raise AssertionError(f"InnoDB encrypted {done} of {total} tablespaces in 60 s")


def new_key(path: Path) -> str:
    hex_key = os.urandom(32).hex()
    path.write_text(f"1;{hex_key}\n")
    path.chmod(0o400)
    return hex_key


def test_encrypted_server_restored_to_a_second_onto_a_host_with_its_own_key(tmp_path, sigv4_s3):
    """The banking variant: a server encrypted at rest (file_key_management, its own key) backed up, lost with its
    key, and restored to a second onto a fresh server that has a key of its own. mariadb-binlog cannot read the
    encrypted binlogs from files: the restore reads them through a reader with the source's key. The key travels
    inside the restic repository only: neither it nor a row value is in any object of the bucket, nor in the
    agent's output; the restored server runs encrypted with the source's key, its own kept aside."""
    for tool in ("mariadbd", "mariadb-backup", "mariadb-binlog", "restic"):
        assert shutil.which(tool), f"{tool} is missing: scripts/install-deps installs it"
    assert Path("/usr/lib/mysql/plugin/file_key_management.so").exists(), "scripts/install-deps: mariadb-server"
    row_secret = "GOLDEN-BANKING-ROW-" + os.urandom(6).hex()
    (tmp_path / "src").mkdir()
    source_hex = new_key(tmp_path / "src" / "keyfile")
    source = Server(tmp_path / "src", binlog="mysql-bin", options=encrypted_at_rest(tmp_path / "src" / "keyfile"))
    servers = [source]
    host = {"hostname": "db1", "backup": {"init": True,
        "repository": f"s3:{sigv4_s3.endpoint}/{BUCKET}/{tmp_path.name}", "password": "drill-" + os.urandom(8).hex(),
        "access_key_id": sigv4_s3.access_key, "secret_access_key": sigv4_s3.secret_key,
        "database": {"socket": str(source.socket), "datadir": str(source.data), "spool": str(tmp_path / "spool")}}}
    lines: list[str] = []
    ctx = Context({"roles": ["sql-primary", "hardened"]}, host, root=str(tmp_path / "root"), logger=lines.append)
    try:
        assert source.sql("SELECT @@innodb_encrypt_tables, @@encrypt_binlog;").stdout.split() == ["FORCE", "1"]
        wait_encrypted(source)  # the system tablespace (undo) rotated, as first boot waits for it
        source.sql("CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, note VARCHAR(200));"
                   f"INSERT INTO shop.orders VALUES (1, '{row_secret}');")
        backup_jobs.run(ctx, "full")
        writer = Writer(source)
        writer.start()
        time.sleep(2)
        backup_jobs.run(ctx, "binlog")
        time.sleep(1.5)
        sleep_to_fraction(0.5, 0.7)
        dropped = time.time()
        source.sql("DROP TABLE shop.orders;")
        writer.join(timeout=30)
        backup_jobs.run(ctx, "binlog")
        at = math.floor(dropped) - 1
        shipped = sorted(Path(ctx.path(str(tmp_path / "spool" / "binlog"))).glob("mysql-bin.0*"))
        # the binlogs as the server wrote them: encrypted, so mariadb-binlog cannot read them from the files
        unread = subprocess.run(["mariadb-binlog", str(shipped[0])], capture_output=True, text=True, timeout=60)
        assert unread.returncode != 0 and "decryption" in unread.stderr, unread.stderr[-500:]

        # The source host is lost, its key with it.
        source.stop()
        (tmp_path / "src" / "keyfile").unlink()

        # A fresh host booted from the image: MariaDB encrypted with a key of its own, its data directory set aside
        # by the restore.
        dst = tmp_path / "dst"
        dst.mkdir()
        own_hex = new_key(dst / "keyfile")
        fresh = Server(dst, options=encrypted_at_rest(dst / "keyfile"))
        fresh.stop()
        (dst / "data").rename(dst / "data.before-restore")
        started: list[Server] = []

        def start() -> None:
            started.append(Server(dst, install=False, options=encrypted_at_rest(dst / "keyfile")))
            servers.append(started[-1])

        report = backup_restore.restore_database(ctx, at, str(dst / "data"), str(dst / "mysqld.sock"), start,
                                                 source="db1", work=str(tmp_path / "work"),
                                                 keyfile=str(dst / "keyfile"))
        restored = started[0]
        ids = {int(v) for v in restored.sql("SELECT id FROM shop.orders;").stdout.split()}
        acknowledged_before = {n for n, _, acked in writer.rows if acked < at + 1}
        begun_after = {n for n, began, _ in writer.rows if began >= at + 1}
        assert len(acknowledged_before) > 20 and begun_after, (len(acknowledged_before), len(begun_after))
        assert acknowledged_before <= ids, sorted(acknowledged_before - ids)[:10]
        assert not ids & begun_after, sorted(ids & begun_after)[:10]
        assert restored.sql("SELECT note FROM shop.orders WHERE id = 1;").stdout.strip() == row_secret
        assert report["encrypted"] and report["binlog_files"] >= 2
        assert [t["table"] for t in report["tables"]] == ["shop.orders"] and report["tables"][0]["rows"] == len(ids)

        # The restored host runs with the source's key, encryption at rest still on; its own key is kept aside
        # (it reads the data directory set aside), mode 0400 like the key.
        assert (dst / "keyfile").read_text() == f"1;{source_hex}\n"
        assert Path(report["key_set_aside"]).read_text() == f"1;{own_hex}\n"
        assert {oct(p.stat().st_mode & 0o777) for p in dst.glob("keyfile*")} == {"0o400"}
        assert restored.sql("SELECT @@innodb_encrypt_tables, @@encrypt_binlog;").stdout.split() == ["FORCE", "1"]
        assert restored.sql("SELECT ENCRYPTION_SCHEME FROM information_schema.INNODB_TABLESPACES_ENCRYPTION "
                            "WHERE NAME = 'shop/orders';").stdout.split() == ["1"]
        restored.sql("FLUSH TABLES; FLUSH BINARY LOGS;")
        for path in [p for p in (dst / "data").rglob("*") if p.is_file()]:
            assert row_secret.encode() not in path.read_bytes(), path

        # Nothing decrypted left on disk: no work folder, no reader, no binlog in clear in the spool.
        assert not (tmp_path / "work").exists()
        assert not list(Path(tempfile.gettempdir()).glob("golden-binlog-*"))
        for path in [p for p in tmp_path.rglob("*") if p.is_file() and "dst" not in p.parts]:
            assert row_secret.encode() not in path.read_bytes(), path
        # The bucket: no object holds the row value or either key, in hex; nor does the agent's output.
        assert sigv4_s3.data is not None
        objects = [p for p in sigv4_s3.data.rglob("*") if p.is_file()]
        assert len(objects) > 10
        for path in objects:
            body = path.read_bytes()
            for secret in (row_secret, source_hex, own_hex):
                assert secret.encode() not in body and secret.upper().encode() not in body, path
        for line in lines:
            assert row_secret not in line and source_hex not in line and own_hex not in line, line
    finally:
        for server in servers:
            if server.proc.poll() is None:
                server.stop()
