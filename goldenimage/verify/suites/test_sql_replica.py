"""sql-replica: MariaDB read-only replica settings with relay log and GTID."""

from __future__ import annotations

from mariadb_checks import mysql, test_binlog_and_gtid, test_packages, test_service_running_and_enabled

__all__ = ["test_binlog_and_gtid", "test_packages", "test_service_running_and_enabled"]


def test_replica_settings(host):
    assert mysql(host, "SELECT @@read_only") == "1"
    assert mysql(host, "SELECT @@relay_log").endswith("relay-bin")
