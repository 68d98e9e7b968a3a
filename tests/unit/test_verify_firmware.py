"""golden verify boots its two clones with different firmware: BIOS, then the strictest UEFI the artifact has."""

from __future__ import annotations

import pytest

from goldenimage.bake.base import BaseImage
from goldenimage.bake.disk import FIRMWARE
from goldenimage.commands.verify import clone_firmwares


@pytest.mark.parametrize(("firmware", "expected"), [
    (["bios", "uefi", "uefi-secureboot"], ("bios", "uefi-secureboot")),
    (["bios", "uefi"], ("bios", "uefi")),
    (["bios"], ("bios", "bios")),
    (None, ("bios", "bios")),  # manifests written before the firmware was recorded
    (["uefi-secureboot"], ("uefi-secureboot", "uefi-secureboot")),
])
def test_clone_firmwares(firmware: list[str] | None, expected: tuple[str, str]) -> None:
    manifest = {} if firmware is None else {"firmware": firmware}
    assert clone_firmwares(manifest) == expected


def test_built_bases_boot_everything_and_downloaded_ones_bios_only(tmp_path: object) -> None:
    built = BaseImage(path=tmp_path, sha256="0" * 64, key="k", release=12, source="mmdebstrap")  # type: ignore[arg-type]
    fetched = BaseImage(path=tmp_path, sha256="0" * 64, key="k", release=12,  # type: ignore[arg-type]
                        source="https://cloud.debian.org/images/x.qcow2")
    assert built.firmware == FIRMWARE == ("bios", "uefi", "uefi-secureboot")
    assert fetched.firmware == ("bios",)
