"""The virtual hardware of a goldenimage Proxmox VE template, in one table: `golden publish --to proxmox`
creates its VM from it, and the Packer proxmox-clone template sets the same (the plugin would otherwise
rewrite the clone with its own defaults: os `other`, cpu `kvm64`, `lsi` SCSI, no serial port).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProxmoxHardware:
    """PVE settings of the template; names as in PVE's VM config (`qm config`)."""

    ostype: str = "l26"  # Linux 2.6+: PVE's tuning for a Linux guest
    cpu: str = "x86-64-v2-AES"  # PVE 8's default model for new VMs (kvm64 lacks AES-NI and SSE4.2)
    scsihw: str = "virtio-scsi-single"  # one controller per disk: iothread works
    boot_disk: str = "scsi0"  # the image's disk; boot=order=scsi0
    nic_model: str = "virtio"
    serial: str = "socket"  # serial0: the kernel's console=ttyS0 (`qm terminal`)
    vga: str = "std"  # the kernel also writes to tty0
    agent: bool = True  # qemu-guest-agent is in every base image
    # The cloud-init drive: a CD-ROM on virtio-scsi (qemu-server makes a cloud-init drive on a SCSI bus a
    # `scsi-cd`, on its own virtio-scsi-pci controller with virtio-scsi-single). Not `ide2`, as Proxmox's
    # cloud-init guide has it: on q35 (the UEFI template) qemu-server puts IDE drives on the AHCI
    # controller, and Debian's cloud kernel has no AHCI driver (CONFIG_SATA_AHCI unset), so cloud-init
    # found no data there and the clone booted unreachable. virtio_scsi and sr_mod are in every kernel the
    # images carry, on i440fx and q35 alike.
    cloud_init_bus: str = "scsi"
    cloud_init_drive: str = "scsi1"  # the slot after the boot disk
    ciupgrade: bool = False  # no package upgrade at first boot: the image is what was tested
    memory_mb: int = 2048
    cores: int = 2


HARDWARE = ProxmoxHardware()
#: Where the template's disks and cloud-init drive live unless told otherwise.
VM_STORAGE = "local-lvm"
#: Longest wait for one PVE task (a full clone or an import of an 8 GB disk on slow storage takes minutes).
TASK_TIMEOUT_S = 1800
