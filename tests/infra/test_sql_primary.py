"""sql-primary: MariaDB with binary log and GTID, running and enabled; no password baked."""

from __future__ import annotations

from mariadb_checks import mysql, test_binlog_and_gtid, test_packages, test_service_running_and_enabled

__all__ = ["test_binlog_and_gtid", "test_packages", "test_service_running_and_enabled"]


def test_row_based_binlog(host):
    assert mysql(host, "SELECT @@binlog_format") == "ROW"


def test_server_id_from_first_boot(host):
    # golden verify gives server_id 1 in host.json: first boot wrote it into 61-golden-host.cnf
    assert host.file("/etc/mysql/mariadb.conf.d/61-golden-host.cnf").contains("server.id")
    assert mysql(host, "SELECT @@server_id") == "1"


def test_no_binlog_from_the_build(host):
    # the bake's binary logs were removed: the first file is this instance's own
    logs = host.run("ls /var/lib/mysql/").stdout.split()
    assert "mysql-bin.000001" in logs or not [f for f in logs if f.startswith("mysql-bin.0")]


def test_no_replication_password_baked(host):
    assert host.run("grep -rilE '^[[:space:]]*password[[:space:]]*=' /etc/mysql/").stdout == ""
