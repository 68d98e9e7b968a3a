"""Disk assembly without a VM or partition devices: raw MBR disk, ext4 filled from a directory at an
offset (`mkfs.ext4 -d`), GRUB for BIOS in the MBR and the gap before the partition.

A change here that alters the disk must bump base.RECIPE_VERSION, which keys the base image cache.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

from ..errors import GoldenError
from ..releases import Release
from ..run import run

DISK_SIZE_MIB = 3072
#: The root partition starts at 1 MiB; GRUB's core.img lives in the gap after the MBR.
PART_OFFSET = 1024 * 1024
SECTOR = 512
GRUB_MODULES = (
    "biosdisk part_msdos ext2 search search_fs_uuid normal configfile linux serial terminal echo test"
).split()
SERIAL_CMDLINE = "console=tty0 console=ttyS0,115200n8"


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


def assemble_disk(root: Path, raw: Path, tmp: Path, release: Release, size_mib: int = DISK_SIZE_MIB) -> str:
    """Raw MBR disk: ext4 filled from `root` at PART_OFFSET, GRUB for BIOS; no loop or partition devices.

    Returns the root filesystem's UUID (also written to the tree's fstab and grub.cfg).
    """
    fs_uuid = str(uuid.uuid4())
    kver = kernel_version(root)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/fstab").write_text(f"UUID={fs_uuid} / ext4 errors=remount-ro 0 1\n")
    grub_dir = root / "boot/grub"
    grub_dir.mkdir(parents=True, exist_ok=True)
    (grub_dir / "grub.cfg").write_text(grub_cfg(fs_uuid, kver, release))

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

    with raw.open("wb") as f:
        f.truncate(size_mib * 1024 * 1024)
    partition = ["mkpart", "primary", "ext4", "1MiB", "100%", "set", "1", "boot", "on"]
    run(["parted", "-s", raw, "mklabel", "msdos", *partition])
    fs_kib = (size_mib * 1024 * 1024 - PART_OFFSET) // 1024
    mkfs = ["mkfs.ext4", "-q", "-F", "-L", "root", "-U", fs_uuid, "-E", f"offset={PART_OFFSET}", "-d", root]
    run([*mkfs, raw, f"{fs_kib}k"], timeout=1800)
    # the MBR's boot code is its first 440 bytes: the partition table after them stays as parted wrote it
    boot_code = (modules / "boot.img").read_bytes()[:440]
    with raw.open("r+b") as f:
        f.write(boot_code)
        f.seek(SECTOR)
        f.write(core.read_bytes())
    return fs_uuid


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
