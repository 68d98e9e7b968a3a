"""The accelerator: GOLDEN_ACCEL wins; otherwise a real probe decides, bounded in time."""

from __future__ import annotations

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
    assert elapsed is not None


def test_a_probe_that_cannot_finish_is_killed_within_its_budget() -> None:
    start = time.monotonic()
    assert accel.run_probe("tcg", 0.001) is None
    assert time.monotonic() - start < 10
