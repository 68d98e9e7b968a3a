"""Run `packer build -machine-readable` with live progress; on failure, Packer's error and the guest's
serial console tail; on Ctrl-C or any error, Packer and its QEMU are stopped (their process group)."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from rich.markup import escape

from ..core.errors import GoldenError
from ..core.inert import inert
from ..core.log import console, info
from ..core.run import require, spawn, stop
from .kernel_watch import KernelWatch, group_cpu_seconds
from .packer_cli import init, packer_env, parse_machine_line

TAIL_LINES = 40
#: A bake that has not finished by then is stuck (TCG bakes here take minutes, not hours).
BUILD_DEADLINE = 3 * 3600


def _reader(stream, lines: queue.Queue[str | None]) -> None:  # type: ignore[no-untyped-def]
    for line in stream:
        lines.put(line)
    lines.put(None)


def serial_tail(path: Path | None, n: int = TAIL_LINES) -> str:
    """The last n lines of a serial console log, without terminal control noise."""
    if path is None or not path.exists():
        return ""
    text = path.read_bytes().decode("utf-8", "replace").replace("\r", "")
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-n:])


class KvmHang(GoldenError):
    """Packer's guest hung under KVM before its kernel printed (kernel_watch); the build was stopped."""


def packer_build(template: Path, var_file: Path, *, serial_log: Path | None = None,
                 title: str = "packer build", env: dict[str, str] | None = None, watch_kvm: bool = False,
                 more_var_files: Sequence[Path] = ()) -> None:
    """Run the build in the template's directory; raise GoldenError with the causes when it fails, KvmHang
    when `watch_kvm` and its guest hangs under KVM before the kernel (the caller runs it again under TCG).
    `more_var_files` (in the template's directory too) are read after `var_file`: their values win."""
    require("packer", purpose="to bake images")
    init(template)
    var_files = [f"-var-file={path.name}" for path in (var_file, *more_var_files)]
    argv = ["packer", "build", "-machine-readable", "-color=false", *var_files, template.name]
    proc = spawn(argv, cwd=template.parent, env=packer_env(env))
    lines: queue.Queue[str | None] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    start = time.monotonic()
    current = "starting"
    errors: list[str] = []
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    watch = KernelWatch(serial_log, lambda: group_cpu_seconds(proc.pid)) if watch_kvm and serial_log else None
    try:
        with console.status(f"{title}: {current}") as status:
            while True:
                try:
                    raw = lines.get(timeout=1.0)
                except queue.Empty:
                    raw = ""
                if raw is None:
                    break
                if time.monotonic() - start > BUILD_DEADLINE:
                    raise GoldenError(f"{title}: no result after {BUILD_DEADLINE // 60} minutes; stopped")
                stalled = watch.stalled() if watch is not None else None
                if stalled:
                    raise KvmHang(f"{title}: {stalled}")
                parsed = parse_machine_line(raw) if raw else None
                if parsed and parsed.type == "ui" and len(parsed.data) >= 2:
                    kind, text = parsed.data[0], parsed.data[1].rstrip()
                    for line in text.splitlines():
                        tail.append(line)
                    if kind == "say" and text.strip():
                        current = text.strip().removeprefix("==> ").split(": ", 1)[-1]
                        info(f"[dim]{_elapsed(start)}[/dim] {escape(inert(current))}", markup=True)
                    elif kind == "message" and "golden: " in text:
                        # our bake scripts' progress lines
                        for line in text.splitlines():
                            if "golden: " in line:
                                info(f"[dim]{_elapsed(start)}[/dim] {escape(inert(line.split('golden: ', 1)[1]))}",
                                     markup=True)
                    elif kind == "error":
                        errors.append(text.strip())
                status.update(f"{title}: {escape(current)} [dim]({_elapsed(start)})[/dim]")
        proc.wait()
    except BaseException:
        stop(proc, grace=30)
        raise
    if proc.returncode != 0:
        detail = [ln for text in (errors or tail) for ln in str(text).splitlines()]
        serial = serial_tail(serial_log)
        report = [f"{title} failed (packer exit {proc.returncode}):", *detail]
        if serial:
            report += ["--- guest serial console (last lines) ---", *serial.splitlines()]
        raise GoldenError("\n".join(report), lines=report,
                          hint="rerun with --debug for every command; the bake left nothing in images/")


def _elapsed(start: float) -> str:
    seconds = int(time.monotonic() - start)
    return f"{seconds // 60}:{seconds % 60:02d}"
