"""Choose QEMU's accelerator by a short real probe: /dev/kvm existing does not mean KVM works.

On some hosts (nested virtualisation without full support) KVM starts guests that then crawl or hang
in the kernel; TCG is then the only accelerator that boots anything. GOLDEN_ACCEL=kvm|tcg overrides.
"""

from __future__ import annotations

import os
import subprocess
import time
from functools import cache
from pathlib import Path

from ..core.errors import InputError
from ..core.fs import scratch
from ..core.log import log
from ..core.run import require, spawn, stop

ACCELERATORS = ("kvm", "tcg")
#: A working KVM runs the probe (firmware plus boot sector) in well under a second; where this project
#: was developed a broken KVM needed 3 s for the same work and then hung in the Linux kernel.
KVM_PROBE_BUDGET = 2.0
PROBE_EXIT_PORT = 0xF4
#: isa-debug-exit makes QEMU exit with status (value << 1) | 1; the probe writes 0x10.
PROBE_EXIT_STATUS = (0x10 << 1) | 1

# A BIOS boot sector that goes from real mode straight to 64-bit long mode (identity-mapped 2 MiB page,
# PAE, EFER.LME, CR0.PG|PE) and then writes 0x10 to port 0xf4. Assembled with GNU as from:
#   cli; zero ds/es/ss; sp=0x7c00; zero 0x1000-0x3fff; PML4[0]=0x2003; PDPT[0]=0x3003; PD[0]=0x83
#   lgdtl gdtr; cr4|=PAE; cr3=0x1000; EFER|=LME (rdmsr/wrmsr 0xC0000080); cr0|=PG|PE
#   ljmpl $0x08,$long_mode   .code64: outb 'L' to 0x402 (debugcon); outb 0x10 to 0xf4; 1: hlt; jmp 1b
#   gdt: null, 64-bit code 0x00209A0000000000, data 0x0000920000000000
PROBE_BOOT_CODE = bytes.fromhex(
    "fa31c08ed88ec08ed0bc007cbf0010b90018f3ab66c70600100320000066c70600200330000066c70600308300000066"
    "0f0116a07c0f20e06683c8200f22e066b8001000000f22d866b9800000c00f32660d000100000f300f20c0660d010000"
    "800f22c066ea6c7c0000080066b810008ed866ba0204b04cee66baf400b010eef4ebfd0f1f4400000000000000000000"
    "00000000009a200000000000009200001700887c0000"
)


def probe_disk() -> bytes:
    """A 64 KiB raw disk whose MBR is the long-mode probe."""
    sector = PROBE_BOOT_CODE.ljust(510, b"\0") + b"\x55\xaa"
    return sector.ljust(64 * 1024, b"\0")


def detect_accelerator() -> str:
    """Return "kvm" if a KVM guest really runs here, else "tcg"; $GOLDEN_ACCEL overrides the probe."""
    forced = os.environ.get("GOLDEN_ACCEL", "").strip().lower()
    if forced:
        if forced not in ACCELERATORS:
            raise InputError(f"GOLDEN_ACCEL={forced!r} is not an accelerator", hint="use kvm or tcg")
        return forced
    return _probed_accelerator()


@cache
def _probed_accelerator() -> str:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        log.debug("accel: /dev/kvm is not usable: tcg")
        return "tcg"
    elapsed = probe_kvm(KVM_PROBE_BUDGET)
    accel = "kvm" if elapsed is not None else "tcg"
    log.debug("accel: KVM probe %s: %s", f"took {elapsed:.2f}s" if elapsed is not None else "failed", accel)
    return accel


def probe_kvm(budget: float = KVM_PROBE_BUDGET) -> float | None:
    """Boot the probe disk under KVM; seconds it took to reach long mode, or None if not within budget."""
    return run_probe("kvm", budget)


def run_probe(accel: str, budget: float) -> float | None:
    """Boot the probe disk with `accel`; the probe is always killed when the budget runs out."""
    require("qemu-system-x86_64", purpose="to run virtual machines")
    with scratch("golden-accel") as tmp:
        disk = Path(tmp) / "probe.img"
        disk.write_bytes(probe_disk())
        argv = [
            "qemu-system-x86_64",
            "-accel", accel,
            "-nodefaults", "-display", "none", "-monitor", "none", "-serial", "none",
            "-m", "16", "-no-reboot",
            "-device", f"isa-debug-exit,iobase={PROBE_EXIT_PORT:#x},iosize=0x04",
            "-drive", f"file={disk},format=raw,if=ide",
        ]  # fmt: skip
        start = time.monotonic()
        proc = spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:  # the guest did not get there in time
            return None
        finally:
            stop(proc, grace=2.0)
        elapsed = time.monotonic() - start
        return elapsed if proc.returncode == PROBE_EXIT_STATUS else None
