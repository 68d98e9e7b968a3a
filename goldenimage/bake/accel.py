"""Choose QEMU's accelerator by booting Linux: /dev/kvm opening, or a boot sector running, does not mean
that a Linux kernel runs under KVM.

Hosts of this project's kind differ: on some, KVM is slow; on others a boot sector reaches long mode under
KVM in a millisecond, yet the Debian kernel hangs right after GRUB, silent, with QEMU burning a core. So the
probe boots a real kernel (`-kernel`, no root device, `panic=-1`, `-no-reboot`) until the panic that follows
its failed root mount, and KVM is chosen only when that happens within a budget and faster than under TCG.
The verdict is cached per host boot (`/proc/sys/kernel/random/boot_id`), QEMU version and kernel, so the
seconds it costs are paid once. GOLDEN_ACCEL=kvm|tcg overrides it; `fall_back_to_tcg` (a guest seen hanging
under KVM) switches this process and the cached verdict to TCG.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..core.errors import InputError
from ..core.fs import scratch, write_atomic
from ..core.log import info, log
from ..core.paths import cache_dir
from ..core.run import require, run, spawn, stop
from .probe_kernel import find_probe_kernel

ACCELERATORS = ("kvm", "tcg")
#: A working KVM boots the probe kernel to its panic in one or two seconds; a loaded host gets this much.
KVM_PROBE_BUDGET = 20.0
#: TCG's figure is needed only when KVM's is not clearly fast: under this, KVM wins without comparing.
KVM_CLEARLY_FAST = 3.0
TCG_PROBE_BUDGET = 90.0
PROBE_MEMORY_MIB = 256
#: The kernel line that proves it ran its init code: printed as it gives up on a root file system.
PANIC_MARKER = "Kernel panic"
KERNEL_LINE = re.compile(r"\[\s*\d+\.\d+\]|Linux version ")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
CACHE_NAME = "accel-probe.json"


@dataclass(frozen=True)
class Probe:
    """One boot of the probe kernel: how it ended and after how many seconds."""

    accel: str
    outcome: str  # "booted" (the panic marker, QEMU exited), "silent" (no kernel line), "slow", "failed"
    seconds: float
    detail: str = ""

    def summary(self) -> str:
        if self.outcome == "booted":
            return f"{self.accel} {self.seconds:.1f}s"
        return f"{self.accel} {self.outcome} after {self.seconds:.1f}s" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Verdict:
    """The accelerator chosen, why, and the figures behind it (what the log line and `golden doctor` say)."""

    accel: str
    reason: str
    kvm: Probe | None = None
    tcg: Probe | None = None
    kernel: str = ""
    source: str = "probe"  # probe, cache, GOLDEN_ACCEL, fallback

    def line(self) -> str:
        figures = ", ".join(p.summary() for p in (self.kvm, self.tcg) if p is not None)
        origin = {"cache": " (cached for this host boot)", "probe": "", "GOLDEN_ACCEL": "", "fallback": ""}
        return (f"accelerator {self.accel}: {self.reason}" + (f" [Linux probe: {figures}]" if figures else "")
                + origin.get(self.source, ""))


def decide(kvm_usable: bool, kvm: Probe | None, tcg: Probe | None) -> tuple[str, str]:
    """The decision table: (accelerator, reason) from what the probes saw."""
    if not kvm_usable:
        return "tcg", "/dev/kvm is missing or not readable and writable"
    if kvm is None:
        return "tcg", "no Linux kernel to probe KVM with"
    if kvm.outcome == "failed":
        return "tcg", f"QEMU could not run KVM ({kvm.detail or 'no error text'})"
    if kvm.outcome == "silent":
        return "tcg", f"a Linux kernel printed nothing under KVM in {kvm.seconds:.0f}s (it hangs there)"
    if kvm.outcome == "slow":
        return "tcg", f"a Linux kernel did not finish booting under KVM within {kvm.seconds:.0f}s"
    if kvm.seconds <= KVM_CLEARLY_FAST or tcg is None or tcg.outcome != "booted":
        return "kvm", f"a Linux kernel booted under KVM in {kvm.seconds:.1f}s"
    if kvm.seconds < tcg.seconds:
        return "kvm", f"a Linux kernel booted under KVM in {kvm.seconds:.1f}s, under TCG in {tcg.seconds:.1f}s"
    return "tcg", f"KVM is slower than TCG here ({kvm.seconds:.1f}s against {tcg.seconds:.1f}s to boot Linux)"


_lock = threading.Lock()
_verdict: Verdict | None = None


def detect_accelerator() -> str:
    """"kvm" if a Linux kernel really boots under KVM here, else "tcg"; $GOLDEN_ACCEL overrides the probe."""
    return verdict().accel


def verdict() -> Verdict:
    """This process's verdict: GOLDEN_ACCEL, else a fallback already made, else the cached or a new probe.
    Logged once per process."""
    global _verdict
    if _verdict is not None and _verdict.source == "fallback":  # a guest hung under KVM: even a forced kvm
        return _verdict
    forced = os.environ.get("GOLDEN_ACCEL", "").strip().lower()
    if forced:
        if forced not in ACCELERATORS:
            raise InputError(f"GOLDEN_ACCEL={forced!r} is not an accelerator", hint="use kvm or tcg")
        return Verdict(forced, "set by GOLDEN_ACCEL", source="GOLDEN_ACCEL")
    with _lock:
        if _verdict is None:
            _verdict = _cached_or_probed()
            info(_verdict.line())
        return _verdict


def fall_back_to_tcg(reason: str) -> bool:
    """A guest hung under KVM: TCG for the rest of this process, and for the cached verdict of this host boot.
    True the first time (the caller says so in one line), False when already done."""
    global _verdict
    with _lock:
        if _verdict is not None and _verdict.accel == "tcg":
            return False
        previous = _verdict or _load(None) or Verdict("kvm", "")  # keep the probe's figures
        _verdict = replace(previous, accel="tcg", reason=f"a guest hung under KVM: {reason}", source="fallback")
        _store(_verdict)
        return True


def reset() -> None:
    """Forget this process's verdict (tests)."""
    global _verdict
    with _lock:
        _verdict = None


def _cached_or_probed() -> Verdict:
    kvm_usable = os.access("/dev/kvm", os.R_OK | os.W_OK)
    if not kvm_usable:
        accel, reason = decide(False, None, None)
        return Verdict(accel, reason)
    kernel = find_probe_kernel()
    if kernel is None:  # nothing to boot yet (an empty cache on a host without /boot): not cached
        accel, reason = decide(True, None, None)
        return Verdict(accel, reason + " yet (TCG until a package layer or /boot provides one)")
    key = _cache_key(kernel)
    cached = _load(key)
    if cached is not None:
        return replace(cached, source="cache")
    kvm = probe_linux("kvm", kernel, KVM_PROBE_BUDGET)
    tcg = None
    if kvm.outcome == "booted" and kvm.seconds > KVM_CLEARLY_FAST:
        tcg = probe_linux("tcg", kernel, TCG_PROBE_BUDGET)
    accel, reason = decide(True, kvm, tcg)
    result = Verdict(accel, reason, kvm, tcg, kernel=kernel.name)
    _store(result, key)
    return result


def probe_linux(accel: str, kernel: Path, budget: float) -> Probe:
    """Boot `kernel` under `accel` with no root device until it panics (QEMU then exits, -no-reboot), or
    until `budget` runs out; the guest is always gone when this returns."""
    require("qemu-system-x86_64", purpose="to run virtual machines")
    with scratch("golden-accel") as tmp:
        console = Path(tmp) / "console.log"
        argv = [
            "qemu-system-x86_64",
            "-accel", accel, *(["-cpu", "host"] if accel == "kvm" else []),
            "-nodefaults", "-display", "none", "-monitor", "none", "-no-reboot",
            "-m", str(PROBE_MEMORY_MIB), "-smp", "1",
            "-serial", f"file:{console}",
            "-kernel", str(kernel),
            "-append", "console=ttyS0 panic=-1 no_timer_check",
        ]  # fmt: skip
        errors = Path(tmp) / "qemu.log"
        start = time.monotonic()
        with errors.open("w") as err_out:
            proc = spawn(argv, stdout=subprocess.DEVNULL, stderr=err_out.fileno())
        try:
            proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            pass
        finally:
            stop(proc, grace=2.0)
        elapsed = time.monotonic() - start
        text = console.read_text(errors="replace") if console.exists() else ""
        err = errors.read_text(errors="replace")
    if PANIC_MARKER in text:
        return Probe(accel, "booted", elapsed)
    if proc.returncode not in (0, None) and not text and elapsed < budget:
        first = next((line.strip() for line in err.splitlines() if line.strip()), "")
        return Probe(accel, "failed", elapsed, first[:160])
    if not KERNEL_LINE.search(text):
        return Probe(accel, "silent", elapsed)
    return Probe(accel, "slow", elapsed)


def qemu_version() -> str:
    out = run(["qemu-system-x86_64", "--version"], check=False, timeout=30).stdout or ""
    return out.splitlines()[0].strip() if out else "unknown"


def _cache_key(kernel: Path) -> dict[str, str]:
    try:
        boot_id = BOOT_ID.read_text().strip()
    except OSError:
        boot_id = "unknown"
    stat = kernel.stat()
    return {"boot_id": boot_id, "qemu": qemu_version(), "kernel": f"{kernel.name}:{stat.st_size}"}


def _cache_file() -> Path:
    return cache_dir() / CACHE_NAME


def _load(key: dict[str, str] | None) -> Verdict | None:
    """The cached verdict when it was saved under `key` (any key: None)."""
    try:
        data = json.loads(_cache_file().read_text())
        if key is not None and data.get("key") != key:
            return None
        probes = {name: Probe(**data[name]) if data.get(name) else None for name in ("kvm", "tcg")}
        return Verdict(data["accel"], data["reason"], probes["kvm"], probes["tcg"], data.get("kernel", ""))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store(result: Verdict, key: dict[str, str] | None = None) -> None:
    """Save the verdict for this host boot (a fallback keeps the key the probe saved it under)."""
    path = _cache_file()
    if key is None:
        try:
            key = json.loads(path.read_text()).get("key")
        except (OSError, ValueError, AttributeError):
            key = None
        if key is None:
            return  # nothing probed and cached for this boot: the fallback holds for this process only
    data = asdict(result) | {"key": key}
    data.pop("source", None)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(data, indent=1) + "\n")
    except OSError as exc:  # a read-only cache costs the probe's seconds again, nothing more
        log.debug("accel: verdict not cached: %s", exc)
