"""Tell a guest that hangs under KVM before its kernel prints from one that is slow or starved.

Some hosts' KVM runs firmware and GRUB, then hangs at the kernel's first instruction, silent, QEMU spinning a
core (seen here for minutes). Under KVM, firmware, GRUB and the kernel's first line need well under a
second of CPU: a console that has not grown for STALL_SECONDS with no kernel line on it, while QEMU used
STALL_CPU_SECONDS of CPU meanwhile, is that hang. Used by the VM harness and by Packer's VM pass.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from .accel import KERNEL_LINE

STALL_SECONDS = 60.0
STALL_CPU_SECONDS = 10.0


class KernelWatch:
    """Watch one guest's serial console from its (re)start; `stalled()` is polled by whoever waits for it."""

    def __init__(self, serial_log: Path, cpu_seconds: Callable[[], float]) -> None:
        self.serial_log = serial_log
        self.cpu_seconds = cpu_seconds
        self.restart()

    def restart(self) -> None:
        """The guest (re)started now."""
        self._size = self._console_size()
        self._grown_at = time.monotonic()
        self._cpu_then = self.cpu_seconds()
        self.kernel_seen = False

    def _console_size(self) -> int:
        try:
            return self.serial_log.stat().st_size
        except OSError:
            return 0

    def stalled(self, stall_seconds: float | None = None, stall_cpu: float | None = None) -> str | None:
        """Why the guest counts as hung before its kernel (one line), or None."""
        if self.kernel_seen:
            return None
        stall_seconds = STALL_SECONDS if stall_seconds is None else stall_seconds
        stall_cpu = STALL_CPU_SECONDS if stall_cpu is None else stall_cpu
        now = time.monotonic()
        size = self._console_size()
        if size != self._size:
            self._size, self._grown_at, self._cpu_then = size, now, self.cpu_seconds()
            return None
        text = self.serial_log.read_bytes().decode("utf-8", "replace") if size else ""
        if KERNEL_LINE.search(text):
            self.kernel_seen = True
            return None
        quiet = now - self._grown_at
        spun = self.cpu_seconds() - self._cpu_then
        if quiet < stall_seconds or spun < stall_cpu:
            return None
        after = "GRUB handed over" if "Booting" in text else ("the firmware started" if size else "QEMU started")
        return (f"no kernel output {quiet:.0f}s after {after} (console at {size} bytes) while QEMU used "
                f"{spun:.0f}s of CPU")


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of one process; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int, name: str = "qemu-system") -> float:
    """CPU time of the processes named `name`* in process group `pgid` (Packer's QEMU)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, rest = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        fields = rest.split()
        if head.split("(", 1)[-1].startswith(name[:15]) and int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total
