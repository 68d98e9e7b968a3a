"""`golden cluster upgrade` and `golden cluster reboot --rolling`: a running cluster changed one node at a time,
with no request lost. For each node, in `order`'s order: drained from every load balancer's pool that has it
(HAProxy's runtime API, until its connections end), the floating address moved off it first when it holds one
(keepalived stopped there: the peer takes the address at once), changed, waited for (first boot done, health
checks passing, Galera Synced: the agent's facts), then put back in service and seen UP.

Before anything, every node must be healthy. A node whose change or health check fails stops the whole run: it
stays out of its pools (back on its previous disk for `--image`), the nodes after it are not touched, and the
error names the node and the check."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..apply import haproxy_runtime as runtime
from ..apply.cluster import TransportFactory, cluster_plan
from ..apply.status import VIRTUAL_ADDRESS_CHECK, HostStatus, health_problems, holds_virtual_address
from ..apply.transport import SSHOptions, SSHTransport
from ..core.errors import GoldenError, InputError
from .changes import ApplyChange, Change, ImageChange, RebootChange, Replacer
from .hosts import DEFAULT_WAITS, Hosts, Waits, wait_for
from .order import Node, nodes, order
from .platform import load_images, parse_platform, profile_name, replacer_for

Progress = Callable[[str], None]


class UpgradeStopped(GoldenError):
    """The rolling change stopped at a node (exit status 1): the node and the failed check, in one line."""


@dataclass
class NodeResult:
    name: str
    outcome: str  # "changed", "nothing to do", "skipped: ..."
    seconds: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        times = ", ".join(f"{phase} {s:.0f}s" for phase, s in self.seconds.items())
        return f"{self.name}: {self.outcome}" + (f" ({times})" if times else "")


class Rolling:
    """One rolling change over the nodes of a cluster."""

    def __init__(self, hosts: Hosts, found: Sequence[Node], change: Change, *, waits: Waits = DEFAULT_WAITS,
                 progress: Progress = print) -> None:
        self.hosts, self.nodes, self.change, self.waits, self.progress = hosts, list(found), change, waits, progress
        self.results: list[NodeResult] = []

    @staticmethod
    def problems(status: HostStatus) -> list[str]:
        """What keeps a node from serving, from its facts (an unreachable node's one line); the floating address
        held by a peer is no fault."""
        if status.error:
            return [f"unreachable: {status.error}"]
        return health_problems(status.facts, skip=(VIRTUAL_ADDRESS_CHECK,))

    def healthy(self, node: Node) -> list[str] | None:
        """None when the node is healthy; else its problems."""
        return self.problems(self.hosts.facts(node.name)) or None

    def preflight(self) -> set[str]:
        """Every node healthy, every keepalived group with one holder; the load balancers holding an address."""
        bad, holders = [], set()
        for node in self.nodes:
            status = self.hosts.facts(node.name)
            problems = self.problems(status)
            if problems:
                bad.append(f"{node.name} ({problems[0]})")
            if node.keepalived and holds_virtual_address(status.facts):
                holders.add(node.name)
        if bad:
            raise UpgradeStopped(f"not every node is healthy before the {self.change.name}: {'; '.join(bad)}",
                                 hint="golden cluster status shows each; repair them first")
        if any(n.keepalived for n in self.nodes) and not holders:
            raise UpgradeStopped("no load balancer holds the floating address", hint="look at keepalived on them")
        return holders

    def run(self) -> list[NodeResult]:
        """Every node in turn; UpgradeStopped at the first that fails."""
        holders = self.preflight()
        try:
            for node in order(self.nodes, holders):
                self.results.append(self.one(node, holders))
        finally:
            self.hosts.close()
        return self.results

    def _timed(self, result: NodeResult, phase: str, action: Callable[[], object]) -> None:
        started = time.monotonic()
        action()
        result.seconds[phase] = time.monotonic() - started

    def one(self, node: Node, holders: set[str]) -> NodeResult:
        name, what = node.name, self.change.name
        self.progress(f"{name}: checking")
        reason = self.change.reason(node)
        if reason is None:
            self.progress(f"{name}: nothing to do")
            if self.left_out(node):  # an earlier run stopped at it; it is healthy now (preflight)
                self.progress(f"{name}: out of its pools since an earlier run: putting it back")
                self.put_back(node)
                return NodeResult(name, "nothing to do, put back in service")
            return NodeResult(name, "nothing to do")
        if not node.standin and not self.change.in_place:
            self.progress(f"{name}: skipped: it needs a {what} ({reason}) but no other node stands in for it")
            return NodeResult(name, f"skipped: needs a {what} ({reason}), no stand-in: do it in a maintenance window")
        self.progress(f"{name}: {what}: {reason}")
        result = NodeResult(name, "changed")
        if name in holders:
            self._timed(result, "address", lambda: self.move_address(node))
            holders.discard(name)
        self._timed(result, "drain", lambda: self.drain(node))
        try:
            self._timed(result, what, lambda: self.change.run(node))
        except GoldenError as exc:
            raise UpgradeStopped(f"{name}: {what} failed: {exc.message.splitlines()[0]}; it stays out of its pools",
                                 hint="repair it, then run the command again") from None
        self._timed(result, "health", lambda: self.wait_healthy(node))
        self._timed(result, "back", lambda: self.put_back(node))
        self.progress(f"{name}: back in service")
        return result

    def move_address(self, node: Node) -> None:
        """The floating address moved off this load balancer on purpose: its keepalived stopped (it leaves the
        address at once, the peer takes it), bounded; on a timeout keepalived is started again and the run stops."""
        self.progress(f"{node.name}: moving the floating address to its peer (keepalived stopped here)")
        peers = [n for n in self.nodes if n.keepalived and n.virtual_address == node.virtual_address
                 and n.name != node.name]
        self.hosts.run(node.name, ["systemctl", "stop", "keepalived"])

        def moved() -> str | None:
            for peer in peers:
                if holds_virtual_address(self.hosts.facts(peer.name).facts):
                    return peer.name
            return None

        try:
            peer = wait_for(f"{node.name}: the floating address on a peer", moved, self.waits.address,
                            self.waits.poll)
        except GoldenError as exc:
            self.hosts.run(node.name, ["systemctl", "start", "keepalived"], check=False)
            raise UpgradeStopped(f"{node.name}: address move failed: {exc.message}; keepalived started again there",
                                 hint="look at keepalived on the peers") from None
        self.progress(f"{node.name}: the floating address is on {peer}")

    def _each_pool(self, node: Node, action: Callable[..., float], timeout: float, failed: str, done: str) -> None:
        """action (runtime.drain or runtime.enable) on every pool of the node, bounded; UpgradeStopped naming the
        load balancer when one fails."""
        for pool in node.pools:
            try:
                took = action(self.hosts.runtime(pool.lb), pool.backend, pool.server, timeout=timeout,
                              poll=self.waits.runtime_poll)
            except GoldenError as exc:
                raise UpgradeStopped(f"{node.name}: {failed} on {pool.lb}: {exc.message}") from None
            self.progress(f"{node.name}: " + done.format(pool=pool, took=took))

    def drain(self, node: Node) -> None:
        if node.pools:
            self.progress(f"{node.name}: draining from {', '.join(str(p) for p in node.pools)}")
        self._each_pool(node, runtime.drain, self.waits.drain, "drain failed", "drained from {pool} in {took:.1f}s")

    def wait_healthy(self, node: Node) -> None:
        """First boot done and every health check passing (bounded); on a failure the change is undone where it
        can be and the run stops with the node out of its pools."""
        self.progress(f"{node.name}: waiting for first boot and health checks")
        if node.keepalived:  # after a converge or a boot, keepalived runs again (nopreempt: as BACKUP)
            try:
                self.hosts.run(node.name, ["systemctl", "start", "keepalived"])
            except GoldenError:
                pass  # a node not answering yet: the health wait below says so
        last: list[str] = []

        def ready() -> bool | None:
            problems = self.healthy(node)
            if problems:
                last[:] = problems
                return None
            return True

        try:
            wait_for(f"{node.name}: healthy", ready, self.waits.health, self.waits.poll)
        except GoldenError as exc:
            failed = "; ".join(last) or exc.message
            undone = ""
            if self.change.name == "image":
                self.progress(f"{node.name}: health check failed ({failed}): back on its previous image")
                self.change.undo(node)
                undone = ", back on its previous image"
            raise UpgradeStopped(f"{node.name}: health check failed after the {self.change.name}: {failed} "
                                 f"(after {self.waits.health:.0f}s); it stays out of its pools{undone}",
                                 hint="repair the node, then run the command again") from None

    def left_out(self, node: Node) -> bool:
        """Whether any pool has the node in maintenance or draining."""
        return any(runtime.state(self.hosts.runtime(p.lb), p.backend, p.server).status.startswith(("MAINT", "DRAIN"))
                   for p in node.pools)

    def put_back(self, node: Node) -> None:
        self._each_pool(node, runtime.enable, self.waits.up, "not back in service", "UP in {pool} after {took:.1f}s")


def summary(results: Sequence[NodeResult], what: str) -> list[str]:
    """One line per node, then the count."""
    changed = sum(r.outcome == "changed" for r in results)
    skipped = [r.name for r in results if r.outcome.startswith("skipped")]
    return [r.line() for r in results] + [
        f"rolling {what}: {changed} of {len(results)} node(s) changed"
        + (f"; skipped (no stand-in): {', '.join(skipped)}" if skipped else "")]


def rolling_cluster(cluster_file: Path, inventory_file: Path, mode: str, *, out_dir: Path, options: SSHOptions,
                    images: Sequence[Path] = (), replacer: Replacer | None = None,
                    factory: TransportFactory = SSHTransport, waits: Waits = DEFAULT_WAITS,
                    progress: Progress = print) -> list[NodeResult]:
    """The rolling change `mode` ("apply", "reboot" or "image") of the cluster's nodes. Input errors raise before
    any host is asked (for `--image`: the images, the inventory's platform section, then every server on the
    platform); `--apply` renders the cluster into out_dir first, as `golden cluster apply` does. `replacer`
    stands in for the inventory's platform (tests, other platforms from Python)."""
    if mode == "image" and not images:
        raise InputError("--image: no image given")
    inventory, plans = cluster_plan(cluster_file, inventory_file, out_dir, check=mode != "apply")
    hosts = Hosts(inventory, options, factory, {p.name: p.profile for p in plans})
    change: Change
    if mode == "apply":
        change = ApplyChange(hosts, {p.name: p for p in plans}, cluster_file.parent, progress)
    elif mode == "reboot":
        change = RebootChange(hosts, waits)
    else:
        artifacts = load_images(images, {p.name: p.profile for p in plans})
        if replacer is None:
            needed = [p.name for p in plans if profile_name(p.profile) in artifacts]
            replacer = replacer_for(parse_platform(inventory, needed), waits.boot, waits.poll)
        replacer.check()
        change = ImageChange(hosts, replacer, artifacts, waits)
    return Rolling(hosts, nodes(plans), change, waits=waits, progress=progress).run()
