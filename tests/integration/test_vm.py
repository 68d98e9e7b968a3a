"""VM: networking stays on 127.0.0.1, the artifact is never written, a guest that never boots fails in time."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from goldenimage.core.errors import GoldenError
from goldenimage.core.run import run
from goldenimage.verify.vm import VM, ephemeral_keypair

needs_qemu = pytest.mark.skipif(
    not (shutil.which("qemu-system-x86_64") and shutil.which("qemu-img")), reason="needs QEMU"
)


@pytest.fixture
def blank_image(tmp_path: Path) -> Path:
    """A qcow2 with nothing bootable on it."""
    image = tmp_path / "blank.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", image, "64M"])
    return image


def test_ssh_is_forwarded_from_loopback_only_and_the_guest_is_isolated(tmp_path: Path) -> None:
    vm = VM(tmp_path / "a.qcow2", workdir=tmp_path, extra_args=["-netdev", "socket,id=l1,listen=127.0.0.1:4000"])
    vm.accel, vm.ssh_port = "tcg", 2222
    argv = vm.qemu_argv()
    netdev = argv[argv.index("-netdev") + 1]
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in netdev and "restrict=on" in netdev
    assert "0.0.0.0" not in " ".join(argv)
    assert argv[-2:] == ["-netdev", "socket,id=l1,listen=127.0.0.1:4000"]  # extra links for multi-VM tests
    assert f"file={vm.overlay},if=virtio,format=qcow2" in argv


def test_bios_guests_use_qemus_default_firmware(tmp_path: Path) -> None:
    vm = VM(tmp_path / "a.qcow2", workdir=tmp_path)
    vm.accel, vm.ssh_port = "tcg", 2222
    argv = vm.qemu_argv()
    assert "-machine" not in argv and not any("pflash" in a for a in argv)


@pytest.mark.parametrize(("firmware", "code", "secure"), [
    ("uefi", "OVMF_CODE_4M.fd", False),
    ("uefi-secureboot", "OVMF_CODE_4M.secboot.fd", True),
])
def test_uefi_guests_boot_ovmf_from_pflash_with_their_own_vars(
        tmp_path: Path, firmware: str, code: str, secure: bool) -> None:
    vm = VM(tmp_path / "a.qcow2", workdir=tmp_path, firmware=firmware)
    vm.accel, vm.ssh_port = "tcg", 2222
    argv = vm.qemu_argv()
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive" and "pflash" in argv[i + 1]]
    assert drives == [f"if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/{code}",
                      f"if=pflash,format=raw,unit=1,file={vm.efi_vars}"]
    assert vm.efi_vars.parent == tmp_path  # a per-guest copy: the firmware writes it
    # Secure Boot enforced: SMM on q35, and the flash writable only from SMM
    assert ("q35,smm=on" in argv) == secure
    assert ("driver=cfi.pflash01,property=secure,value=on" in argv) == secure


def test_an_unknown_firmware_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GoldenError, match="unknown firmware 'efi'"):
        VM(tmp_path / "a.qcow2", workdir=tmp_path, firmware="efi")


@needs_qemu
@pytest.mark.skipif(not Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd").is_file(), reason="needs ovmf")
def test_a_secure_boot_guest_gets_a_copy_of_the_vars_with_microsofts_keys(
    blank_image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOLDEN_ACCEL", "tcg")
    vm = VM(blank_image, workdir=tmp_path, firmware="uefi-secureboot")
    with vm:
        assert vm.efi_vars.read_bytes() == Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd").read_bytes()
    assert not vm.efi_vars.exists()


def test_ephemeral_keypair_is_ed25519_without_passphrase(tmp_path: Path) -> None:
    key = ephemeral_keypair(tmp_path)
    assert key.public.startswith("ssh-ed25519 ")
    assert key.private.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")


@needs_qemu
def test_a_guest_that_never_boots_fails_in_time_and_leaves_nothing(
    blank_image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOLDEN_ACCEL", "tcg")
    before = blank_image.read_bytes()
    start = time.monotonic()
    expected = "(?s)no SSH.*serial console.*never reached"
    with pytest.raises(GoldenError, match=expected), VM(blank_image, disk_size="128M") as vm:
        workdir, proc = vm.workdir, vm._proc
        assert vm.overlay.exists() and vm.running
        vm.wait_for_ssh(timeout=8)
    assert time.monotonic() - start < 60
    assert proc is not None and proc.poll() is not None  # QEMU was killed
    assert not workdir.exists()  # overlay and logs of an owned workdir are gone
    assert blank_image.read_bytes() == before  # the artifact itself was never written
