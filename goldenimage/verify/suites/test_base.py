"""Every image: the shared base (SSH, time sync, security upgrades, apt, locale) and what the manifest says."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize("package", ["openssh-server", "unattended-upgrades", "cloud-init", "sudo"])
def test_base_package_installed(host, package):
    assert host.package(package).is_installed


def test_base_service_running_and_enabled(host):
    s = host.service("ssh")
    assert s.is_running and s.is_enabled


def test_time_sync_daemon_runs(host, image_info):
    # chrony, except under the hardening layer, which replaces it with ntp (ntpsec on Debian 12+)
    name = image_info["release_vars"]["ntp_service"] if "hardened" in image_info["roles"] else "chrony"
    s = host.service(name)
    assert s.is_running and s.is_enabled


def test_ssh_listens_and_refuses_passwords(host):
    assert host.socket("tcp://0.0.0.0:22").is_listening
    config = host.run("sshd -T").stdout.lower()
    assert "passwordauthentication no" in config
    assert "kbdinteractiveauthentication no" in config or "challengeresponseauthentication no" in config


def test_unattended_security_upgrades_configured(host):
    conf = host.file("/etc/apt/apt.conf.d/52golden-unattended-upgrades").content_string
    assert 'Unattended-Upgrade "1"' in conf and "Debian-Security" in conf


def test_timezone_and_locale(host):
    assert host.file("/etc/timezone").content_string.strip() == "Etc/UTC"
    assert "LANG=en_US.UTF-8" in host.file("/etc/default/locale").content_string
    assert "en_US.utf8" in host.run("locale -a").stdout


def test_apt_sources_name_the_release_and_its_security_suite(host, image_info):
    sources = host.file("/etc/apt/sources.list").content_string
    codename = image_info["codename"]
    assert f" {codename} " in sources
    assert "security" in sources


def test_image_says_what_it_is(image_info, manifest):
    assert image_info["profile"] == manifest["profile"]["profile"]
    assert image_info["roles"] == manifest["profile"]["roles"]
    assert image_info["content_key"] == manifest["content_key"]


def test_manifest_lists_what_is_installed(host, manifest):
    for name in ("openssh-server", "cloud-init", "linux-image-cloud-amd64"):
        assert manifest["packages"][name] == host.package(name).version
    assert manifest["cloud_init"] and manifest["cloud_init"] in host.run("cloud-init --version").stdout + \
        host.run("cloud-init --version").stderr


def test_first_boot_agent_finished(host):
    assert host.service("golden-firstboot").is_enabled
    assert host.file("/var/lib/golden/firstboot.done").exists
    status = json.loads(host.check_output("golden-firstboot status --json"))
    assert status["result"] == "done", status
    states = {step: entry["state"] for step, entry in status["steps"].items()}
    assert set(states.values()) <= {"done", "skipped"}, states


#: The UEFI global variable SecureBoot: 4 bytes of attributes, then 1 (enforced) or 0.
SECURE_BOOT_VAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"


def test_booted_with_the_firmware_the_clone_was_given(host, firmware, manifest):
    assert firmware in manifest.get("firmware", ["bios"])
    assert host.file("/sys/firmware/efi").is_directory == (firmware != "bios")
    if firmware != "bios":
        value = host.run(f"od -An -tu1 -j4 -N1 {SECURE_BOOT_VAR}").stdout.strip()
        assert value == ("1" if firmware == "uefi-secureboot" else "0")
        assert ("SecureBoot enabled" in host.run("mokutil --sb-state").stdout) == (firmware == "uefi-secureboot")
