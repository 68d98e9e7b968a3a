"""plesk: Plesk, installed at bake time by its own installer, answers on its command line, its panel's services
run and listen on 8443, the release the image's settings asked for is the one installed, and the installer is
not left in the image. The licence is installed at first boot (host data), so a standalone clone has none."""

from __future__ import annotations

import re

INSTALLER = "/root/plesk-installer"


def test_plesk_answers_with_its_product_version(host):
    out = host.check_output("plesk version")
    assert re.search(r"^\s*Product version:\s+Plesk\b", out, re.MULTILINE), out


def test_the_release_the_settings_asked_for_is_installed(host, image_info):
    release = image_info["settings"]["plesk"].get("release") or "current"
    wanted = re.fullmatch(r"PLESK_(\d+(?:_\d+)+)|(\d+(?:\.\d+)+)", release)
    out = host.check_output("plesk version")
    if wanted:  # PLESK_18_0_71 or 18.0.71: that version; current and testing name no version
        version = (wanted.group(1) or "").replace("_", ".") or wanted.group(2)
        assert re.search(rf"Product version:\s+Plesk\b.*\b{re.escape(version)}\b", out), out


def test_panel_services_run_and_start_at_boot(host):
    for name in ("sw-cp-server", "sw-engine"):
        service = host.service(name)
        assert service.is_running and service.is_enabled, name


def test_panel_listens_on_8443(host):
    assert host.socket("tcp://0.0.0.0:8443").is_listening or host.socket("tcp://:::8443").is_listening


def test_the_installer_is_not_left_in_the_image(host):
    assert not host.file(INSTALLER).exists
