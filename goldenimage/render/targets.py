"""The bake targets a Packer template is rendered for: one closed set, and the names the CLI offers."""

from __future__ import annotations

from enum import StrEnum


class Target(StrEnum):
    QEMU = "qemu"
    PROXMOX = "proxmox"
    OPENSTACK = "openstack"


#: `--target` choices, in the enum's order.
TARGET_NAMES = tuple(str(t) for t in Target)
