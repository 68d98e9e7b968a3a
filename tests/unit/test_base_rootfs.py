"""prepare_rootfs: the tree mmdebstrap made becomes cloud-ready and carries no identity of its own."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from goldenimage.bake.base_image import DATASOURCES, prepare_rootfs
from goldenimage.model.releases import matrix


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """What mmdebstrap leaves behind, reduced to the files prepare_rootfs cares about."""
    root = tmp_path / "rootfs"
    dirs = ("etc/cloud/cloud.cfg.d", "etc/ssh", "etc/default", "etc/apt", "var/lib/dbus", "var/lib/apt/lists/partial")
    for d in dirs:
        (root / d).mkdir(parents=True)
    for name in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "ssh_host_rsa_key"):
        (root / "etc/ssh" / name).write_text("secret")
    (root / "etc/ssh/sshd_config").write_text("# keep\n")
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "var/lib/dbus/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease").write_text("index")
    (root / "var/lib/apt/lists/lock").write_text("")
    (root / "etc/resolv.conf").write_text("nameserver 192.0.2.1  # the build host's\n")
    (root / "etc/hostname").write_text("buildhost\n")
    (root / "etc/default/grub").write_text('GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
    return root


def cloud_cfg(root: Path) -> dict:
    return yaml.safe_load((root / "etc/cloud/cloud.cfg.d/01_goldenimage.cfg").read_text())


def test_cloud_init_looks_for_nocloud_configdrive_and_openstack(tree: Path) -> None:
    prepare_rootfs(tree, matrix().get(12), "generic")
    cfg = cloud_cfg(tree)
    assert cfg["datasource_list"] == list(DATASOURCES) == ["NoCloud", "ConfigDrive", "OpenStack", "None"]
    assert cfg["manage_etc_hosts"] is True
    assert "system_info" not in cfg  # Debian 12 keeps cloud-init's own renderer order (eni first)


def test_network_renderers_come_from_the_release_matrix(tree: Path) -> None:
    prepare_rootfs(tree, matrix().get(13), "generic")
    assert cloud_cfg(tree)["system_info"]["network"]["renderers"][0] == "netplan"


def test_no_host_keys_empty_machine_id_no_apt_lists(tree: Path) -> None:
    prepare_rootfs(tree, matrix().get(12), "generic")
    assert sorted(p.name for p in (tree / "etc/ssh").iterdir()) == ["sshd_config"]
    assert (tree / "etc/machine-id").read_text() == ""
    assert not (tree / "var/lib/dbus/machine-id").exists()
    assert sorted(p.name for p in (tree / "var/lib/apt/lists").iterdir()) == ["lock", "partial"]


def test_build_host_resolver_and_hostname_do_not_leak(tree: Path) -> None:
    prepare_rootfs(tree, matrix().get(12), "generic")
    assert not (tree / "etc/resolv.conf").exists()
    assert (tree / "etc/hostname").read_text() == "debian\n"


def test_resolved_stub_symlink_is_kept(tree: Path) -> None:
    (tree / "etc/resolv.conf").unlink()
    (tree / "etc/resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    prepare_rootfs(tree, matrix().get(13), "generic")
    assert (tree / "etc/resolv.conf").is_symlink()


def test_serial_console_survives_update_grub(tree: Path) -> None:
    prepare_rootfs(tree, matrix().get(12), "generic")
    grub = (tree / "etc/default/grub").read_text().splitlines()
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="console=tty0 console=ttyS0,115200n8 no_timer_check"' in grub
    assert 'GRUB_TERMINAL="console serial"' in grub
    assert "GRUB_DEFAULT=0" in grub and "GRUB_TIMEOUT=5" not in grub


def test_apt_sources_point_at_public_mirrors_and_security(tree: Path) -> None:
    release = matrix().get(12)
    prepare_rootfs(tree, release, "generic")
    sources = (tree / "etc/apt/sources.list").read_text().splitlines()
    assert f"deb {release.mirror} bookworm main non-free-firmware" in sources
    assert f"deb {release.security_mirror} bookworm-security main non-free-firmware" in sources


def test_grub_cloud_reinstalls_both_bootloaders_on_upgrades(tree: Path) -> None:
    # grub-cloud-amd64's trigger runs grub-install for BIOS and UEFI only when this flag exists
    prepare_rootfs(tree, matrix().get(12), "generic")
    assert (tree / "etc/grub.d/enable_cloud").is_file()


def test_the_base_packages_bring_grub_for_bios_and_uefi_with_secure_boot() -> None:
    assert "grub-cloud-amd64" in matrix().get(12).base_packages
    assert "grub-pc" not in matrix().get(12).base_packages  # it conflicts with grub-efi-amd64
