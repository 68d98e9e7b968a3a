"""A failed `golden verify` keeps its clones' console logs: its working folder is removed at the end, and a boot
that timed out is told apart (starved or stuck) only from the whole console, not from its last lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from goldenimage.bake import store
from goldenimage.core.errors import GoldenError
from goldenimage.verify import artifact as verify_mod


class _Clone:
    def __init__(self, directory: Path, name: str, firmware: str, console: str | None) -> None:
        self.name = name
        self.firmware = firmware
        self.serial_log = directory / name / f"{name}-serial.log"
        if console is not None:
            self.serial_log.parent.mkdir(parents=True, exist_ok=True)
            self.serial_log.write_text(console)
        self.stopped = False
        self.accel = "tcg"

    def stop(self) -> None:
        self.stopped = True


def test_keep_console_logs_copies_each_clone_log_named_for_its_firmware(tmp_path: Path) -> None:
    clones = [_Clone(tmp_path, "verify-1", "bios", "[  1.0] Linux\n"),
              _Clone(tmp_path, "verify-2", "uefi-secureboot", None)]  # QEMU never started: no log
    kept = verify_mod.keep_console_logs(clones, tmp_path / "kept")  # type: ignore[arg-type]
    assert kept == [tmp_path / "kept" / "verify-1-bios-serial.log"]
    assert kept[0].read_text() == "[  1.0] Linux\n"


def _artifact(tmp_path: Path) -> store.Artifact:
    images = tmp_path / "images"
    images.mkdir()
    manifest = images / "nfs-debian12-x.manifest.json"
    manifest.write_text(json.dumps({"profile": {"roles": ["nfs"]}, "release": {"number": 12},
                                    "firmware": ["bios", "uefi", "uefi-secureboot"]}))
    return store.Artifact(qcow2=images / "nfs-debian12-x.qcow2", sha256_file=images / "nfs-debian12-x.qcow2.sha256",
                          manifest_file=manifest, key="x")


def test_a_clone_without_ssh_leaves_its_whole_console_beside_the_artifact(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    artifact = _artifact(tmp_path)
    monkeypatch.setattr(store, "resolve", lambda target, debian, **kw: artifact)
    clones: list[_Clone] = []

    def boot(artifact: Any, directory: Path, run: Any, key: Any, roles: Any, status_ok: Any,
             started: list[Any] | None = None, hardware: str = "virt", boots_at_once: int = 2) -> _Clone:
        name, firmware = run.result.name, run.result.firmware
        clone = _Clone(directory, name, firmware, f"{name} console\ncloud-init: writing host keys\n")
        clones.append(clone)
        assert started is not None
        started.append(clone)
        if firmware == "uefi-secureboot":
            raise GoldenError(f"{name}: no SSH after 1200s", hint=f"full console log: {clone.serial_log}")
        return clone

    monkeypatch.setattr(verify_mod, "_boot", boot)
    monkeypatch.setattr(verify_mod, "identity", lambda vm: verify_mod.Identity(("k",), "m"))
    monkeypatch.setattr(verify_mod, "run_suites", lambda *args: (0, ".\n1 passed in 0.1s\n"))
    with pytest.raises(GoldenError, match="no SSH") as caught:
        verify_mod.verify("nfs")
    kept = sorted((tmp_path / "images" / "verify-logs").glob("nfs-debian12-x-*/*"))
    assert [p.name for p in kept] == ["verify-1-bios-serial.log", "verify-2-uefi-secureboot-serial.log"]
    assert kept[1].read_text() == "verify-2 console\ncloud-init: writing host keys\n"
    # the hint names the kept folder, not the working folder's log that is gone by now
    assert caught.value.hint == f"console logs of the clones kept in {kept[0].parent}"
    assert not clones[1].serial_log.exists()
    assert all(c.stopped for c in clones)


def test_each_clones_suite_output_reaches_stdout_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Both clones' suites run side by side; their pytest output still comes out on stdout, one clone's whole
    block after the other's (what a user and the e2e test read: one ' passed' summary per clone)."""
    artifact = _artifact(tmp_path)
    monkeypatch.setattr(store, "resolve", lambda target, debian, **kw: artifact)

    def boot(artifact: Any, directory: Path, run: Any, key: Any, roles: Any, status_ok: Any,
             started: list[Any] | None = None, hardware: str = "virt", boots_at_once: int = 2) -> _Clone:
        clone = _Clone(directory, run.result.name, run.result.firmware, "console\n")
        assert started is not None
        started.append(clone)
        return clone

    monkeypatch.setattr(verify_mod, "_boot", boot)
    monkeypatch.setattr(verify_mod, "identity", lambda vm: verify_mod.Identity(("k",), "m"))
    monkeypatch.setattr(verify_mod, "run_suites", lambda vm, *args: (0, f"..\n2 passed on {vm.name}\n"))
    report = verify_mod.verify("nfs")
    out = capsys.readouterr().out
    assert out.count(" passed") == 2
    for name, firmware in (("verify-1", "bios"), ("verify-2", "uefi-secureboot")):
        assert f"--- testinfra on {name} ({firmware}) ---\n..\n2 passed on {name}\n" in out
    assert [c.passed for c in report.clones] == [True, True]
