"""Disk layouts: exact partition offsets, fstab, and a real small separate-mounts disk whose filesystems each
hold their own subtree of the tree and nothing else."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from goldenimage.bake.disk import EFI_FILES, assemble_disk, fstab, split_tree
from goldenimage.core.errors import GoldenError
from goldenimage.core.run import run
from goldenimage.model.disk_layout import LAYOUTS, MIB, DiskLayout, Mount, layout_size_mib, plan_disk
from goldenimage.model.releases import matrix

HOST_GRUB = Path("/usr/lib/grub/i386-pc")
needs_tools = pytest.mark.skipif(
    not HOST_GRUB.is_dir()
    or not all(shutil.which(t) for t in ("parted", "mkfs.ext4", "grub-mkimage", "debugfs", "mkfs.vfat", "mcopy")),
    reason="needs grub-pc-bin, parted, e2fsprogs, dosfstools and mtools",
)
SEPARATE = LAYOUTS[DiskLayout.SEPARATE_MOUNTS]
#: The separate-mounts table at a size a test can afford: same paths, labels and options.
SMALL = tuple(Mount(m.path, 24 if m.path == "/" else 8, m.label, m.options, m.create) for m in SEPARATE)


def test_separate_mounts_has_root_first_then_the_others_at_exact_offsets() -> None:
    plan = plan_disk(SEPARATE)
    got = [(p.number, p.mount.path, p.start // MIB, p.size // MIB) for p in plan.partitions]
    assert got == [
        (1, "/", 128, 2560),
        (2, "/var", 2688, 2048),
        (3, "/var/log", 4736, 512),
        (4, "/var/log/audit", 5248, 256),
        (5, "/home", 5504, 256),
        (6, "/tmp", 5760, 512),
    ]
    # before them, as in Debian's cloud images: BIOS boot at 1 MiB (3 MiB), ESP at 4 MiB (124 MiB)
    assert plan.bios_boot == (MIB, 3 * MIB, 7) and plan.esp == (4 * MIB, 124 * MIB, 8)
    # 1 MiB after the last partition for GPT's backup header
    assert plan.size == 6273 * MIB == layout_size_mib(DiskLayout.SEPARATE_MOUNTS) * MIB


def test_single_layout_is_root_after_the_esp_then_gpts_backup() -> None:
    plan = plan_disk(LAYOUTS[DiskLayout.SINGLE])
    assert [(p.number, p.start, p.end) for p in plan.partitions] == [(1, 128 * MIB, 3199 * MIB)]
    assert (plan.bios_boot[2], plan.esp[2]) == (2, 3)
    assert layout_size_mib(DiskLayout.SINGLE) == 3200


def test_every_layout_fits_the_default_disk_size_and_its_profiles() -> None:
    assert layout_size_mib(DiskLayout.SINGLE) <= 4096  # profiles.DEFAULT_DISK_SIZE
    assert layout_size_mib(DiskLayout.SEPARATE_MOUNTS) <= 8192  # banking-hardened's disk_size


def test_fstab_mounts_by_uuid_with_anssi_options() -> None:
    uuids = {m.path: f"uuid-{m.label}" for m in SEPARATE}
    assert fstab(uuids, SEPARATE).splitlines() == [
        "UUID=uuid-root / ext4 errors=remount-ro 0 1",
        "UUID=uuid-var /var ext4 nodev,nosuid,x-systemd.device-timeout=10min 0 2",
        "UUID=uuid-var-log /var/log ext4 nodev,nosuid,noexec,x-systemd.device-timeout=10min 0 2",
        "UUID=uuid-var-log-audit /var/log/audit ext4 nodev,nosuid,noexec,x-systemd.device-timeout=10min 0 2",
        "UUID=uuid-home /home ext4 nodev,nosuid,noexec,x-systemd.device-timeout=10min 0 2",
        "UUID=uuid-tmp /tmp ext4 nodev,nosuid,noexec,x-systemd.device-timeout=10min 0 2",
    ]
    uuids["/boot/efi"] = "ABCD-1234"
    assert fstab(uuids, SEPARATE).splitlines()[-1] == (
        "UUID=ABCD-1234 /boot/efi vfat umask=0077,nofail,x-systemd.device-timeout=10min 0 2")


def test_every_parent_comes_before_its_children() -> None:
    for layout in LAYOUTS.values():
        paths = [m.path for m in layout]
        assert paths[0] == "/"
        for i, path in enumerate(paths):
            parents = [str(p) for p in Path(path).parents]
            assert all(paths.index(p) < i for p in parents if p in paths)
        assert len({m.label for m in layout}) == len(layout) and all(len(m.label) <= 16 for m in layout)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small root tree: a kernel, GRUB's modules, accounts, and files in every separately mounted subtree."""
    root = tmp_path / "rootfs"
    (root / "boot").mkdir(parents=True)
    (root / "boot/vmlinuz-6.1.0-cloud-amd64").write_bytes(b"kernel")
    (root / "boot/initrd.img-6.1.0-cloud-amd64").write_bytes(b"initrd")
    shutil.copytree(HOST_GRUB, root / "usr/lib/grub/i386-pc")
    for src, _ in EFI_FILES:  # stand-ins for the signed shim and GRUB: assembly only copies them
        (root / src).parent.mkdir(parents=True, exist_ok=True)
        (root / src).write_bytes(f"signed {src}".encode())
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\nadm:x:4:\n")
    (root / "var/lib/apt").mkdir(parents=True)
    (root / "var/lib/apt/state").write_text("var")
    (root / "var/log").mkdir()
    (root / "var/log/syslog").write_text("log")
    (root / "home/debian").mkdir(parents=True)
    (root / "home/debian/.profile").write_text("home")
    (root / "tmp").mkdir()
    (root / "tmp").chmod(0o1777)
    (root / "tmp/leftover").write_text("tmp")
    return root


def _ls(raw: Path, offset: int, path: str = "/") -> dict[str, tuple[int, int, int]]:
    """name -> (mode, uid, gid) of a directory in the filesystem at `offset`, without . and .."""
    out = run(["debugfs", "-R", f"ls -p {path}", f"{raw}?offset={offset}"]).stdout
    entries = {}
    for line in out.splitlines():
        fields = line.split("/")
        if len(fields) > 5 and fields[5] not in (".", ".."):
            entries[fields[5]] = (int(fields[2], 8), int(fields[3]), int(fields[4]))
    return entries


def _root_inode(raw: Path, offset: int) -> tuple[int, int, int]:
    out = run(["debugfs", "-R", "ls -p /", f"{raw}?offset={offset}"]).stdout
    fields = next(line.split("/") for line in out.splitlines() if line.split("/")[5:6] == ["."])
    return int(fields[2], 8), int(fields[3]), int(fields[4])


@needs_tools
def test_separate_mounts_disk_puts_each_subtree_on_its_own_filesystem(tree: Path, tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    uuids = assemble_disk(tree, raw, tmp_path, matrix().get(12), mounts=SMALL)
    plan = plan_disk(SMALL)
    assert raw.stat().st_size == plan.size

    table = run(["parted", "-m", "-s", raw, "unit", "B", "print"]).stdout.splitlines()
    rows = {int(r.split(":")[0]): r.rstrip(";").split(":") for r in table if r[:1].isdigit()}
    assert sorted(rows) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert rows[7][1:4] == [f"{MIB}B", f"{4 * MIB - 1}B", f"{3 * MIB}B"] and "bios_grub" in rows[7][6]
    assert rows[8][1:4] == [f"{4 * MIB}B", f"{128 * MIB - 1}B", f"{124 * MIB}B"] and "esp" in rows[8][6]
    for part in plan.partitions:
        assert rows[part.number][1:4] == [f"{part.start}B", f"{part.end - 1}B", f"{part.size}B"]
        fs = f"{raw}?offset={part.start}"
        header = run(["dumpe2fs", "-h", fs]).stdout
        assert f"Filesystem volume name:   {part.mount.label}\n" in header
        assert f"Filesystem UUID:          {uuids[part.mount.path]}\n" in header
        assert f"Block count:              {part.size // 1024}\n" in header
        run(["e2fsck", "-fn", fs])  # clean: no filesystem overwrote another
    start = {p.mount.path: p.start for p in plan.partitions}

    # each filesystem holds its subtree and nothing else; mount points are empty directories
    root_fs = _ls(raw, start["/"])
    assert set(root_fs) == {"boot", "usr", "etc", "var", "home", "tmp", "lost+found"}
    assert "efi" in _ls(raw, start["/"], "/boot")  # the ESP's mount point
    assert root_fs["tmp"][0] == stat.S_IFDIR | 0o1777
    for point in ("var", "home", "tmp"):
        assert set(_ls(raw, start["/"], f"/{point}")) == set()
    assert set(_ls(raw, start["/var"])) == {"lib", "log", "lost+found"}
    assert set(_ls(raw, start["/var"], "/log")) == set()
    assert set(_ls(raw, start["/var/log"])) == {"syslog", "audit", "lost+found"}
    assert set(_ls(raw, start["/var/log/audit"])) == {"lost+found"}
    assert set(_ls(raw, start["/home"])) == {"debian", "lost+found"}
    assert set(_ls(raw, start["/tmp"])) == {"leftover", "lost+found"}

    # the mounted roots keep the directory's mode and owner: /tmp 1777, /var/log/audit 0750 root:adm (made)
    assert _root_inode(raw, start["/tmp"]) == (stat.S_IFDIR | 0o1777, 0, 0)
    assert _root_inode(raw, start["/var/log/audit"]) == (stat.S_IFDIR | 0o750, 0, 4)
    assert _ls(raw, start["/var/log"])["audit"] == (stat.S_IFDIR | 0o750, 0, 4)
    assert _root_inode(raw, start["/var"]) == (stat.S_IFDIR | 0o755, 0, 0)

    fs_fstab = run(["debugfs", "-R", "cat /etc/fstab", f"{raw}?offset={start['/']}"]).stdout
    assert fs_fstab == fstab(uuids, SMALL)
    grub_cfg = run(["debugfs", "-R", "cat /boot/grub/grub.cfg", f"{raw}?offset={start['/']}"]).stdout
    assert f"--set=root {uuids['/']}" in grub_cfg


def test_split_tree_leaves_empty_mount_points_with_the_subtrees_mode(tree: Path, tmp_path: Path) -> None:
    (tree / "home").chmod(0o711)
    trees = split_tree(tree, SMALL, tmp_path / "stage")
    assert sorted(os.listdir(tree / "home")) == []
    assert stat.S_IMODE((tree / "home").stat().st_mode) == 0o711
    assert sorted(os.listdir(trees["/home"])) == ["debian"]
    assert sorted(os.listdir(trees["/var"])) == ["lib", "log"]
    assert sorted(os.listdir(trees["/var/log"])) == ["audit", "syslog"]
    assert stat.S_IMODE((tree / "tmp").stat().st_mode) == 0o1777


def test_a_mount_point_that_is_not_a_directory_is_a_clear_error(tree: Path, tmp_path: Path) -> None:
    shutil.rmtree(tree / "home")
    (tree / "home").symlink_to("var/home")
    with pytest.raises(GoldenError, match="/home is not a directory"):
        split_tree(tree, SMALL, tmp_path / "stage")


def test_a_missing_owner_for_a_new_mount_point_is_a_clear_error(tree: Path, tmp_path: Path) -> None:
    (tree / "etc/group").write_text("root:x:0:\n")
    with pytest.raises(GoldenError, match="no 'adm' in the tree's group"):
        split_tree(tree, SMALL, tmp_path / "stage")
