"""User-data and Packer templates rendered from profiles: content per release, snapshots for review."""

from __future__ import annotations

import json
import os
import re

import pytest
import yaml

from goldenimage.model.profiles import resolve
from goldenimage.render.packer_template import Target, render_template
from goldenimage.render.userdata import BUILD_USER, render_host_user_data, render_user_data, sources_list
from tests.conftest import EXAMPLES, SNAPSHOTS, TEST_KEY


def _load(text: str) -> dict:
    assert text.startswith("#cloud-config\n")
    return yaml.safe_load(text)


def _snapshot(name: str, actual: str) -> None:
    """Compare with tests/snapshots/NAME; GOLDEN_UPDATE_SNAPSHOTS=1 (re)writes it (review the diff). A missing
    snapshot fails: a test that writes what it compares with would pass on anything."""
    path = SNAPSHOTS / name
    if os.environ.get("GOLDEN_UPDATE_SNAPSHOTS") == "1":
        path.write_text(actual)
    if not path.exists():
        pytest.fail(f"no snapshot {path}: run once with GOLDEN_UPDATE_SNAPSHOTS=1, review it and commit it")
    assert actual == path.read_text(), f"{name} changed: rerun with GOLDEN_UPDATE_SNAPSHOTS=1 and review git diff"


def test_user_data_snapshot_web_debian12():
    _snapshot("web-debian12.user-data", render_user_data(resolve("web", 12), TEST_KEY, content_key="snapshot"))


def test_template_snapshot_web_debian12_qemu():
    template, values = render_template(resolve("web", 12), Target.QEMU)
    _snapshot("web-debian12-qemu.pkr.json", json.dumps(template, indent=2) + "\n")
    _snapshot("web-debian12-qemu.pkrvars.json", json.dumps(values, indent=2) + "\n")


def test_debian10_uses_the_archive_and_its_package_names():
    profile = resolve("sql-replica", 10)
    data = _load(render_user_data(profile, TEST_KEY))
    lines = data["apt"]["sources_list"].splitlines()
    assert lines == [
        "deb http://archive.debian.org/debian buster main",
        "deb http://archive.debian.org/debian-security buster/updates main",
    ]
    assert 'Check-Valid-Until "false"' in data["apt"]["conf"]
    assert "mariadb-server" in data["packages"]


def test_debian12_sources_have_updates_security_and_firmware():
    assert sources_list(resolve("web", 12)).splitlines() == [
        "deb http://deb.debian.org/debian bookworm main non-free-firmware",
        "deb http://deb.debian.org/debian bookworm-updates main non-free-firmware",
        "deb http://deb.debian.org/debian-security bookworm-security main non-free-firmware",
    ]


def test_overlay_mirror_replaces_the_mirror_but_not_for_the_archived_release():
    acme = EXAMPLES / "customers" / "acme.yaml"
    assert "deb http://mirror.acme.example/debian trixie main" in sources_list(resolve("web", 13, [acme]))
    assert "archive.debian.org" in sources_list(resolve("web", 10, [acme]))


def test_user_data_carries_packages_files_services_and_the_build_user():
    profile = resolve("web", 13)
    data = _load(render_user_data(profile, TEST_KEY, content_key="k123"))
    assert data["packages"] == profile.packages
    assert data["package_update"] is True
    users = {u["name"]: u for u in data["users"]}
    assert users[BUILD_USER]["ssh_authorized_keys"] == [TEST_KEY]
    assert users[BUILD_USER]["lock_passwd"] is True
    paths = [f["path"] for f in data["write_files"]]
    assert "/etc/apache2/conf-available/golden-health.conf" in paths
    image = json.loads(next(f["content"] for f in data["write_files"] if f["path"] == "/etc/golden/image.json"))
    assert image["roles"] == ["web"] and image["content_key"] == "k123" and image["debian"] == 13
    assert data["runcmd"][-1] == "systemctl enable apache2 php8.4-fpm ssh chrony unattended-upgrades"
    assert data["timezone"] == "Etc/UTC" and data["ntp"]["ntp_client"] == "chrony"


def test_ntp_client_ntp_leaves_chrony_settings_out(write_yaml):
    overlay = write_yaml("ntp.yaml", "system: {ntp_client: ntp}\n")
    data = _load(render_user_data(resolve("web", 12, [overlay]), TEST_KEY))
    assert "ntp" not in data
    assert _load(render_user_data(resolve("web", 12), TEST_KEY))["ntp"]["ntp_client"] == "chrony"


def test_sysctls_and_non_root_owners_are_rendered(write_yaml):
    overlay = write_yaml("o.yaml", "sysctls: {vm.swappiness: 5}\nfiles:\n  - {path: /etc/mysql/x.cnf, "
                                   "content: x, owner: 'mysql:mysql', permissions: '0640'}\n")
    data = _load(render_user_data(resolve("sql-primary", 12, [overlay]), TEST_KEY))
    sysctl = next(f for f in data["write_files"] if f["path"] == "/etc/sysctl.d/60-golden.conf")
    assert "vm.swappiness = 5\n" in sysctl["content"]
    assert "chown mysql:mysql /etc/mysql/x.cnf" in data["runcmd"]


def test_no_secret_is_baked_into_sql_user_data():
    text = render_user_data(resolve("sql-primary", 12), TEST_KEY)
    # no password or secret values (sshd's "PasswordAuthentication no" is a setting, not a secret)
    assert not re.search(r"\b(password|secret|passwd)\s*[:=]", text, re.I)
    assert "IDENTIFIED BY" not in text


def test_host_user_data_puts_settings_in_a_root_only_file():
    text = render_host_user_data("db1", {"mariadb": {"replication_password": "s3cret"}})
    data = _load(text)
    entry = data["write_files"][0]
    assert entry["path"] == "/etc/golden/host.json" and entry["permissions"] == "0600"
    assert "s3cret" not in text  # base64, not in clear in the user-data


@pytest.mark.parametrize("target", list(Target))
def test_template_builds_one_source_and_runs_cleanup_last(target):
    template, values = render_template(resolve("nfs", 11), target)
    (builder,) = template["source"]
    assert template["build"]["sources"] == [f"source.{builder}.golden"]
    provisioners = template["build"]["provisioner"]
    if target is not Target.QEMU:  # then only the build account's removal (test_build_account)
        assert provisioners.pop()["shell"]["script"].endswith("remove-build-account.sh")
    assert provisioners[-1]["shell"]["script"].endswith("cleanup.sh")
    env = provisioners[-1]["shell"]["environment_vars"]
    assert "GOLDEN_CLEAN_MACHINE_ID=0" in env  # Debian 11's cloud-init has no --machine-id
    assert "packer" not in template  # Packer 1.6 rejects required_plugins
    for name, decl in template["variable"].items():
        # every variable has a value: in the vars file or from the environment
        assert name in values or decl["default"].startswith("${env(")


def test_secrets_are_read_from_the_environment_never_written_to_the_vars_file():
    template, values = render_template(resolve("web", 12), Target.PROXMOX)
    assert "proxmox_password" not in values
    assert template["variable"]["proxmox_password"]["sensitive"] is True
    template, values = render_template(resolve("web", 12), Target.OPENSTACK)
    assert "os_password" not in values


def test_required_plugins_block_for_packer_17_and_later():
    template, _ = render_template(resolve("web", 12), Target.OPENSTACK, required_plugins=True)
    assert template["packer"]["required_plugins"]["openstack"]["source"] == "github.com/hashicorp/openstack"


def test_qemu_ssh_forward_is_bound_to_loopback():
    template, _ = render_template(resolve("web", 12), Target.QEMU)
    args = template["source"]["qemu"]["golden"]["qemuargs"]
    netdev = [a[1] for a in args if a[0] == "-netdev"]
    assert netdev and "hostfwd=tcp:127.0.0.1:" in netdev[0]


def test_removed_packages_are_purged_after_the_packages_and_before_the_bake_commands(write_yaml):
    overlay = write_yaml("o.yaml", "remove_packages: [systemd-timesyncd, chrony]\nsystem: {ntp_client: ntp}\n"
                                   "packages: [ntpsec]\n")
    profile = resolve("web", 12, [overlay])
    data = _load(render_user_data(profile, TEST_KEY))
    assert "chrony" not in data["packages"] and "ntpsec" in data["packages"]
    purge = [c for c in data["runcmd"] if "apt-get purge" in c]
    assert purge == [
        "pkgs=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' prometheus-node-exporter-collectors"
        " systemd-timesyncd chrony 2>/dev/null"
        " | awk '$2 ~ /^[ir]/ {print $1}'); "
        '[ -z "$pkgs" ] || DEBIAN_FRONTEND=noninteractive apt-get purge -y -q $pkgs'
    ]
    runcmd = data["runcmd"]
    assert runcmd.index(purge[0]) < runcmd.index(profile.content.bake_commands[0])
    assert "chrony" not in runcmd[-1] and runcmd[-1].startswith("systemctl enable ")
    image_json = next(f for f in data["write_files"] if f["path"] == "/etc/golden/image.json")
    assert "chrony" not in json.loads(image_json["content"])["services"]


def test_the_purge_names_only_what_the_profiles_remove():
    # base removes the node exporter's collectors (their Recommends: smartmontools, ipmitool, nvme-cli)
    purge = [c for c in _load(render_user_data(resolve("web", 12), TEST_KEY))["runcmd"] if "purge" in c]
    assert purge == [
        "pkgs=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' prometheus-node-exporter-collectors 2>/dev/null"
        " | awk '$2 ~ /^[ir]/ {print $1}'); "
        '[ -z "$pkgs" ] || DEBIAN_FRONTEND=noninteractive apt-get purge -y -q $pkgs'
    ]


@pytest.mark.parametrize("target", list(Target))
def test_bake_scripts_run_from_var_tmp_because_tmp_may_be_noexec(target):
    template, _ = render_template(resolve("banking-hardened", 12), target)
    shells = [p["shell"] for p in template["build"]["provisioner"] if "shell" in p]
    assert shells and all(s["remote_folder"] == "/var/tmp" for s in shells)


def test_separate_mounts_name_their_base_on_proxmox_and_openstack():
    _, values = render_template(resolve("banking-hardened", 12), Target.PROXMOX)
    assert values["clone_vm"] == "golden-base-debian12-separate-mounts"
    _, values = render_template(resolve("banking-hardened", 12), Target.OPENSTACK)
    assert values["source_image_name"] == "golden-base-debian12-separate-mounts"
    _, values = render_template(resolve("web", 12), Target.PROXMOX)
    assert values["clone_vm"] == "golden-base-debian12"
    _, values = render_template(resolve("banking-hardened", 12), Target.QEMU)
    assert values["disk_size"] == "8G"


def test_proxmox_template_for_the_plugin_authenticates_with_the_publish_token():
    template, values = render_template(resolve("web", 12), Target.PROXMOX, required_plugins=True)
    source = template["source"]["proxmox-clone"]["golden"]
    assert source["username"] == "${var.proxmox_token_id}" and source["token"] == "${var.proxmox_token_secret}"
    assert "password" not in source and "proxmox_password" not in template["variable"]
    declared = template["variable"]
    assert declared["proxmox_token_id"]["default"] == '${env("PROXMOX_TOKEN_ID")}'
    assert declared["proxmox_token_secret"] == {"type": "string", "description": declared["proxmox_token_secret"][
        "description"], "sensitive": True, "default": '${env("PROXMOX_TOKEN_SECRET")}'}
    assert not {"proxmox_token_id", "proxmox_token_secret"} & set(values)


def test_proxmox_clone_waits_long_enough_for_a_full_clone_and_names_the_cloud_init_storage():
    template, values = render_template(resolve("banking-hardened", 13), Target.PROXMOX, required_plugins=True)
    source = template["source"]["proxmox-clone"]["golden"]
    minutes = int(source["task_timeout"].removesuffix("m"))
    assert source["full_clone"] is True and minutes >= 15  # the plugin's default is 1 minute
    assert source["cloud_init_storage_pool"] == "${var.cloud_init_storage_pool}"
    assert values["cloud_init_storage_pool"] == "local-lvm"


def test_proxmox_template_for_packer_1_6_keeps_what_its_builder_knows():
    template, _ = render_template(resolve("web", 12), Target.PROXMOX)
    source = template["source"]["proxmox-clone"]["golden"]
    assert not {"token", "task_timeout", "serials", "cloud_init_disk_type"} & set(source)
    assert source["password"] == "${var.proxmox_password}" and source["os"] == "l26"
    assert source["cloud_init_storage_pool"] == "${var.cloud_init_storage_pool}"
