"""golden verify runs the suites on settled clones: the first-boot agent starts after cloud-init's final stage,
so `cloud-init status --wait` returns before it, and the suites raced it (banking-hardened's first boot runs
update-grub, minutes under TCG: its suite found the agent still running)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from goldenimage.verify import artifact as verify_mod
from goldenimage.verify.guest import wait_for_first_boot


class _Guest:
    """A booted clone that answers the agent's status as given; records the commands sent over SSH."""

    def __init__(self, status: str, returncode: int = 0) -> None:
        self.status = status
        self.returncode = returncode
        self.commands: list[str] = []
        self.started_at = 0.0
        self.ssh_up_after = 1.0
        self.stopped = False

    def ssh(self, cmd: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        self.commands.append(cmd)
        if "golden-firstboot status" in cmd:
            return subprocess.CompletedProcess(cmd, self.returncode, self.status, "")
        return subprocess.CompletedProcess(cmd, 0, "running\n", "")

    def stop(self) -> None:
        self.stopped = True


@pytest.mark.parametrize(("status", "returncode", "expected"), [
    ('{"result": "done", "steps": {}}', 0, "done"),
    ('{"result": "failed", "steps": {}}', 1, "failed"),  # exit status 1, the status still printed
    ("null", 0, "not started"),
    ("", 255, "absent"),
])
def test_wait_for_first_boot_waits_for_the_boot_then_reads_the_agent(status: str, returncode: int,
                                                                     expected: str) -> None:
    guest = _Guest(status, returncode)
    assert wait_for_first_boot(guest) == expected  # type: ignore[arg-type]
    assert guest.commands[0] == "systemctl is-system-running --wait"
    assert "golden-firstboot status --json" in guest.commands[1]


def test_verify_boot_returns_a_clone_only_once_its_first_boot_settled(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    guest = _Guest('{"result": "done"}')
    monkeypatch.setattr(verify_mod, "boot_clone", lambda *args, **kwargs: guest)
    artifact: Any = type("A", (), {"qcow2": tmp_path / "x.qcow2"})()
    clone = verify_mod._Clone("verify-1", "bios", tmp_path, "verify-2")
    assert verify_mod._boot(artifact, tmp_path, clone, None, ["hardened"], (0,), []) is guest  # type: ignore[arg-type]
    assert clone.result.first_boot == "done"
    assert guest.commands == ["systemctl is-system-running --wait", "sudo -n golden-firstboot status --json"]
    assert not guest.stopped


def test_verify_boot_stops_the_clone_when_the_wait_is_interrupted(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    guest = _Guest("")

    def interrupted(cmd: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        raise KeyboardInterrupt

    guest.ssh = interrupted  # type: ignore[method-assign]
    monkeypatch.setattr(verify_mod, "boot_clone", lambda *args, **kwargs: guest)
    artifact: Any = type("A", (), {"qcow2": tmp_path / "x.qcow2"})()
    with pytest.raises(KeyboardInterrupt):
        clone = verify_mod._Clone("verify-1", "bios", tmp_path, "verify-2")
        verify_mod._boot(artifact, tmp_path, clone, None, ["hardened"], (0,), [])  # type: ignore[arg-type]
    assert guest.stopped
