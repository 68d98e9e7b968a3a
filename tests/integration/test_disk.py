"""Disk assembly on a small fake tree: MBR with one partition at 1 MiB, ext4 there, GRUB in the MBR gap."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from goldenimage.builders.disk import PART_OFFSET, ROOT_OPTIONS, SECTOR, Mount, assemble_disk, kernel_version
from goldenimage.errors import GoldenError
from goldenimage.releases import matrix
from goldenimage.run import run

HOST_GRUB = Path("/usr/lib/grub/i386-pc")
pytestmark = pytest.mark.skipif(
    not HOST_GRUB.is_dir() or not all(shutil.which(t) for t in ("parted", "mkfs.ext4", "grub-mkimage", "debugfs")),
    reason="needs grub-pc-bin, parted and e2fsprogs",
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A root tree with what assembly needs: a kernel and initrd in /boot, GRUB's i386-pc modules."""
    root = tmp_path / "rootfs"
    (root / "boot").mkdir(parents=True)
    for version in ("6.1.9-cloud-amd64", "6.1.10-cloud-amd64"):
        (root / f"boot/vmlinuz-{version}").write_bytes(b"kernel")
        (root / f"boot/initrd.img-{version}").write_bytes(b"initrd")
    shutil.copytree(HOST_GRUB, root / "usr/lib/grub/i386-pc")
    (root / "etc").mkdir()
    return root


def test_disk_has_mbr_ext4_at_1mib_and_grub_in_the_gap(tree: Path, tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    uuids = assemble_disk(tree, raw, tmp_path, matrix().get(12), mounts=(Mount("/", 63, "root", ROOT_OPTIONS),))
    fs_uuid = uuids["/"]
    disk = raw.read_bytes()
    assert disk[510:512] == b"\x55\xaa"
    assert disk[:440] == (HOST_GRUB / "boot.img").read_bytes()[:440]
    core = (tmp_path / "core.img").read_bytes()
    assert disk[SECTOR : SECTOR + len(core)] == core
    status, ptype, start_lba, sectors = struct.unpack_from("<B3xB3xII", disk, 446)
    assert (status, ptype, start_lba * SECTOR) == (0x80, 0x83, PART_OFFSET)
    assert (start_lba + sectors) * SECTOR == 64 * 1024 * 1024
    ext4_magic = struct.unpack_from("<H", disk, PART_OFFSET + 1024 + 56)[0]
    assert ext4_magic == 0xEF53
    # the tree's files are inside the filesystem, and fstab and grub.cfg name its UUID
    fs = f"{raw}?offset={PART_OFFSET}"
    fstab = run(["debugfs", "-R", "cat /etc/fstab", fs]).stdout
    assert fstab == f"UUID={fs_uuid} / ext4 errors=remount-ro 0 1\n"
    grub_cfg = run(["debugfs", "-R", "cat /boot/grub/grub.cfg", fs]).stdout
    assert f"--set=root {fs_uuid}" in grub_cfg and "vmlinuz-6.1.10-cloud-amd64" in grub_cfg
    assert "console=ttyS0,115200n8" in grub_cfg
    assert "normal.mod" in run(["debugfs", "-R", "ls /boot/grub/i386-pc", fs]).stdout


def test_newest_kernel_wins_in_natural_order(tree: Path) -> None:
    assert kernel_version(tree) == "6.1.10-cloud-amd64"


def test_a_tree_without_kernel_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "boot").mkdir()
    with pytest.raises(GoldenError, match="no kernel"):
        kernel_version(tmp_path)
