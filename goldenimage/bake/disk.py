"""Disk assembly without a VM or partition devices: a hybrid BIOS + UEFI disk as Debian's cloud images are.

GPT with a BIOS boot partition (GRUB's core.img for BIOS), an EFI system partition (Debian's signed shim and
GRUB, so that Secure Boot works) and the layout's ext4 filesystems, each filled from a directory at its
offset (`mkfs.ext4 -d`); the ESP is FAT made at its offset and filled with mtools. Both GRUBs read the one
/boot/grub/grub.cfg of the root filesystem, which update-grub keeps current inside the image.

Layouts are data (model.disk_layout.LAYOUTS): one root filesystem, or separate filesystems for the paths a
hardening guide wants mounted apart. A change here that alters the disk must bump base.RECIPE_VERSION, which
keys the base image cache.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
import struct
import uuid
from collections.abc import Sequence
from pathlib import Path

from ..core.errors import GoldenError
from ..core.run import run
from ..model.disk_layout import (
    BIOS_BOOT_SIZE,
    BIOS_BOOT_START,
    LAYOUTS,
    SECTOR,
    DiskLayout,
    DiskPlan,
    Mount,
    Partition,
    plan_disk,
)
from ..model.releases import Release

ESP_MOUNT = "/boot/efi"
ESP_OPTIONS = "umask=0077"
#: systemd waits 90 s for a file system's device, then drops to emergency mode: a Secure Boot clone under TCG on
#: a host at load 13 timed out so on /boot/efi (its udev was that slow). The partitions are on the boot disk, so
#: waiting longer is right; the ESP is also `nofail`: a system without its ESP mounted still runs.
DEVICE_WAIT = "x-systemd.device-timeout=10min"
#: Modules built into the BIOS core.img: enough to find the root filesystem and read grub.cfg.
GRUB_MODULES = (
    "biosdisk part_gpt ext2 search search_fs_uuid normal configfile linux serial terminal echo test"
).split()
#: boot.img's field holding the first sector of core.img (GRUB_BOOT_MACHINE_KERNEL_SECTOR), and diskboot's
#: blocklist (the first sector of core.img) with the start of the rest of core.img: grub-mkimage writes 1
#: and 2 there (core.img right after the MBR); grub-bios-setup would move them to the BIOS boot partition.
BOOT_KERNEL_SECTOR = 0x5C
DISKBOOT_BLOCKLIST_START = SECTOR - 12
#: (file in the tree, path on the ESP): shim as the removable-media loader (firmware with empty boot
#: entries, as a fresh cloud VM has) and in EFI/debian as grub-install --uefi-secure-boot puts it.
#: No fbx64.efi beside BOOTX64.EFI: shim would run the fallback, which writes boot entries and resets.
EFI_FILES = (
    ("usr/lib/shim/shimx64.efi.signed", "EFI/BOOT/BOOTX64.EFI"),
    ("usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed", "EFI/BOOT/grubx64.efi"),
    ("usr/lib/shim/mmx64.efi.signed", "EFI/BOOT/mmx64.efi"),
    ("usr/lib/shim/shimx64.efi.signed", "EFI/debian/shimx64.efi"),
    ("usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed", "EFI/debian/grubx64.efi"),
    ("usr/lib/shim/mmx64.efi.signed", "EFI/debian/mmx64.efi"),
)
#: Where the signed GRUB looks for its configuration (its prefix is /EFI/debian on the ESP it came from).
EFI_GRUB_CFG = "EFI/debian/grub.cfg"
#: What the artifact boots: BIOS, UEFI, and UEFI with Secure Boot enforced (signed shim, GRUB, kernel).
FIRMWARE = ("bios", "uefi", "uefi-secureboot")
#: The kernel's command line in every image: the serial console, and `no_timer_check`, as Fedora's and RHEL's
#: cloud images have it. At boot the kernel checks that the PIT timer interrupt reaches the IO-APIC by
#: counting ticks in a short busy loop; on a starved virtual CPU (a busy hypervisor, TCG) too few arrive, the
#: kernel falls back to routing it through the 8259A (ExtINT), and device interrupts are then lost: an HA
#: drill guest rebooted at load 10 logged "MP-BIOS bug: 8254 timer not connected to IO-APIC ... ExtINT
#: works", its IDE CD-ROM timed out and its disk's partition read never completed (hung for good). The check
#: guards against timer wiring bugs of old PC chipsets, not of today's servers or hypervisors.
SERIAL_CMDLINE = "console=tty0 console=ttyS0,115200n8 no_timer_check"


def _with_device_wait(options: str, path: str) -> str:
    return options if path == "/" else f"{options},{DEVICE_WAIT}"  # "/" is mounted by the initramfs


def fstab(uuids: dict[str, str], mounts: Sequence[Mount]) -> str:
    """/etc/fstab: every filesystem by UUID; "/" checked first (pass 1), the others after it (pass 2);
    the ESP last when `uuids` has one (its FAT volume id)."""
    lines = [f"UUID={uuids[m.path]} {m.path} ext4 {_with_device_wait(m.options, m.path)} "
             f"0 {1 if m.path == '/' else 2}\n" for m in mounts]
    if ESP_MOUNT in uuids:
        lines.append(f"UUID={uuids[ESP_MOUNT]} {ESP_MOUNT} vfat {ESP_OPTIONS},nofail,{DEVICE_WAIT} 0 2\n")
    return "".join(lines)


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
    """Raw GPT disk with the layout's filesystems filled from `root`, GRUB for BIOS and UEFI (Secure Boot);
    no loop devices.

    `mounts` replaces the layout's table (tests use small sizes). The subtrees of separate filesystems
    are moved out of `root`. Returns each mount point's filesystem UUID, the ESP's volume id under
    /boot/efi (all also in the tree's fstab).
    """
    mounts = tuple(mounts if mounts is not None else LAYOUTS[layout])
    plan = plan_disk(mounts)
    uuids = {m.path: str(uuid.uuid4()) for m in mounts}
    esp_id = secrets.token_hex(4).upper()
    uuids[ESP_MOUNT] = f"{esp_id[:4]}-{esp_id[4:]}"
    kver = kernel_version(root)
    efi_sources = _efi_sources(root)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/fstab").write_text(fstab(uuids, mounts))
    (root / ESP_MOUNT.lstrip("/")).mkdir(parents=True, exist_ok=True)
    grub_dir = root / "boot/grub"
    grub_dir.mkdir(parents=True, exist_ok=True)
    (grub_dir / "grub.cfg").write_text(grub_cfg(uuids["/"], kver, release))

    # the image's own GRUB modules, so that core.img matches the modules grub-install would use later
    modules = root / "usr/lib/grub/i386-pc"
    core = tmp / "core.img"
    run(["grub-mkimage", "-d", modules, "-O", "i386-pc", "-o", core, "-p", "(hd0,gpt1)/boot/grub", *GRUB_MODULES])
    if core.stat().st_size > BIOS_BOOT_SIZE:
        raise GoldenError(f"GRUB core.img is {core.stat().st_size} bytes: it does not fit the BIOS boot partition")
    # what grub-install would copy: modules for `insmod` at boot, and the images for later reinstalls
    target = grub_dir / "i386-pc"
    target.mkdir(exist_ok=True)
    for mod in [*modules.glob("*.mod"), *modules.glob("*.lst"), core, modules / "boot.img"]:
        shutil.copy2(mod, target / mod.name)
    boot_code, core_img = bios_boot_code((modules / "boot.img").read_bytes(), core.read_bytes(), BIOS_BOOT_START)

    trees = split_tree(root, mounts, tmp / "mounts")
    with raw.open("wb") as f:
        f.truncate(plan.size)
    partition_disk(raw, plan)
    for part in plan.partitions:
        make_filesystem(raw, part, trees[part.mount.path], uuids[part.mount.path])
    make_esp(raw, plan, esp_id, efi_sources, efi_grub_cfg(uuids["/"]), tmp / "esp")
    # the protective MBR's boot code is its first 440 bytes: the partition entry after them stays as parted
    # wrote it; core.img fills the start of the BIOS boot partition
    with raw.open("r+b") as f:
        f.write(boot_code)
        f.seek(BIOS_BOOT_START)
        f.write(core_img)
    return uuids


def bios_boot_code(boot_img: bytes, core_img: bytes, core_offset: int) -> tuple[bytes, bytes]:
    """boot.img's first 440 bytes and core.img, both pointing at core.img's place on the disk, as
    grub-bios-setup would write them for a BIOS boot partition at `core_offset` bytes."""
    boot = bytearray(boot_img[:440])
    core = bytearray(core_img)
    (kernel_sector,) = struct.unpack_from("<Q", boot, BOOT_KERNEL_SECTOR)
    (rest_start,) = struct.unpack_from("<Q", core, DISKBOOT_BLOCKLIST_START)
    if (kernel_sector, rest_start) != (1, 2):
        raise GoldenError(
            f"GRUB's boot.img/core.img do not have the expected sector fields ({kernel_sector}, {rest_start})",
            hint="this GRUB version lays out boot.img differently: check disk.bios_boot_code",
        )
    first = core_offset // SECTOR
    struct.pack_into("<Q", boot, BOOT_KERNEL_SECTOR, first)
    struct.pack_into("<Q", core, DISKBOOT_BLOCKLIST_START, first + 1)
    return bytes(boot), bytes(core)


def _efi_sources(root: Path) -> dict[str, Path]:
    """The tree's signed EFI binaries (shim-signed, grub-efi-amd64-signed); a clear error when missing."""
    sources = {dest: root / src for src, dest in EFI_FILES}
    missing = sorted({str(p.relative_to(root)) for p in sources.values() if not p.is_file()})
    if missing:
        raise GoldenError(
            f"the tree has no {', '.join(missing)}: the image could not boot under UEFI",
            hint="the base packages need grub-cloud-amd64 (shim-signed, grub-efi-amd64-signed, grub-pc-bin)",
        )
    return sources


def make_esp(raw: Path, plan: DiskPlan, volume_id: str, files: dict[str, Path], cfg: str, stage: Path) -> None:
    """FAT at the ESP's offset (mkfs.vfat --offset), filled with mtools: no loop device, no mount."""
    start, size, _ = plan.esp
    # FAT32 with 512-byte clusters (enough clusters for FAT32 on 124 MiB); hidden sectors = the offset, as on
    # a partition; the block count is the ESP's, not the whole file's
    sector = str(start // SECTOR)
    run(["mkfs.vfat", "-F", "32", "-s", "1", "-h", sector, "--offset", sector, "-n", "EFI", "-i", volume_id,
         raw, str(size // 1024)])
    stage.mkdir(parents=True, exist_ok=True)
    for dest, src in files.items():
        staged = stage / dest
        staged.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, staged)
    (stage / EFI_GRUB_CFG).write_text(cfg)
    run(["mcopy", "-s", "-Q", "-i", f"{raw}@@{start}", stage / "EFI", "::/"])


def efi_grub_cfg(root_uuid: str) -> str:
    """The ESP's grub.cfg as grub-install writes it: find the root filesystem, read its /boot/grub/grub.cfg."""
    return f"search.fs_uuid {root_uuid} root\nset prefix=($root)'/boot/grub'\nconfigfile $prefix/grub.cfg\n"


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
    """Write the GPT with parted in sectors (filesystems, BIOS boot, ESP), then check every offset parted
    recorded."""
    def sectors(start: int, size: int) -> list[str]:
        return [f"{start // SECTOR}s", f"{(start + size) // SECTOR - 1}s"]

    argv = ["mklabel", "gpt"]
    for part in plan.partitions:
        argv += ["mkpart", part.mount.label, "ext4", *sectors(part.start, part.size)]
    bios_start, bios_size, bios_number = plan.bios_boot
    esp_start, esp_size, esp_number = plan.esp
    argv += ["mkpart", "bios", *sectors(bios_start, bios_size), "set", str(bios_number), "bios_grub", "on"]
    argv += ["mkpart", "efi", "fat32", *sectors(esp_start, esp_size), "set", str(esp_number), "esp", "on"]
    run(["parted", "-s", raw, "unit", "s", *argv])
    table = run(["parted", "-m", "-s", raw, "unit", "B", "print"]).stdout
    found = {}
    for line in table.splitlines():
        fields = line.rstrip(";").split(":")
        if fields[0].isdigit():
            found[int(fields[0])] = (int(fields[1].rstrip("B")), int(fields[3].rstrip("B")))
    expected = {p.number: (p.start, p.size) for p in plan.partitions}
    expected[bios_number] = (bios_start, bios_size)
    expected[esp_number] = (esp_start, esp_size)
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
# written by goldenimage.bake.base_image; update-grub inside the image replaces it
set timeout=1
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
insmod part_gpt
insmod ext2
search --no-floppy --fs-uuid --set=root {fs_uuid}
menuentry 'Debian GNU/Linux {release.number}' {{
  linux /boot/vmlinuz-{kver} root=UUID={fs_uuid} ro {SERIAL_CMDLINE}
  initrd /boot/initrd.img-{kver}
}}
"""
