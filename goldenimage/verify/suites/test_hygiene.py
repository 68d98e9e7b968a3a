"""Golden-image hygiene on a booted clone: unique identity, no build account, no build leftovers."""

from __future__ import annotations

import re

BUILD_USER = "golden-build"


def test_machine_id_set_and_unique(host, other_identity):
    machine_id = host.file("/etc/machine-id").content_string.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", machine_id)
    assert machine_id != other_identity["machine_id"]


def test_host_keys_generated_per_instance(host, other_identity):
    keys = sorted(host.run("cat /etc/ssh/ssh_host_*_key.pub | awk '{print $2}'").stdout.split())
    assert keys, "no host keys"
    assert not set(keys) & set(other_identity["host_keys"]), "two clones share an SSH host key"


def test_no_build_user_or_its_sudo_rule(host):
    assert host.run(f"getent passwd {BUILD_USER}").rc != 0
    assert not host.file(f"/home/{BUILD_USER}").exists
    assert host.run(f"grep -rl {BUILD_USER} /etc/sudoers /etc/sudoers.d").stdout == ""


def test_no_leftover_authorized_key(host):
    # cloud-init gives this instance's key to the default user (and a "log in as debian" stub to root);
    # no other key, and nothing of the build account's, may be anywhere.
    # every local filesystem (/home is its own on the separate-mounts layout)
    mounts = host.check_output("findmnt -rn -t ext4 -o TARGET").split()
    found = sorted(set(host.run(f"find {' '.join(mounts)} -xdev -name 'authorized_keys*' -type f").stdout.split()))
    assert "/home/debian/.ssh/authorized_keys" in found
    assert set(found) <= {"/home/debian/.ssh/authorized_keys", "/root/.ssh/authorized_keys"}
    for path in found:
        keys = [line for line in host.file(path).content_string.splitlines() if line.strip()]
        assert keys and all("goldenimage-verify" in key for key in keys), path
        assert "golden-build" not in host.file(path).content_string


def test_no_cloud_init_data_from_the_build(host):
    instance = host.run("cloud-init query instance_id").stdout.strip() or host.file(
        "/var/lib/cloud/data/instance-id").content_string.strip()
    assert host.run("ls /var/lib/cloud/instances").stdout.split() == [instance]
    assert instance.startswith("verify-")
    # the pattern is not the string itself: sudo (auth.log) and auditd log this very command line
    leftovers = host.run("grep -rIl 'golden-bak[e]' /var/lib/cloud /var/log /etc 2>/dev/null").stdout
    assert leftovers == ""


def test_apt_lists_and_caches_emptied(host):
    assert host.run("find /var/lib/apt/lists -name '*_Packages*'").stdout == ""
    assert host.run("find /var/cache/apt/archives -name '*.deb'").stdout == ""


def test_no_shell_history_or_build_temp_files(host):
    assert not host.file("/root/.bash_history").exists
    assert host.run("find /tmp /var/tmp -name 'script_*.sh' -o -name 'golden-*'").stdout == ""
