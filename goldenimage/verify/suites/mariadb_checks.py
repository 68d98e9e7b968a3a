"""Checks shared by the sql-primary, sql-replica and sql-galera suites (imported into each, collected in each)."""

from __future__ import annotations


def mysql(host, query):
    """Run one query as root over the unix socket; its bare output."""
    return host.check_output(f"mysql -N -B -e \"{query}\"")


def test_packages(host):
    for name in ("mariadb-server", "mariadb-client", "mariadb-backup"):
        assert host.package(name).is_installed, name


def test_service_running_and_enabled(host):
    service = host.service("mariadb")
    assert service.is_running and service.is_enabled


def test_binlog_and_gtid(host):
    assert mysql(host, "SELECT @@log_bin") == "1"
    assert mysql(host, "SELECT @@gtid_strict_mode") == "1"
    assert mysql(host, "SELECT @@log_slave_updates") == "1"
