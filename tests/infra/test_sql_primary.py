"""sql-primary: MariaDB with binary log and GTID, running and enabled; no password baked."""

from __future__ import annotations


def mysql(host, query):
    return host.check_output(f"mysql -N -B -e \"{query}\"")


def test_packages(host):
    for name in ("mariadb-server", "mariadb-client", "mariadb-backup"):
        assert host.package(name).is_installed, name


def test_service_running_and_enabled(host):
    service = host.service("mariadb")
    assert service.is_running and service.is_enabled


def test_binlog_and_gtid_settings(host):
    assert mysql(host, "SELECT @@log_bin") == "1"
    assert mysql(host, "SELECT @@binlog_format") == "ROW"
    assert mysql(host, "SELECT @@gtid_strict_mode") == "1"
    assert mysql(host, "SELECT @@log_slave_updates") == "1"


def test_no_binlog_from_the_build(host):
    # the bake's binary logs were removed: the first file is this instance's own
    logs = host.run("ls /var/log/mysql/").stdout.split()
    assert "mysql-bin.000001" in logs or not [f for f in logs if f.startswith("mysql-bin.0")]


def test_no_replication_password_baked(host):
    assert host.run("grep -ril 'password' /etc/mysql/mariadb.conf.d/").stdout == ""
