"""VM: networking stays on 127.0.0.1, the artifact is never written, a guest that never boots fails in time."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from goldenimage.errors import GoldenError
from goldenimage.run import run
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
