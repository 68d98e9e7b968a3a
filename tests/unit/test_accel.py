"""The accelerator: GOLDEN_ACCEL wins; otherwise a real probe decides, bounded in time."""

from __future__ import annotations

import subprocess
import time

import pytest

from goldenimage.bake import accel
from goldenimage.core.errors import InputError


@pytest.mark.parametrize("value", ["kvm", "tcg", "TCG "])
def test_environment_overrides_the_probe(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("GOLDEN_ACCEL", value)
    monkeypatch.setattr(accel, "probe_kvm", lambda budget=0: pytest.fail("probed despite GOLDEN_ACCEL"))
    accel._probed_accelerator.cache_clear()
    assert accel.detect_accelerator() == value.strip().lower()


def test_unknown_override_is_an_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOLDEN_ACCEL", "hvf")
    with pytest.raises(InputError):
        accel.detect_accelerator()


def test_probe_disk_is_a_bootable_mbr() -> None:
    disk = accel.probe_disk()
    assert disk[510:512] == b"\x55\xaa" and len(disk) == 64 * 1024


def test_probe_returns_one_of_the_two_and_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOLDEN_ACCEL", raising=False)
    accel._probed_accelerator.cache_clear()
    start = time.monotonic()
    first = accel.detect_accelerator()
    assert first in ("kvm", "tcg")
    assert time.monotonic() - start < accel.KVM_PROBE_BUDGET + 15
    start = time.monotonic()
    assert accel.detect_accelerator() == first
    assert time.monotonic() - start < 0.1


def test_tcg_probe_reaches_long_mode() -> None:
    """The probe guest itself works: under TCG it gets to 64-bit mode and exits on its own."""
    elapsed = accel.run_probe("tcg", 20.0)
    assert isinstance(elapsed, float) and 0 < elapsed <= 20.0 + 2.0  # seconds, within the budget (plus the stop)


def test_a_guest_that_never_reaches_the_exit_port_fails_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same boot without the exit write (a boot sector that only halts): the probe must say None, so the
    test above passes because the guest got to long mode, not because QEMU exited."""
    halt_forever = bytes.fromhex("faf4ebfd")  # cli; 1: hlt; jmp 1b
    monkeypatch.setattr(accel, "PROBE_BOOT_CODE", halt_forever)
    assert accel.run_probe("tcg", 1.0) is None


def test_a_probe_that_cannot_finish_is_killed_within_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A guest that never exits (here a process that sleeps far past the budget, so no timing decides the
    outcome): the probe reports failure and the process is gone when run_probe returns."""
    started: list[subprocess.Popen[bytes]] = []

    def spawn_a_guest_that_hangs(argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        assert argv[0] == "qemu-system-x86_64"
        proc = real_spawn(["sleep", "600"], **kwargs)
        started.append(proc)
        return proc

    real_spawn = accel.spawn
    monkeypatch.setattr(accel, "require", lambda *a, **k: None)
    monkeypatch.setattr(accel, "spawn", spawn_a_guest_that_hangs)
    assert accel.run_probe("tcg", 0.2) is None
    assert len(started) == 1 and started[0].poll() is not None, "the hung probe was left running"
