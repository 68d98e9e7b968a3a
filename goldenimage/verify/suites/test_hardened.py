"""The hardening layer (banking-hardened, or `hardened` combined with any role), as the booted host has it.

One test per item of the hardening brief: SSH, sysctls, auditd, log retention, AIDE, time sync, file
permissions, disabled modules, separate mounts, GRUB, apt sources, unattended upgrades, password quality,
umask, core dumps; and MariaDB's key when a sql role is present.
"""

from __future__ import annotations

import re
import time

import pytest

SQL_ROLES = {"sql-primary", "sql-replica"}
#: AIDE's first database build runs in the background after first boot; under TCG it takes minutes.
AIDE_WAIT_SECONDS = 1200


@pytest.fixture(scope="module")
def sshd(host):
    """`sshd -T`: the configuration sshd really uses, after every include."""
    return dict(line.split(" ", 1) for line in host.check_output("sshd -T").lower().splitlines() if " " in line)


# --- SSH ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key, value", [
    ("permitrootlogin", "no"), ("passwordauthentication", "no"), ("permitemptypasswords", "no"),
    ("kbdinteractiveauthentication", "no"), ("x11forwarding", "no"), ("allowtcpforwarding", "no"),
    ("maxauthtries", "3"), ("clientaliveinterval", "300"), ("clientalivecountmax", "0"),
    ("banner", "/etc/issue.net"), ("loglevel", "verbose"),
])  # fmt: skip
def test_sshd_setting(sshd, key, value):
    assert sshd[key] == value


def test_sshd_offers_only_modern_ciphers_kex_and_macs(sshd):
    assert set(sshd["ciphers"].split(",")) <= {
        "chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com", "aes256-ctr",
        "aes128-ctr"}
    assert not re.search(r"cbc|3des|arcfour", sshd["ciphers"])
    assert all(m.endswith("-etm@openssh.com") and "sha2" in m for m in sshd["macs"].split(","))
    assert not re.search(r"sha1|group1-|group14-sha1", sshd["kexalgorithms"])


def test_ssh_banner_is_shown(host):
    assert "Authorised access only" in host.file("/etc/issue.net").content_string


# --- kernel ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("key, value", [
    ("kernel.randomize_va_space", 2), ("fs.suid_dumpable", 0), ("kernel.kptr_restrict", 2),
    ("kernel.dmesg_restrict", 1), ("fs.protected_hardlinks", 1), ("fs.protected_symlinks", 1),
    ("kernel.yama.ptrace_scope", 1), ("kernel.unprivileged_bpf_disabled", 1), ("kernel.sysrq", 0),
    ("net.ipv4.conf.all.rp_filter", 1), ("net.ipv4.conf.all.accept_redirects", 0),
    ("net.ipv4.conf.all.send_redirects", 0), ("net.ipv4.conf.all.accept_source_route", 0),
    ("net.ipv4.conf.all.log_martians", 1), ("net.ipv6.conf.all.accept_redirects", 0),
    ("net.ipv4.tcp_syncookies", 1),
])  # fmt: skip
def test_sysctl_in_force(host, key, value):
    assert host.sysctl(key) == value


@pytest.mark.parametrize("module", ["usb-storage", "cramfs", "udf", "dccp", "sctp", "firewire-core", "bluetooth"])
def test_unused_module_cannot_be_loaded(host, module):
    assert host.run(f"modprobe {module}").rc != 0
    assert module.replace("-", "_") not in host.check_output("lsmod")


def test_iommu_forced_on_the_running_kernel_and_grub_has_a_superuser(host):
    assert "iommu=force" in host.file("/proc/cmdline").content_string
    grub = host.file("/boot/grub/grub.cfg")
    assert grub.mode == 0o600
    assert 'set superusers="root"' in grub.content_string
    assert re.search(r"password_pbkdf2 root grub\.pbkdf2\.sha512\.\d+\.[0-9A-F]+\.[0-9A-F]+", grub.content_string)
    assert "--unrestricted" in grub.content_string  # booting needs no password, editing does


def test_grub_password_is_this_hosts_own_and_root_only(host):
    for path in ("/etc/golden/grub-password.pbkdf2", "/root/grub-password"):
        f = host.file(path)
        assert f.user == "root" and f.mode == 0o400, path
    assert host.file("/etc/golden/grub-password.pbkdf2").content_string.strip() in \
        host.file("/boot/grub/grub.cfg").content_string


# --- audit, logs, integrity, time ------------------------------------------------------------------


def test_auditd_runs_with_the_golden_rules(host):
    assert host.service("auditd").is_running and host.service("auditd").is_enabled
    rules = host.check_output("auditctl -l")
    for key in ("identity", "scope", "logins", "modules", "time-change", "rootcmd"):
        assert f"key={key}" in rules or f"-k {key}" in rules, key


def test_audit_log_retention(host):
    conf = host.file("/etc/audit/auditd.conf").content_string
    assert re.search(r"^num_logs = 10$", conf, re.M) and re.search(r"^max_log_file_action = ROTATE$", conf, re.M)
    assert host.file("/var/log/audit/audit.log").exists


def test_system_log_retention(host):
    assert host.service("rsyslog").is_running
    assert re.search(r"^\s*rotate 52$", host.file("/etc/logrotate.d/rsyslog").content_string, re.M)
    assert "Storage=persistent" in host.file("/etc/systemd/journald.conf.d/50-golden.conf").content_string
    assert host.file("/var/log/journal").is_directory
    assert host.run("logrotate --debug /etc/logrotate.conf").rc == 0


def test_aide_database_is_made_on_this_host_after_first_boot(host):
    deadline = time.monotonic() + AIDE_WAIT_SECONDS
    while not host.file("/var/lib/aide/aide.db").exists and time.monotonic() < deadline:
        state = host.run("systemctl show -p ActiveState --value golden-aide-init").stdout.strip()
        assert state in ("active", "activating", "inactive"), state  # "failed" would never make the db
        time.sleep(15)
    assert host.file("/var/lib/aide/aide.db").exists
    # SHA-512 alone, not Debian's eleven digests per file (`H`): what keeps init and check within minutes
    assert re.search(r"^Checksums = sha512$", host.file("/etc/aide/aide.conf").content_string, re.M)
    assert host.run("aide --config /etc/aide/aide.conf --check").rc < 14  # 0-7: differences found, not errors


def test_time_sync_is_ntp_and_chrony_is_gone(host, image_info):
    service = image_info["release_vars"]["ntp_service"]
    assert host.package("ntp").is_installed or host.package("ntpsec").is_installed
    assert host.service(service).is_running and host.service(service).is_enabled
    assert not host.package("chrony").is_installed


# --- files, mounts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path, mode, group", [
    ("/etc/passwd", 0o644, "root"), ("/etc/group", 0o644, "root"), ("/etc/shadow", 0o640, "shadow"),
    ("/etc/gshadow", 0o640, "shadow"), ("/etc/crontab", 0o600, "root"), ("/etc/ssh/sshd_config", 0o600, "root"),
])  # fmt: skip
def test_file_permissions(host, path, mode, group):
    f = host.file(path)
    assert f.user == "root" and f.group == group and f.mode == mode


def test_system_map_is_readable_by_root_only(host):
    maps = host.check_output("ls /boot/System.map-*").split()
    assert maps and all(host.file(m).mode == 0o600 for m in maps)


@pytest.mark.parametrize("mountpoint, options", [
    ("/tmp", {"nodev", "nosuid", "noexec"}), ("/var", {"nodev", "nosuid"}),
    ("/var/log", {"nodev", "nosuid", "noexec"}), ("/var/log/audit", {"nodev", "nosuid", "noexec"}),
    ("/home", {"nodev", "nosuid", "noexec"}),
])  # fmt: skip
def test_separate_mount_with_options(host, mountpoint, options):
    mount = host.mount_point(mountpoint)
    assert mount.exists and mount.device != host.mount_point("/").device
    assert options <= set(mount.options)


def test_nothing_executes_from_tmp(host):
    host.run("printf '#!/bin/sh\\necho ran\\n' > /tmp/golden-exec-test && chmod +x /tmp/golden-exec-test")
    result = host.run("/tmp/golden-exec-test")
    host.run("rm -f /tmp/golden-exec-test")
    assert result.rc != 0 and "ran" not in result.stdout


# --- packages, accounts ------------------------------------------------------------------------------


def test_apt_sources_are_official_debian_only(host, image_info):
    lines = [line for line in host.file("/etc/apt/sources.list").content_string.splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines and all(re.match(r"deb(-src)? https?://(deb|security)\.debian\.org/debian(-security)?/? ", line)
                         for line in lines), lines
    assert host.check_output("find /etc/apt/sources.list.d -type f -name '*.list' -o -type f -name '*.sources'") == ""
    authenticated = host.file("/etc/apt/apt.conf.d/50golden-authenticated").content_string
    assert 'AllowUnauthenticated "false"' in authenticated


def test_unattended_security_upgrades_are_on(host):
    assert host.package("unattended-upgrades").is_installed
    assert host.service("unattended-upgrades").is_enabled
    config = host.check_output("apt-config dump")
    assert 'APT::Periodic::Unattended-Upgrade "1"' in config


def test_password_quality_is_enforced_by_pam(host):
    assert "pam_pwquality.so" in host.file("/etc/pam.d/common-password").content_string
    conf = host.file("/etc/security/pwquality.conf.d/50-golden.conf").content_string
    assert re.search(r"^minlen = 12$", conf, re.M) and re.search(r"^minclass = 3$", conf, re.M)
    # A real password change through PAM refuses a short one.
    host.run("useradd -m golden-pwtest")
    try:
        result = host.run("printf 'abc12\\nabc12\\n' | passwd golden-pwtest")
        assert result.rc != 0
    finally:
        host.run("userdel -r golden-pwtest")


def test_login_umask_is_027(host):
    assert re.search(r"^UMASK\s+027$", host.file("/etc/login.defs").content_string, re.M)
    assert host.check_output("bash -lc umask").strip() == "0027"


def test_core_dumps_are_off(host):
    assert host.sysctl("fs.suid_dumpable") == 0
    assert host.check_output("bash -lc 'ulimit -Hc'").strip() == "0"


def test_host_firewall_is_loaded(host):
    assert host.service("nftables").is_enabled
    assert "table inet filter" in host.check_output("nft list ruleset")


# --- MariaDB ------------------------------------------------------------------------------------------


def test_mariadb_key_exists_only_with_a_sql_role_and_only_mysql_reads_it(host, image_info):
    key = host.file("/etc/mysql/encryption/keyfile")
    if SQL_ROLES & set(image_info["roles"]):
        assert key.user == "mysql" and key.mode == 0o400
        assert host.file("/etc/mysql/encryption").mode == 0o750
        variables = host.check_output("mysql -N -e \"SHOW GLOBAL VARIABLES LIKE '%encrypt%'\"")
        for name in ("innodb_encrypt_tables\tFORCE", "innodb_encrypt_log\tON", "encrypt_binlog\tON",
                     "encrypt_tmp_files\tON", "aria_encrypt_tables\tON"):
            assert name in variables, name
    else:
        assert not key.exists
