"""sql-primary: MariaDB with binary log and GTID, running and enabled; no password baked."""

from __future__ import annotations

import json

import pytest
from mariadb_checks import mysql, test_binlog_and_gtid, test_packages, test_service_running_and_enabled

__all__ = ["test_binlog_and_gtid", "test_packages", "test_service_running_and_enabled"]


def test_row_based_binlog(host):
    assert mysql(host, "SELECT @@binlog_format") == "ROW"


@pytest.fixture(scope="module")
def first_boot_server_id(host):
    """The server_id golden verify gave this clone in host.json (never 1, MariaDB's default)."""
    server_id = json.loads(host.file("/etc/golden/host.json").content_string)["mariadb"]["server_id"]
    assert server_id != 1, "host.json gives MariaDB's default server_id: the checks below could not tell"
    return str(server_id)


def test_server_id_from_first_boot(host, first_boot_server_id):
    # first boot wrote host.json's server_id into 61-golden-host.cnf, and the running server uses it
    assert host.file("/etc/mysql/mariadb.conf.d/61-golden-host.cnf").contains(f"server.id *= *{first_boot_server_id}")
    assert mysql(host, "SELECT @@server_id") == first_boot_server_id


def test_no_binlog_from_the_build(host, first_boot_server_id):
    # the bake's binary logs were removed (instance_unique): every binlog here was written on this boot (a
    # file the bake left keeps the bake's time, since MariaDB opens a new file at each start), and the one
    # being written now is the server's that first boot configured (its format description event says so)
    booted = int(host.check_output("echo $(( $(date +%s) - $(cut -d. -f1 /proc/uptime) ))"))
    for line in host.check_output("stat -c '%n %Y' /var/lib/mysql/mysql-bin.0*").splitlines():
        name, mtime = line.rsplit(" ", 1)
        assert int(mtime) >= booted - 5, f"{name} predates this boot: the bake left it"
    current = mysql(host, "SHOW MASTER STATUS").split("\t")[0]
    first_event = mysql(host, f"SHOW BINLOG EVENTS IN '{current}' LIMIT 1").split("\t")
    assert first_event[2] == "Format_desc" and first_event[3] == first_boot_server_id, first_event


def test_no_replication_password_baked(host):
    assert host.run("grep -rilE '^[[:space:]]*password[[:space:]]*=' /etc/mysql/").stdout == ""
