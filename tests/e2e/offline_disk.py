"""A baked disk read offline: its ext4 file systems mounted read-only from loop devices at their partitions'
offsets (no partition scan, no qemu-nbd), the root first and the others where its fstab puts them. The ESP
(vfat) is left out: this host's kernel cannot mount FAT, and nothing a profile writes lives there.

Needs root (losetup, mount); everything is unmounted and detached on exit, whatever happened."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from goldenimage.core.run import run


def _partitions(raw: Path) -> list[tuple[int, int]]:
    """(byte offset, byte size) of each partition of a raw disk's GPT, by sfdisk."""
    table = json.loads(run(["sfdisk", "--json", raw]).stdout)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    return [(int(p["start"]) * sector, int(p["size"]) * sector) for p in table["partitions"]]


def _loop(stack: ExitStack, raw: Path, offset: int, size: int) -> str:
    device = run(["losetup", "--find", "--show", "--read-only", "--offset", str(offset), "--sizelimit", str(size),
                  raw]).stdout.strip()
    stack.callback(run, ["losetup", "--detach", device], check=False)
    return device


def _blkid(device: str, tag: str) -> str:
    return run(["blkid", "-p", "-o", "value", "-s", tag, device], check=False).stdout.strip()


def _mount(stack: ExitStack, device: str, where: Path) -> None:
    # noload: a file system that was not cleanly unmounted is read as it is, its journal not replayed
    run(["mount", "-t", "ext4", "-o", "ro,noload", device, where])
    stack.callback(run, ["umount", where], check=False)


@contextmanager
def mounted_disk(image: Path, work: Path) -> Iterator[Path]:
    """The system on `image` (qcow2 or raw) as a read-only tree; its path while the context lasts."""
    raw = work / f"{image.stem}.raw"
    run(["qemu-img", "convert", "-O", "raw", image, raw], timeout=1800)
    with ExitStack() as stack:
        stack.callback(raw.unlink, missing_ok=True)
        ext4: dict[str, str] = {}  # UUID -> loop device
        for offset, size in _partitions(raw):
            device = _loop(stack, raw, offset, size)
            if _blkid(device, "TYPE") == "ext4":
                ext4[_blkid(device, "UUID")] = device
        root = Path(tempfile.mkdtemp(prefix="offline-", dir=work))
        stack.callback(root.rmdir)
        rest: list[tuple[str, str]] = []
        for device in ext4.values():
            run(["mount", "-t", "ext4", "-o", "ro,noload", device, root])
            fstab = root / "etc/fstab"
            if fstab.is_file():
                stack.callback(run, ["umount", root], check=False)
                for line in fstab.read_text().splitlines():
                    fields = line.split()
                    if len(fields) >= 3 and fields[0].startswith("UUID=") and fields[2] == "ext4" \
                            and fields[1] != "/":
                        rest.append((fields[0][5:], fields[1]))
                break
            run(["umount", root])
        else:
            raise AssertionError(f"{image}: no ext4 file system holds /etc/fstab")
        for uuid, path in sorted(rest, key=lambda item: item[1].count("/")):
            _mount(stack, ext4[uuid], root / path.lstrip("/"))
        yield root
