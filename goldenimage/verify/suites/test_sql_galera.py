"""sql-galera: MariaDB with Galera's provider installed, running standalone until first boot is given a cluster
(a lone verify clone has none); row-based binlog format and interleaved auto-increment locks that Galera needs."""

from __future__ import annotations

from mariadb_checks import mysql, test_packages, test_service_running_and_enabled

__all__ = ["test_packages", "test_service_running_and_enabled"]


def test_galera_provider_and_sst_tools_installed(host):
    assert host.file("/usr/lib/galera/libgalera_smm.so").exists
    for name in ("galera-4", "rsync", "socat"):
        assert host.package(name).is_installed, name


def test_settings_galera_needs(host):
    assert mysql(host, "SELECT @@binlog_format") == "ROW"
    assert mysql(host, "SELECT @@innodb_autoinc_lock_mode") == "2"


def test_no_cluster_without_cluster_settings(host):
    # verify boots a clone with no galera settings: it must not form (or bootstrap) a cluster of its own
    assert not host.file("/etc/mysql/mariadb.conf.d/62-golden-galera.cnf").exists
    assert not host.file("/var/lib/golden/galera-bootstrapped").exists
