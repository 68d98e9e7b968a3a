"""Disk assembly on a small fake tree: GPT with a BIOS boot partition (GRUB's core.img), an ESP (shim and
signed GRUB, with a grub.cfg that finds the root filesystem) and ext4 at 128 MiB."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from goldenimage.bake.disk import EFI_FILES, assemble_disk, bios_boot_code, kernel_version
from goldenimage.core.errors import GoldenError
from goldenimage.core.run import run
from goldenimage.model.disk_layout import BIOS_BOOT_START, ESP_START, PART_OFFSET, ROOT_OPTIONS, SECTOR, Mount
from goldenimage.model.releases import matrix

HOST_GRUB = Path("/usr/lib/grub/i386-pc")
pytestmark = pytest.mark.skipif(
    not HOST_GRUB.is_dir()
    or not all(shutil.which(t) for t in ("parted", "mkfs.ext4", "grub-mkimage", "debugfs", "mkfs.vfat", "mcopy")),
    reason="needs grub-pc-bin, parted, e2fsprogs, dosfstools and mtools",
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
    for src, _ in EFI_FILES:  # stand-ins for the signed binaries: assembly copies them as they are
        (root / src).parent.mkdir(parents=True, exist_ok=True)
        (root / src).write_bytes(f"signed {src}".encode())
    (root / "etc").mkdir()
    return root


def test_disk_has_gpt_bios_boot_esp_and_ext4(tree: Path, tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    uuids = assemble_disk(tree, raw, tmp_path, matrix().get(12), mounts=(Mount("/", 63, "root", ROOT_OPTIONS),))
    fs_uuid = uuids["/"]
    disk = raw.read_bytes()
    # protective MBR (one 0xEE entry) with GRUB's boot code pointing at core.img in the BIOS boot partition
    assert disk[510:512] == b"\x55\xaa" and disk[446 + 4] == 0xEE
    assert disk[SECTOR : SECTOR + 8] == b"EFI PART"
    boot_img = (HOST_GRUB / "boot.img").read_bytes()
    assert struct.unpack_from("<Q", disk, 0x5C)[0] == BIOS_BOOT_START // SECTOR
    assert disk[:0x5C] == boot_img[:0x5C] and disk[0x64:440] == boot_img[0x64:440]
    core = (tmp_path / "core.img").read_bytes()
    assert disk[BIOS_BOOT_START + SECTOR : BIOS_BOOT_START + len(core)] == core[SECTOR:]
    assert struct.unpack_from("<Q", disk, BIOS_BOOT_START + SECTOR - 12)[0] == BIOS_BOOT_START // SECTOR + 1
    ext4_magic = struct.unpack_from("<H", disk, PART_OFFSET + 1024 + 56)[0]
    assert ext4_magic == 0xEF53
    # the tree's files are inside the filesystem, and fstab and grub.cfg name its UUID
    fs = f"{raw}?offset={PART_OFFSET}"
    fstab = run(["debugfs", "-R", "cat /etc/fstab", fs]).stdout
    assert fstab == (f"UUID={fs_uuid} / ext4 errors=remount-ro 0 1\n"
                     f"UUID={uuids['/boot/efi']} /boot/efi vfat umask=0077,nofail,x-systemd.device-timeout=10min 0 2\n")
    grub_cfg = run(["debugfs", "-R", "cat /boot/grub/grub.cfg", fs]).stdout
    assert f"--set=root {fs_uuid}" in grub_cfg and "vmlinuz-6.1.10-cloud-amd64" in grub_cfg
    assert "console=ttyS0,115200n8 no_timer_check" in grub_cfg and "insmod part_gpt" in grub_cfg
    assert "normal.mod" in run(["debugfs", "-R", "ls /boot/grub/i386-pc", fs]).stdout
    assert "efi" in run(["debugfs", "-R", "ls /boot", fs]).stdout


def test_the_esp_holds_shim_as_the_removable_loader_and_a_grub_cfg_to_the_root(tree: Path, tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    uuids = assemble_disk(tree, raw, tmp_path, matrix().get(12), mounts=(Mount("/", 63, "root", ROOT_OPTIONS),))
    esp = f"{raw}@@{ESP_START}"
    # the FAT volume id is the UUID fstab mounts /boot/efi by
    assert f"serial number: {uuids['/boot/efi'].replace('-', '')}\n" in run(["minfo", "-i", esp, "::"]).stdout
    for src, dest in EFI_FILES:
        assert run(["mtype", "-i", esp, f"::/{dest}"]).stdout == f"signed {src}"
    assert "signed usr/lib/shim/shimx64.efi.signed" == run(["mtype", "-i", esp, "::/EFI/BOOT/BOOTX64.EFI"]).stdout
    assert "fbx64" not in run(["mdir", "-b", "-/", "-i", esp, "::/"]).stdout  # no fallback: it would reset
    stub = run(["mtype", "-i", esp, "::/EFI/debian/grub.cfg"]).stdout.splitlines()
    assert stub == [f"search.fs_uuid {uuids['/']} root", "set prefix=($root)'/boot/grub'",
                    "configfile $prefix/grub.cfg"]


def test_a_tree_without_the_signed_efi_binaries_is_a_clear_error(tree: Path, tmp_path: Path) -> None:
    (tree / "usr/lib/shim/shimx64.efi.signed").unlink()
    with pytest.raises(GoldenError, match="shimx64.efi.signed.*UEFI"):
        assemble_disk(tree, tmp_path / "disk.raw", tmp_path, matrix().get(12),
                      mounts=(Mount("/", 63, "root", ROOT_OPTIONS),))


def test_boot_code_fields_not_where_expected_are_refused() -> None:
    boot, core = bytearray(512), bytearray(1024)
    struct.pack_into("<Q", boot, 0x5C, 1)
    struct.pack_into("<Q", core, SECTOR - 12, 2)
    patched_boot, patched_core = bios_boot_code(bytes(boot), bytes(core), 2048 * SECTOR)
    assert struct.unpack_from("<Q", patched_boot, 0x5C)[0] == 2048
    assert struct.unpack_from("<Q", patched_core, SECTOR - 12)[0] == 2049
    with pytest.raises(GoldenError, match="expected sector fields"):
        bios_boot_code(bytes(512), bytes(core), 2048 * SECTOR)


def test_newest_kernel_wins_in_natural_order(tree: Path) -> None:
    assert kernel_version(tree) == "6.1.10-cloud-amd64"


def test_a_tree_without_kernel_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "boot").mkdir()
    with pytest.raises(GoldenError, match="no kernel"):
        kernel_version(tmp_path)
