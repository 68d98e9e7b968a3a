"""The Debian 12 base image boots under QEMU as a cloud image (NoCloud seed, SSH key, fresh identity) with
each firmware it is made for: BIOS, UEFI, and UEFI with Secure Boot enforced (one guest at a time)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from goldenimage.bake.base import BaseImage, build_base
from goldenimage.model.releases import matrix
from goldenimage.render.seed import write_seed_iso
from goldenimage.verify.vm import FIRMWARES, VM, ephemeral_keypair

pytestmark = [pytest.mark.vm, pytest.mark.extended]

RELEASE = matrix().get(12)
OVERLAY_SIZE_GIB = 6


@pytest.fixture(scope="module")
def base_image() -> BaseImage:
    """The Debian 12 base, built once and then taken from the cache."""
    start = time.monotonic()
    image = build_base(RELEASE)
    print(f"\nbase image: {image.path} ({image.path.stat().st_size >> 20} MiB, {time.monotonic() - start:.0f}s)")
    return image


@pytest.fixture(scope="module", params=FIRMWARES)
def vm(base_image: BaseImage, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[VM]:
    assert request.param in base_image.firmware
    work = tmp_path_factory.mktemp("vm")
    key = ephemeral_keypair(work)
    user_data = "#cloud-config\n" + json.dumps({"ssh_authorized_keys": [key.public]}) + "\n"
    seed = write_seed_iso(work / "seed.iso", user_data, "instance-id: i-basetest\nlocal-hostname: basetest\n")
    with VM(
        base_image.path,
        seed=seed,
        key=key,
        status_wait_ok=RELEASE.status_wait_ok,
        disk_size=f"{OVERLAY_SIZE_GIB}G",
        workdir=work,
        name=f"base12-{request.param}",
        firmware=request.param,
    ) as machine:
        print(f"boot to SSH: {machine.wait_for_ssh(timeout=600):.0f}s ({machine.accel})")
        machine.wait_cloud_init(timeout=600)
        print(f"cloud-init done: {time.monotonic() - machine.started_at:.0f}s")
        yield machine


def test_the_artifact_is_untouched_by_booting(base_image: BaseImage, vm: VM) -> None:
    assert vm.overlay.exists() and vm.overlay != base_image.path
    assert base_image.path.with_name(base_image.path.name + ".sha256").read_text().split()[0] == base_image.sha256


def test_cloud_init_found_the_nocloud_seed(vm: VM) -> None:
    result = json.loads(vm.ssh("cat /run/cloud-init/result.json").stdout)
    assert result["v1"]["datasource"].startswith("DataSourceNoCloud")
    assert result["v1"]["errors"] == []
    assert vm.ssh("hostname").stdout.strip() == "basetest"


def test_machine_id_is_made_at_first_boot(vm: VM) -> None:
    machine_id = vm.ssh("cat /etc/machine-id").stdout.strip()
    assert len(machine_id) == 32 and int(machine_id, 16)


def test_ssh_host_keys_are_generated_at_boot(vm: VM) -> None:
    keys = vm.ssh("ls /etc/ssh/").stdout.split()
    assert "ssh_host_ed25519_key" in keys and "ssh_host_ed25519_key.pub" in keys


def test_growroot_grew_the_root_filesystem_to_the_disk(vm: VM) -> None:
    size = int(vm.ssh("df --output=size -B1M / | tail -1").stdout)
    assert size > (OVERLAY_SIZE_GIB - 1) * 1024


def test_the_default_user_has_passwordless_sudo(vm: VM) -> None:
    assert vm.ssh("sudo -n true", check=False).returncode == 0


def test_serial_console_carries_the_boot(vm: VM) -> None:
    assert "Debian GNU/Linux 12" in vm.serial_log.read_text(errors="replace")


def test_no_unit_failed(vm: VM) -> None:
    assert vm.ssh("systemctl --failed --no-legend --plain").stdout.strip() == ""


def test_the_guest_booted_with_the_firmware_asked(vm: VM) -> None:
    efi = vm.ssh("test -d /sys/firmware/efi", check=False).returncode == 0
    assert efi == (vm.firmware != "bios")
    if efi:
        # mokutil reads the SecureBoot variable: enforced only with the secboot firmware and enrolled keys
        state = vm.ssh("mokutil --sb-state", check=False).stdout
        assert ("SecureBoot enabled" in state) == (vm.firmware == "uefi-secureboot"), state


def test_the_esp_is_mounted_with_shim_as_the_removable_loader(vm: VM) -> None:
    assert vm.ssh("findmnt -n -o FSTYPE /boot/efi").stdout.strip() == "vfat"
    listing = vm.ssh("sudo ls /boot/efi/EFI/BOOT /boot/efi/EFI/debian").stdout.split()
    assert {"BOOTX64.EFI", "grubx64.efi", "shimx64.efi", "grub.cfg"} <= set(listing)


def test_grub_reinstall_and_update_grub_then_reboot(vm: VM) -> None:
    """What a GRUB, shim or kernel upgrade runs inside the image (grub-cloud-amd64's trigger, the kernel's
    update-grub hook), then the guest boots again with the same firmware: the last test of each guest."""
    script = (
        "set -e; sudo grub-install --target=i386-pc /dev/vda;"
        " sudo grub-install --target=x86_64-efi --no-nvram --uefi-secure-boot --force-extra-removable;"
        " sudo update-grub"
    )
    vm.ssh(script, timeout=600)
    boot_id = vm.ssh("cat /proc/sys/kernel/random/boot_id").stdout.strip()
    vm.ssh("sudo systemctl reboot", check=False, timeout=30)
    new_id = boot_id
    for _ in range(180):  # bounded: 180 probes of at most 20 s, 5 s apart
        probe = vm.ssh("cat /proc/sys/kernel/random/boot_id", check=False, timeout=20)
        new_id = probe.stdout.strip() if probe.returncode == 0 else boot_id
        if new_id != boot_id:
            break
        time.sleep(5)
    assert new_id != boot_id, vm.serial_tail()
    efi = vm.ssh("test -d /sys/firmware/efi", check=False).returncode == 0
    assert efi == (vm.firmware != "bios")
