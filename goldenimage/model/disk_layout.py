"""Disk layouts, the model: which filesystems a base image's disk has, their sizes and mount options, and
where each partition goes on the disk (LAYOUTS, plan_disk). bake.disk assembles disks from these plans;
profiles and the Packer template read the layout names and sizes. A change here that alters the disk must bump
bake.base.RECIPE_VERSION, which keys the base image cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ..core.errors import GoldenError

MIB = 1024 * 1024
SECTOR = 512
#: As in Debian's cloud images: BIOS boot partition at 1 MiB (3 MiB), ESP at 4 MiB (124 MiB), data after.
BIOS_BOOT_START, BIOS_BOOT_SIZE = MIB, 3 * MIB
ESP_START, ESP_SIZE = 4 * MIB, 124 * MIB
#: The root partition (number 1: GRUB's prefix is (hd0,gpt1)) starts here; the layout's others follow it.
PART_OFFSET = ESP_START + ESP_SIZE
#: Room for GPT's backup header and table at the end of the disk (33 sectors), kept MiB-aligned.
GPT_BACKUP = MIB
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
#: a bake of MariaDB + Apache + auditd/aide; 6273 MiB with the boot partitions and GPT's backup.
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
    """A planned filesystem partition: its GPT number, byte offset and size."""

    number: int
    mount: Mount
    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(frozen=True)
class DiskPlan:
    """Where everything goes on the disk: the filesystems, then the BIOS boot partition and the ESP
    (numbered after them: (start, size, number) each)."""

    partitions: tuple[Partition, ...]
    bios_boot: tuple[int, int, int]
    esp: tuple[int, int, int]
    size: int


def plan_disk(mounts: Sequence[Mount]) -> DiskPlan:
    """Exact offsets: "/" as partition 1 at PART_OFFSET, the other filesystems after it as 2, 3...; the BIOS
    boot partition and the ESP before them on the disk, numbered last (parted numbers in creation order)."""
    if not mounts or mounts[0].path != "/":
        raise GoldenError("a disk layout starts with the root filesystem")
    parts: list[Partition] = []
    offset = PART_OFFSET
    for number, mount in enumerate(mounts, start=1):
        parts.append(Partition(number, mount, offset, mount.size_mib * MIB))
        offset = parts[-1].end
    n = len(parts)
    return DiskPlan(
        tuple(parts), (BIOS_BOOT_START, BIOS_BOOT_SIZE, n + 1), (ESP_START, ESP_SIZE, n + 2), offset + GPT_BACKUP
    )


def layout_size_mib(layout: DiskLayout) -> int:
    """The virtual size of a base image with this layout, in MiB."""
    return plan_disk(LAYOUTS[layout]).size // MIB
