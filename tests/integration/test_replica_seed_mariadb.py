"""The replica's seed, against two real MariaDB servers on this host (Debian's mariadb-server-core; sockets in
a temporary folder, no network): the agent's own dump options and import command.

A replica that dumps its primary while the primary's first boot is between CREATE USER and GRANT gets the
account as rows of the mysql schema and then replays the GRANT from the binlog. The account must be live
by then, or the GRANT fails ("Can't find any matching row in the user table") and replication stops for good:
a clean-clone CI run's SQL pair stopped exactly there."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mariadb_server import Server
from tests.unit import firstboot_fake  # noqa: F401  (puts firstboot/ on sys.path)

from golden_firstboot.roles import sql_replica  # isort: skip
from golden_firstboot.roles.mariadb import MYSQL  # isort: skip

ACCOUNT = "'shop'@'10.10.0.0/255.255.255.0'"
GRANT = f"GRANT ALL PRIVILEGES ON `shop`.* TO {ACCOUNT};"


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    if not shutil.which("mariadbd"):
        pytest.fail("mariadbd is missing: scripts/install-deps installs mariadb-server-core and mariadb-client")
    made: list[Server] = []
    try:
        for number, name in ((1, "primary"), (2, "replica")):
            (tmp_path / name).mkdir()
            made.append(Server(tmp_path / name, binlog=str(tmp_path / name / "binlog"), server_id=number,
                               client=MYSQL))
        yield made[0], made[1]
    finally:
        for server in made:
            server.stop()


def seed_mid_first_boot(primary: Server, replica: Server, options: list[str]) -> subprocess.CompletedProcess[str]:
    """The primary's first boot stopped between CREATE USER and GRANT, the replica's dump and import, then
    the GRANT replayed on the replica as its SQL thread would; the GRANT's result."""
    primary.sql(f"CREATE DATABASE IF NOT EXISTS shop; CREATE USER IF NOT EXISTS {ACCOUNT} IDENTIFIED BY 'pw';")
    dump = subprocess.run(["mariadb-dump", f"--socket={primary.socket}", "--user=root"] + options,
                          capture_output=True, text=True, check=True, timeout=300).stdout
    assert "-- Dump completed" in dump[-300:]
    subprocess.run(replica.client() + [sql_replica.IMPORT_INIT], input=dump, text=True, capture_output=True,
                   check=True, timeout=300)
    primary.sql(GRANT)
    return replica.sql(GRANT, check=False)


def test_an_account_from_the_seed_is_live_when_the_binlog_replays_its_grant(servers):
    primary, replica = servers
    replayed = seed_mid_first_boot(primary, replica, sql_replica.DUMP_OPTIONS)
    assert replayed.returncode == 0, replayed.stderr
    grants = replica.sql(f"SHOW GRANTS FOR {ACCOUNT};").stdout
    assert "GRANT ALL PRIVILEGES ON `shop`.*" in grants


def test_without_flush_privileges_the_replayed_grant_fails(servers):
    """The failure the option prevents, shown on the same servers (so the test above can fail)."""
    primary, replica = servers
    options = [o for o in sql_replica.DUMP_OPTIONS if o != "--flush-privileges"]
    replayed = seed_mid_first_boot(primary, replica, options)
    assert replayed.returncode != 0
    assert "Can't find any matching row in the user table" in replayed.stderr


def test_a_database_made_between_the_dumps_two_lists_is_caught_before_the_import(servers):
    """mariadb-dump --all-databases lists the databases twice: for the tables, then again for the views
    (MariaDB's mysql.user is a view). A database the primary's first boot makes between the two lists appears
    in the second only: `USE` without `CREATE DATABASE`, which the replica refuses (ERROR 1049, seen on a pair
    booted together). The dump below is a real one with shop's first section taken out, as the dump of that
    moment is; dumped_databases finds it, and finds nothing in the dump as it came."""
    primary, replica = servers
    primary.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY);")
    dump = subprocess.run(["mariadb-dump", f"--socket={primary.socket}", "--user=root"] + sql_replica.DUMP_OPTIONS,
                          capture_output=True, text=True, check=True, timeout=300).stdout
    lines = dump.splitlines(keepends=True)
    headers = [i for i, line in enumerate(lines) if line.startswith("-- Current Database: ")]
    assert [lines[i].strip() for i in headers] == ["-- Current Database: `mysql`", "-- Current Database: `shop`",
                                                   "-- Current Database: `mysql`", "-- Current Database: `shop`"]
    assert sql_replica.dumped_databases(lines) == ({"mysql", "shop"}, [])
    torn = lines[:headers[1]] + lines[headers[2]:]  # shop only in the views' list
    assert sql_replica.dumped_databases(torn)[1] == ["shop"]
    refused = subprocess.run(replica.client() + [sql_replica.IMPORT_INIT], input="".join(torn), text=True,
                             capture_output=True, timeout=300)
    assert refused.returncode != 0 and "Unknown database 'shop'" in refused.stderr, refused.stderr


def test_an_account_between_create_user_and_grant_dumps_only_a_position(servers):
    """MariaDB's dump with --single-transaction --master-data takes its position without FLUSH TABLES WITH
    READ LOCK, so it needs no RELOAD: the replication account, made but not yet granted by the primary's first
    boot, dumps "successfully" a GTID position and nothing else. The replica must not take it (it would then
    replay the GRANT for an account it never got: "Can't find any matching row in the user table")."""
    primary, _ = servers
    primary.sql("CREATE DATABASE shop; CREATE USER 'repl'@'localhost' IDENTIFIED BY 'pw';")
    dump = subprocess.run(["mariadb-dump", f"--socket={primary.socket}", "--user=repl", "--password=pw"]
                          + sql_replica.DUMP_OPTIONS, capture_output=True, text=True, check=True, timeout=300).stdout
    assert "SET GLOBAL gtid_slave_pos=" in dump and "-- Dump completed" in dump[-300:]
    assert sql_replica.dumped_databases(dump.splitlines(keepends=True)) == (set(), [])
    primary.sql("GRANT SELECT, RELOAD, SHOW VIEW, EVENT, TRIGGER, LOCK TABLES ON *.* TO 'repl'@'localhost';")
    dump = subprocess.run(["mariadb-dump", f"--socket={primary.socket}", "--user=repl", "--password=pw"]
                          + sql_replica.DUMP_OPTIONS, capture_output=True, text=True, check=True, timeout=300).stdout
    assert sql_replica.dumped_databases(dump.splitlines(keepends=True)) == ({"mysql", "shop"}, [])
