"""Disk assembly without a VM or partition devices: raw MBR disk, each ext4 filled from a directory at its
offset (`mkfs.ext4 -d`), GRUB for BIOS in the MBR and the gap before the first partition.

Layouts are data (LAYOUTS): one root filesystem, or separate filesystems for the paths a hardening guide
wants mounted apart. A change here that alters the disk must bump base.RECIPE_VERSION, which keys the base
image cache.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ..errors import GoldenError
from ..releases import Release
from ..run import run

MIB = 1024 * 1024
SECTOR = 512
#: The root partition starts at 1 MiB; GRUB's core.img lives in the gap after the MBR.
PART_OFFSET = MIB
#: Each logical partition is preceded by 1 MiB holding its extended boot record (and keeping alignment).
EBR_GAP = MIB
GRUB_MODULES = (
    "biosdisk part_msdos ext2 search search_fs_uuid normal configfile linux serial terminal echo test"
).split()
SERIAL_CMDLINE = "console=tty0 console=ttyS0,115200n8"
ROOT_OPTIONS = "errors=remount-ro"


class DiskLayout(StrEnum):
    """How the base image's disk is cut: the closed set of layouts in LAYOUTS."""

    SINGLE = "single"
    SEPARATE_MOUNTS = "separate-mounts"


@dataclass(frozen=True)
class Mount:
    """One filesystem of a layout: where it is mounted, its size, label and mount options.

    `create` is the mode, owner and group of the mount point when the tree has no such directory yet
    (a package installed at bake time brings it, and dpkg keeps the directory it finds).
    """

    path: str
    size_mib: int
    label: str
    options: str
    create: tuple[int, str, str] = (0o755, "root", "root")

    @property
    def depth(self) -> int:
        return len(Path(self.path).parts)


#: The filesystems of each layout, "/" first, every parent before its children (fstab order).
#: separate-mounts: ANSSI's partitioning (partition_for_tmp, var, var_log, var_log_audit, home), sized for
#: a bake of MariaDB + Apache + auditd/aide; 6150 MiB with the MBR gap and the logical partitions' EBRs.
LAYOUTS: dict[DiskLayout, tuple[Mount, ...]] = {
    DiskLayout.SINGLE: (Mount("/", 3071, "root", ROOT_OPTIONS),),
    DiskLayout.SEPARATE_MOUNTS: (
        Mount("/", 2560, "root", ROOT_OPTIONS),
        Mount("/var", 2048, "var", "nodev,nosuid"),
        Mount("/var/log", 512, "var-log", "nodev,nosuid,noexec"),
        # as Debian's auditd package ships it
        Mount("/var/log/audit", 256, "var-log-audit", "nodev,nosuid,noexec", create=(0o750, "root", "adm")),
        Mount("/home", 256, "home", "nodev,nosuid,noexec"),
        Mount("/tmp", 512, "tmp", "nodev,nosuid,noexec", create=(0o1777, "root", "root")),
    ),
}


@dataclass(frozen=True)
class Partition:
    """A planned partition: its MBR number (1 primary, 5 and up logical), byte offset and size."""

    number: int
    mount: Mount
    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(frozen=True)
class DiskPlan:
    """Where everything goes on the disk; `extended` is the extended partition's (start, size), if any."""

    partitions: tuple[Partition, ...]
    extended: tuple[int, int] | None
    size: int


def plan_disk(mounts: Sequence[Mount]) -> DiskPlan:
    """Exact offsets: "/" as primary partition 1 at 1 MiB (GRUB's prefix is (hd0,msdos1)), the other
    filesystems as logical partitions 5, 6... in an extended partition 2 that fills the rest."""
    if not mounts or mounts[0].path != "/":
        raise GoldenError("a disk layout starts with the root filesystem")
    parts = [Partition(1, mounts[0], PART_OFFSET, mounts[0].size_mib * MIB)]
    extended = None
    if len(mounts) > 1:
        ext_start = parts[0].end
        offset = ext_start
        for number, mount in enumerate(mounts[1:], start=5):
            parts.append(Partition(number, mount, offset + EBR_GAP, mount.size_mib * MIB))
            offset = parts[-1].end
        extended = (ext_start, offset - ext_start)
    return DiskPlan(tuple(parts), extended, parts[-1].end)


def layout_size_mib(layout: DiskLayout) -> int:
    """The virtual size of a base image with this layout, in MiB."""
    return plan_disk(LAYOUTS[layout]).size // MIB


def fstab(uuids: dict[str, str], mounts: Sequence[Mount]) -> str:
    """/etc/fstab: every filesystem by UUID; "/" checked first (pass 1), the others after it (pass 2)."""
    return "".join(
        f"UUID={uuids[m.path]} {m.path} ext4 {m.options} 0 {1 if m.path == '/' else 2}\n" for m in mounts
    )


def set_grub_defaults(path: Path) -> None:
    """Keep the serial console when update-grub runs later inside the image."""
    wanted = {
        "GRUB_CMDLINE_LINUX_DEFAULT": f'"{SERIAL_CMDLINE}"',
        "GRUB_TERMINAL": '"console serial"',
        "GRUB_SERIAL_COMMAND": '"serial --unit=0 --speed=115200"',
        "GRUB_TIMEOUT": "1",
    }
    lines = path.read_text().splitlines() if path.exists() else []
    out = [line for line in lines if line.split("=", 1)[0].lstrip("# ") not in wanted]
    out += [f"{k}={v}" for k, v in wanted.items()]
    path.write_text("\n".join(out) + "\n")


def assemble_disk(
    root: Path,
    raw: Path,
    tmp: Path,
    release: Release,
    layout: DiskLayout = DiskLayout.SINGLE,
    mounts: Sequence[Mount] | None = None,
) -> dict[str, str]:
    """Raw MBR disk with the layout's filesystems filled from `root`, GRUB for BIOS; no loop devices.

    `mounts` replaces the layout's table (tests use small sizes). The subtrees of separate filesystems
    are moved out of `root`. Returns each mount point's filesystem UUID (also in the tree's fstab).
    """
    mounts = tuple(mounts if mounts is not None else LAYOUTS[layout])
    plan = plan_disk(mounts)
    uuids = {m.path: str(uuid.uuid4()) for m in mounts}
    kver = kernel_version(root)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/fstab").write_text(fstab(uuids, mounts))
    grub_dir = root / "boot/grub"
    grub_dir.mkdir(parents=True, exist_ok=True)
    (grub_dir / "grub.cfg").write_text(grub_cfg(uuids["/"], kver, release))

    # the image's own GRUB modules, so that core.img matches the modules grub-install would use later
    modules = root / "usr/lib/grub/i386-pc"
    core = tmp / "core.img"
    run(["grub-mkimage", "-d", modules, "-O", "i386-pc", "-o", core, "-p", "(hd0,msdos1)/boot/grub", *GRUB_MODULES])
    if core.stat().st_size > PART_OFFSET - SECTOR:
        raise GoldenError(f"GRUB core.img is {core.stat().st_size} bytes: it does not fit before the partition")
    # what grub-install would copy: modules for `insmod` at boot, and the images for later reinstalls
    target = grub_dir / "i386-pc"
    target.mkdir(exist_ok=True)
    for mod in [*modules.glob("*.mod"), *modules.glob("*.lst"), core, modules / "boot.img"]:
        shutil.copy2(mod, target / mod.name)
    boot_code = (modules / "boot.img").read_bytes()[:440]

    trees = split_tree(root, mounts, tmp / "mounts")
    with raw.open("wb") as f:
        f.truncate(plan.size)
    partition_disk(raw, plan)
    for part in plan.partitions:
        make_filesystem(raw, part, trees[part.mount.path], uuids[part.mount.path])
    # the MBR's boot code is its first 440 bytes: the partition table after them stays as parted wrote it
    with raw.open("r+b") as f:
        f.write(boot_code)
        f.seek(SECTOR)
        f.write(core.read_bytes())
    return uuids


def split_tree(root: Path, mounts: Sequence[Mount], stage: Path) -> dict[str, Path]:
    """Move each separate filesystem's subtree out of `root` (deepest first), leaving an empty mount point
    with the subtree's mode and owner; a missing directory is made with the mount's `create` mode."""
    trees = {"/": root}
    stage.mkdir(parents=True, exist_ok=True)
    for mount in sorted((m for m in mounts if m.path != "/"), key=lambda m: m.depth, reverse=True):
        point = root / mount.path.lstrip("/")
        tree = stage / mount.label
        if point.is_symlink() or (point.exists() and not point.is_dir()):
            raise GoldenError(f"{mount.path} is not a directory in the tree: it cannot be a mount point")
        if point.exists():
            os.rename(point, tree)
            st = tree.stat()
            mode, uid, gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
        else:
            mode, owner, group = mount.create
            uid, gid = _id(root / "etc/passwd", owner), _id(root / "etc/group", group)
            tree.mkdir()
            os.chown(tree, uid, gid)
            tree.chmod(mode)
        point.mkdir(parents=True)
        os.chown(point, uid, gid)
        point.chmod(mode)  # after chown, which clears set-id bits
        trees[mount.path] = tree
    return trees


def _id(table: Path, name: str) -> int:
    """The numeric id of a user or group in the tree's own /etc/passwd or /etc/group."""
    if name == "root":
        return 0
    for line in table.read_text().splitlines() if table.exists() else []:
        fields = line.split(":")
        if fields[0] == name and len(fields) > 2:
            return int(fields[2])
    raise GoldenError(f"no {name!r} in the tree's {table.name}: cannot make a mount point owned by it")


def partition_disk(raw: Path, plan: DiskPlan) -> None:
    """Write the MBR partition table with parted in sectors, then check every offset parted recorded."""
    def sectors(start: int, size: int) -> list[str]:
        return [f"{start // SECTOR}s", f"{(start + size) // SECTOR - 1}s"]

    first, *logical = plan.partitions
    argv = ["mklabel", "msdos", "mkpart", "primary", "ext4", *sectors(first.start, first.size)]
    argv += ["set", "1", "boot", "on"]
    if plan.extended:
        argv += ["mkpart", "extended", *sectors(*plan.extended)]
        for part in logical:
            argv += ["mkpart", "logical", "ext4", *sectors(part.start, part.size)]
    run(["parted", "-s", raw, "unit", "s", *argv])
    table = run(["parted", "-m", "-s", raw, "unit", "B", "print"]).stdout
    found = {}
    for line in table.splitlines():
        fields = line.rstrip(";").split(":")
        if fields[0].isdigit():
            found[int(fields[0])] = (int(fields[1].rstrip("B")), int(fields[3].rstrip("B")))
    expected = {p.number: (p.start, p.size) for p in plan.partitions}
    if plan.extended:
        expected[2] = plan.extended
    if found != expected:
        raise GoldenError(f"parted wrote partitions {found}, expected {expected} (byte offset, size)")


def make_filesystem(raw: Path, part: Partition, tree: Path, fs_uuid: str) -> None:
    """ext4 at the partition's offset filled from `tree`; its root directory gets the tree's mode and owner
    (mkfs.ext4 -d leaves it 0755: /tmp must be 1777)."""
    st = tree.stat()
    extended = [f"offset={part.start}", "nodiscard"]
    if part.mount.path != "/":
        extended.append(f"root_owner={st.st_uid}:{st.st_gid}")
    mkfs = ["mkfs.ext4", "-q", "-F", "-L", part.mount.label, "-U", fs_uuid, "-E", ",".join(extended), "-d", tree]
    run([*mkfs, raw, f"{part.size // 1024}k"], timeout=1800)
    if part.mount.path != "/" and stat.S_IMODE(st.st_mode) != 0o755:
        mode = stat.S_IFDIR | stat.S_IMODE(st.st_mode)
        run(["debugfs", "-w", "-R", f"sif / mode 0{mode:o}", f"{raw}?offset={part.start}"])


def kernel_version(root: Path) -> str:
    """The newest kernel version in the tree's /boot (natural order: 6.1.10 after 6.1.9)."""
    kernels = sorted(
        (p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*")),
        key=lambda v: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", v)],
    )
    if not kernels:
        raise GoldenError(f"no kernel in {root}/boot", hint="check the kernel package in profiles/releases.yaml")
    return kernels[-1]


def grub_cfg(fs_uuid: str, kver: str, release: Release) -> str:
    """A minimal grub.cfg: serial and VGA console, root found by filesystem UUID."""
    return f"""\
# written by goldenimage.builders.base; update-grub inside the image replaces it
set timeout=1
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
insmod part_msdos
insmod ext2
search --no-floppy --fs-uuid --set=root {fs_uuid}
menuentry 'Debian GNU/Linux {release.number}' {{
  linux /boot/vmlinuz-{kver} root=UUID={fs_uuid} ro {SERIAL_CMDLINE}
  initrd /boot/initrd.img-{kver}
}}
"""
