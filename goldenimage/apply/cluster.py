"""`golden cluster apply`: every host of a cluster file converged over SSH, in parallel, with the settings
`golden cluster render` puts into its seed; a live progress line per host; one failing host stops no other."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..core.errors import GoldenError
from ..core.inert import inert
from ..model.cluster_check import profile_argument
from ..render.cluster import HostPlan, plan, render_cluster
from .apply import HostReport, apply_host
from .inventory import Inventory, load_inventory, match_cluster
from .target import SSHTarget
from .transport import SSHOptions, SSHTransport, Transport

TransportFactory = Callable[[SSHTarget, SSHOptions], Transport]
#: Hosts converged at once by default: SSH sessions are cheap, the hosts do the work.
DEFAULT_PARALLEL = 8
REFRESH_PER_SECOND = 2
#: After Ctrl-C or SIGTERM: how long the hosts get to end their commands and remove their temporary directories
#: (each is asked again every CANCEL_EVERY seconds: one may have started a command as it was asked).
CANCEL_GRACE = 180.0
CANCEL_EVERY = 10.0


class Running:
    """The transports of the hosts being applied, so that an interrupt can reach every one of them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._transports: dict[str, Transport] = {}
        self.cancelled = False

    def add(self, name: str, transport: Transport) -> None:
        with self._lock:
            self._transports[name] = transport
            if self.cancelled:
                transport.cancel()

    def remove(self, name: str) -> None:
        with self._lock:
            self._transports.pop(name, None)

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            transports = list(self._transports.values())
        for transport in transports:
            transport.cancel()


def _interrupt(running: Running, futures: Sequence[Future[HostReport]], grace: float = CANCEL_GRACE,
               every: float = CANCEL_EVERY) -> None:
    """Cancel every host (hosts not started yet never start) and wait, bounded, for the started ones to end their
    commands and remove their temporary directories on the hosts."""
    for future in futures:
        future.cancel()
    waited = 0.0
    while waited < grace:
        running.cancel()
        _, pending = wait(futures, timeout=every)
        if not pending:
            return
        waited += every


class Board:
    """The live display: one row per host with its phase and elapsed time (a plain log when not a terminal)."""

    def __init__(self, names: Sequence[str], console: Console) -> None:
        self.console = console
        self.state: dict[str, str] = {n: "waiting" for n in names}

    def table(self) -> Table:
        table = Table(show_header=True, header_style="bold", box=None)
        table.add_column("host")
        table.add_column("state")
        for name, state in self.state.items():
            style = "red" if state.startswith("FAILED") else "green" if state.startswith(("changed", "would")) \
                else "yellow"
            table.add_row(Text(name), Text(state, style=style))  # Text: a host's error is never markup
        return table

    def set(self, name: str, state: str) -> None:
        state = inert(state)  # what a host reports is input: one line, no control character
        self.state[name] = state
        if not self.console.is_terminal:
            self.console.print(f"{name}: {state}", markup=False, highlight=False)


def _apply_one(host: HostPlan, inventory: Inventory, base_dir: Path, options: SSHOptions, check: bool,
               factory: TransportFactory, board: Board, running: Running) -> HostReport:
    target = inventory.hosts[host.name]
    try:
        transport = factory(target, options)
    except GoldenError as exc:
        report = HostReport(name=host.name, target=str(target), error=exc.message)
    else:
        running.add(host.name, transport)
        try:
            report = apply_host(host.name, profile_argument(host.profile, base_dir), transport, check=check,
                                settings=host.settings, phase=lambda p: board.set(host.name, p + "..."))
        except GoldenError as exc:  # a profile error: this host only
            report = HostReport(name=host.name, target=str(target), error=exc.message)
        finally:
            running.remove(host.name)
            transport.close()
    board.set(host.name, report.summary(check).split(": ", 1)[1] + f" ({report.seconds:.0f}s)")
    return report


def cluster_plan(cluster_file: Path, inventory_file: Path, out_dir: Path, *, check: bool = False
                 ) -> tuple[Inventory, list[HostPlan]]:
    """The inventory and every host's plan (settings with the cluster's secrets). The whole input is checked
    before anything is written: cluster file, secrets, inventory against it; then, unless check, the cluster is
    rendered into out_dir (its secrets.json keeps the generated secrets: the next apply reuses them, and the
    seeds there can boot images of the same cluster)."""
    inventory = load_inventory(inventory_file)
    hosts, _, _ = plan(cluster_file, out_dir)  # nothing written: generated secrets may be new
    match_cluster(inventory, [h.name for h in hosts])
    if not check:
        render_cluster(cluster_file, out_dir)
        hosts, _, _ = plan(cluster_file, out_dir)
    return inventory, hosts


def apply_cluster(
    cluster_file: Path,
    inventory_file: Path,
    *,
    out_dir: Path,
    options: SSHOptions,
    check: bool = False,
    parallel: int = DEFAULT_PARALLEL,
    factory: TransportFactory = SSHTransport,
    console: Console | None = None,
) -> list[HostReport]:
    """Apply every host; the reports in cluster-file order. Input errors (cluster file, inventory) raise
    before any host is touched; a host's failure is in its report."""
    console = console or Console(stderr=True)
    inventory, hosts = cluster_plan(cluster_file, inventory_file, out_dir, check=check)
    board = Board([h.name for h in hosts], console)
    reports: dict[str, HostReport] = {}
    running = Running()
    with Live(board.table(), console=console, refresh_per_second=REFRESH_PER_SECOND,
              get_renderable=board.table, transient=False) if console.is_terminal else _NoLive(), \
            ThreadPoolExecutor(max_workers=max(1, min(parallel, len(hosts)))) as pool:
        futures = {h.name: pool.submit(_apply_one, h, inventory, cluster_file.parent, options, check, factory,
                                       board, running) for h in hosts}
        try:
            for name, future in futures.items():
                try:
                    reports[name] = future.result()
                except Exception as exc:  # a bug in one host's apply must not hide the others' results
                    reports[name] = HostReport(name=name, target=str(inventory.hosts[name]),
                                               error=f"{type(exc).__name__}: {exc}")
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (the CLI turns it into this): stop every host, then go
            _interrupt(running, list(futures.values()))
            raise
    return [reports[h.name] for h in hosts]


class _NoLive:
    def __enter__(self) -> _NoLive:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def cluster_summary(reports: Sequence[HostReport], check: bool = False) -> tuple[list[str], int]:
    """The summary lines and the exit status: 0 when every host converged, 1 when any failed (named)."""
    lines = [line for r in reports for line in r.summary_lines(check)]
    failed = [r.name for r in reports if not r.ok]
    total_changed = sum(r.changed for r in reports)
    total_unchanged = sum(r.unchanged for r in reports)
    verb = "would change" if check else "changed"
    lines.append(f"{len(reports) - len(failed)} of {len(reports)} host(s) ok; {verb}: {total_changed}, "
                 f"unchanged: {total_unchanged}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return lines, 1 if failed else 0
