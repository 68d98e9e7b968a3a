"""The accelerator: GOLDEN_ACCEL wins; otherwise a Linux kernel booted under KVM decides, the verdict is cached
for the host's boot, and a guest that hangs under KVM falls back to TCG instead of hanging the command."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from goldenimage.bake import accel, kernel_watch, probe_kernel
from goldenimage.core.errors import InputError
from goldenimage.verify.vm import VM


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GOLDEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GOLDEN_ACCEL", raising=False)
    monkeypatch.delenv("GOLDEN_PROBE_KERNEL", raising=False)
    accel.reset()
    yield
    accel.reset()


@pytest.mark.parametrize("value", ["kvm", "tcg", "TCG "])
def test_environment_overrides_the_probe(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("GOLDEN_ACCEL", value)
    monkeypatch.setattr(accel, "probe_linux", lambda *a, **k: pytest.fail("probed despite GOLDEN_ACCEL"))
    assert accel.detect_accelerator() == value.strip().lower()


def test_unknown_override_is_an_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOLDEN_ACCEL", "hvf")
    with pytest.raises(InputError):
        accel.detect_accelerator()


def _probe(accel_name: str, outcome: str, seconds: float) -> accel.Probe:
    return accel.Probe(accel_name, outcome, seconds)


@pytest.mark.parametrize(("usable", "kvm", "tcg", "expected", "why"), [
    (False, None, None, "tcg", "/dev/kvm"),
    (True, None, None, "tcg", "no Linux kernel"),
    (True, _probe("kvm", "silent", 20.0), None, "tcg", "printed nothing under KVM"),
    (True, _probe("kvm", "slow", 20.0), None, "tcg", "did not finish booting"),
    (True, _probe("kvm", "failed", 0.1), None, "tcg", "could not run KVM"),
    (True, _probe("kvm", "booted", 0.8), None, "kvm", "booted under KVM in 0.8s"),
    (True, _probe("kvm", "booted", 6.0), _probe("tcg", "booted", 9.0), "kvm", "under TCG in 9.0s"),
    (True, _probe("kvm", "booted", 12.0), _probe("tcg", "booted", 9.0), "tcg", "slower than TCG"),
    (True, _probe("kvm", "booted", 6.0), _probe("tcg", "slow", 90.0), "kvm", "booted under KVM"),
])  # fmt: skip
def test_decision_table(usable: bool, kvm: accel.Probe | None, tcg: accel.Probe | None, expected: str,
                        why: str) -> None:
    chosen, reason = accel.decide(usable, kvm, tcg)
    assert chosen == expected and why in reason


def _fake_kernel(tmp_path: Path) -> Path:
    kernel = tmp_path / "vmlinuz-6.1.0-99-cloud-amd64"
    kernel.write_bytes(b"not a kernel")
    return kernel


def test_verdict_is_probed_once_then_cached_for_the_host_boot(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    monkeypatch.setenv("GOLDEN_PROBE_KERNEL", str(_fake_kernel(tmp_path)))
    monkeypatch.setattr(accel.os, "access", lambda path, mode: True)
    monkeypatch.setattr(accel, "qemu_version", lambda: "QEMU emulator version 7.2.22")
    calls: list[str] = []

    def probe(name: str, kernel: Path, budget: float) -> accel.Probe:
        calls.append(name)
        return accel.Probe(name, "silent", budget)  # the hang seen here: KVM opens, Linux never prints

    monkeypatch.setattr(accel, "probe_linux", probe)
    first = accel.verdict()
    assert first.accel == "tcg" and "printed nothing under KVM" in first.reason and calls == ["kvm"]
    assert "kvm silent after" in first.line()
    accel.reset()  # a new process on the same host boot: the cache answers, no probe
    again = accel.verdict()
    assert again.accel == "tcg" and again.source == "cache" and calls == ["kvm"]
    # another boot of the host (or another QEMU): probed again
    cached = json.loads((tmp_path / "cache" / accel.CACHE_NAME).read_text())
    cached["key"]["boot_id"] = "another-boot"
    (tmp_path / "cache" / accel.CACHE_NAME).write_text(json.dumps(cached))
    accel.reset()
    accel.verdict()
    assert calls == ["kvm", "kvm"]


def test_no_kernel_means_tcg_and_nothing_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(accel.os, "access", lambda path, mode: True)
    monkeypatch.setattr(accel, "find_probe_kernel", lambda: None)
    assert accel.verdict().accel == "tcg"
    assert not (tmp_path / "cache" / accel.CACHE_NAME).exists()


def test_probe_kernel_is_taken_from_the_newest_package_layer(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "boot").mkdir(parents=True)
    (tree / "boot" / "vmlinuz-6.1.0-42-cloud-amd64").write_bytes(b"kernel bytes")
    (tree / "etc").mkdir()
    (tree / "etc" / "hostname").write_text("x\n")
    base = tmp_path / "cache" / "base"
    base.mkdir(parents=True)
    subprocess.run(["tar", "--zstd", "-cf", base / "debian12-cloud-web-abc.tree.tar.zst", "-C", tree, "."],
                   check=True)
    monkeypatch.setattr(probe_kernel, "Path", _no_host_boot(tmp_path))
    found = probe_kernel.find_probe_kernel()
    assert found is not None and found.name == "vmlinuz-6.1.0-42-cloud-amd64"
    assert found.read_bytes() == b"kernel bytes" and found.parent == tmp_path / "cache" / "probe-kernel"
    assert [p.name for p in found.parent.iterdir()] == [found.name], "a scratch folder was left behind"


def _no_host_boot(tmp_path: Path) -> type[Path]:
    """Path, except that /boot is an empty folder (the host's kernel must not answer for the layer's)."""
    empty = tmp_path / "empty-boot"
    empty.mkdir()

    class _Path(type(Path())):  # type: ignore[misc]
        def __new__(cls, *parts: str) -> Path:
            return Path(empty) if parts == ("/boot",) else Path(*parts)

    return _Path


STANDIN_QEMU = r"""#!{python}
# A stand-in for qemu-system-x86_64: under KVM the "guest" prints GRUB's handover line and then spins a core,
# silent, like the KVM hang seen on some hosts; under TCG it prints kernel lines and idles.
import sys, time
args = sys.argv[1:]
accel = args[args.index("-accel") + 1]
serial = next(a for a in args if a.startswith("file:") and a.endswith("serial.log"))[5:]
with open({log!r}, "a") as log:
    log.write(accel + "\n")
with open(serial, "w") as out:
    if accel == "kvm":
        out.write("GNU GRUB  version 2.06\n  Booting `Debian GNU/Linux 12'\n\n")
        out.flush()
        while True:
            pass
    out.write("[    0.000000] Linux version 6.1.0-42-cloud-amd64\n")
    out.flush()
    time.sleep(600)
"""


def test_a_guest_that_hangs_after_the_bootloader_is_restarted_under_tcg(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The harness must fall back, not wait out its SSH timeout: the stand-in's KVM guest never answers."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    started = tmp_path / "started.log"
    qemu = bindir / "qemu-system-x86_64"
    qemu.write_text(STANDIN_QEMU.replace("{python}", sys.executable).replace("{log!r}", repr(str(started))))
    qemu.chmod(qemu.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("GOLDEN_ACCEL", "kvm")  # what the probe said on such a host
    monkeypatch.setattr(kernel_watch, "STALL_SECONDS", 2.0)
    monkeypatch.setattr(kernel_watch, "STALL_CPU_SECONDS", 0.5)
    monkeypatch.setattr("goldenimage.verify.vm.SSH_POLL_INTERVAL", 0.2)
    image = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", image, "64M"], check=True)

    def ssh(self: VM, cmd: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        up = self.accel == "tcg" and "Linux version" in self.serial_log.read_text()
        return subprocess.CompletedProcess([cmd], 0 if up else 255, "", "" if up else "Connection refused")

    monkeypatch.setattr(VM, "ssh", ssh)
    start = time.monotonic()
    with VM(image, workdir=tmp_path / "vm", name="hang-1") as vm:
        assert vm.accel == "kvm"
        vm.wait_for_ssh(timeout=60)
        assert vm.accel == "tcg"
        assert "-accel" in vm.qemu_argv() and vm.qemu_argv()[vm.qemu_argv().index("-accel") + 1] == "tcg"
    assert time.monotonic() - start < 45, "the harness waited instead of falling back"
    assert started.read_text().split() == ["kvm", "tcg"]
    # the rest of the process uses TCG, even with GOLDEN_ACCEL=kvm: the next guest starts under TCG at once
    assert accel.detect_accelerator() == "tcg"
    with VM(image, workdir=tmp_path / "vm2", name="next-1") as vm:
        assert vm.accel == "tcg"
    assert started.read_text().split() == ["kvm", "tcg", "tcg"]


def test_a_starved_kvm_guest_is_not_restarted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Silence alone is not a hang: a KVM guest whose QEMU gets no CPU (a starved host) is left to boot."""
    vm = VM(tmp_path / "none.qcow2", workdir=tmp_path, name="starved")
    vm.accel = "kvm"
    vm._proc = subprocess.Popen(["sleep", "30"])  # alive, using no CPU
    try:
        vm.serial_log.write_text("  Booting `Debian GNU/Linux 12'\n")
        watch = vm._watch
        watch.restart()
        watch._grown_at -= 100  # quiet for 100 s, and QEMU used no CPU meanwhile
        assert vm.kernel_stalled() is None
        watch._cpu_then -= 90  # the same, with 90 s of CPU spun meanwhile
        assert "after GRUB handed over" in (vm.kernel_stalled() or "")
        vm.serial_log.write_text("  Booting `Debian GNU/Linux 12'\n[    0.000000] Linux version 6.1\n")
        watch.restart()
        watch._grown_at, watch._cpu_then = watch._grown_at - 100, watch._cpu_then - 90
        assert vm.kernel_stalled() is None, "a kernel that printed is running, not hung"
    finally:
        vm._proc.kill()
        vm._proc.wait()
        vm._proc = None


def test_a_probe_that_cannot_finish_is_killed_within_its_budget(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    """A guest that never exits (a process that sleeps far past the budget): the probe reports it silent and
    the process is gone when probe_linux returns."""
    started: list[subprocess.Popen[str]] = []
    real_spawn = accel.spawn

    def spawn_a_guest_that_hangs(argv: list[str], **kwargs: object) -> subprocess.Popen[str]:
        assert argv[0] == "qemu-system-x86_64" and "-kernel" in argv
        proc = real_spawn(["sleep", "600"], **kwargs)  # type: ignore[arg-type]
        started.append(proc)
        return proc

    monkeypatch.setattr(accel, "require", lambda *a, **k: None)
    monkeypatch.setattr(accel, "spawn", spawn_a_guest_that_hangs)
    result = accel.probe_linux("kvm", _fake_kernel(tmp_path), 0.3)
    assert result.outcome == "silent"
    assert len(started) == 1 and started[0].poll() is not None, "the hung probe was left running"


STANDIN_PACKER = r"""#!/bin/sh
# A stand-in for `packer build`: its QEMU (a child in packer's process group) prints GRUB's handover and
# spins, silent, as the KVM hang does.
[ "$1" = version ] && { echo "Packer v1.6.6"; exit 0; }
exec {qemu} -accel kvm -serial file:{serial}
"""


def test_a_packer_vm_pass_that_hangs_under_kvm_is_stopped_and_reported(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    from goldenimage.bake import packer_build as build_mod

    bindir = tmp_path / "bin"
    bindir.mkdir()
    started = tmp_path / "started.log"
    serial = tmp_path / "serial.log"
    qemu = bindir / "qemu-system-x86_64"
    qemu.write_text(STANDIN_QEMU.replace("{python}", sys.executable).replace("{log!r}", repr(str(started)))
                    .replace('a.endswith("serial.log")', "True"))
    qemu.chmod(0o755)
    packer = bindir / "packer"
    packer.write_text(STANDIN_PACKER.replace("{qemu}", str(qemu)).replace("{serial}", str(serial)))
    packer.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(build_mod, "init", lambda template: None)
    monkeypatch.setattr(kernel_watch, "STALL_SECONDS", 2.0)
    monkeypatch.setattr(kernel_watch, "STALL_CPU_SECONDS", 0.5)
    template = tmp_path / "t.pkr.json"
    template.write_text("{}")
    start = time.monotonic()
    with pytest.raises(build_mod.KvmHang, match="after GRUB handed over"):
        build_mod.packer_build(template, tmp_path / "v.json", serial_log=serial, watch_kvm=True)
    assert time.monotonic() - start < 60
    out = subprocess.run(["pgrep", "-f", str(qemu)], capture_output=True, text=True)
    assert out.stdout == "", "the hung QEMU was left running"
