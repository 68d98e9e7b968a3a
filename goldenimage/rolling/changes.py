"""What a rolling change does to one node once it is out of its pools: converge it (`--apply`, the converge
`golden cluster apply` runs), reboot it when it needs one (`reboot --rolling`), or boot it on a new disk
(`--image`, through a `Replacer`: the platform's own step). Each says first whether the node needs it at all."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ..apply.apply import apply_host
from ..bake.store import Artifact
from ..core.errors import GoldenError
from ..model.cluster_check import profile_argument
from ..render.cluster import HostPlan
from .hosts import Hosts, Waits, WaitTimeout, wait_for
from .order import Node
from .platform import profile_name

Progress = Callable[[str], None]

#: Why a host needs a reboot: Debian's flag file (update-notifier-common, unattended-upgrades), and needrestart's
#: batch report when it is installed (-r l: list only, restart nothing). Read-only.
NEEDS_REBOOT = """test -e /run/reboot-required && echo reboot-required
if command -v needrestart >/dev/null 2>&1; then needrestart -b -r l 2>/dev/null; fi
exit 0"""
#: The reboot, in two seconds from a transient timer: the SSH command returns before the connection drops.
REBOOT = ["systemd-run", "--on-active=2", "/bin/systemctl", "reboot"]


def reboot_reasons(output: str) -> list[str]:
    """The reasons in NEEDS_REBOOT's output: the flag file, a newer kernel or microcode, services still running
    on replaced libraries (needrestart's KSTA/UCSTA 2 or 3, SVC lines)."""
    reasons, services = [], []
    for line in output.splitlines():
        key, _, value = line.partition(":")
        value = value.strip()
        if line.strip() == "reboot-required":
            reasons.append("/run/reboot-required")
        elif key == "NEEDRESTART-KSTA" and value in ("2", "3"):
            reasons.append("needrestart: a newer kernel")
        elif key == "NEEDRESTART-UCSTA" and value in ("2", "3"):
            reasons.append("needrestart: newer microcode")
        elif key == "NEEDRESTART-SVC" and value:
            services.append(value)
    if services:
        reasons.append(f"needrestart: {len(services)} service(s) on replaced libraries ({', '.join(services[:3])}"
                       + (", ..." if len(services) > 3 else "") + ")")
    return reasons


class Change(Protocol):
    """One kind of change, node by node."""

    #: what it is, in progress lines ("apply", "reboot", "image")
    name: str
    #: whether it may run on a node no other stands in for (a converge keeps the services up; a reboot does not)
    in_place: bool

    def reason(self, node: Node) -> str | None:
        """Why this node changes; None when it needs nothing."""

    def run(self, node: Node) -> None:
        """Change the node (out of its pools); GoldenError when it failed."""

    def undo(self, node: Node) -> None:
        """After a failed health check: put the node back as it was, where that means something."""


def wait_new_boot(hosts: Hosts, node: Node, before: str, waits: Waits) -> None:
    """Until the node answers SSH with another boot id than `before` (bounded by waits.boot)."""
    hosts.forget(node.name)

    def booted() -> str | None:
        try:
            now = hosts.boot_id(node.name)
        except GoldenError:
            hosts.forget(node.name)  # a connection made while it went down: start afresh next time
            raise
        return now if now and now != before else None

    wait_for(f"{node.name}: booted again", booted, waits.boot, waits.poll)


class ApplyChange:
    """`--apply`: the node converged to its profile with its cluster settings, as `golden cluster apply` does."""

    name = "apply"
    in_place = True

    def __init__(self, hosts: Hosts, plans: dict[str, HostPlan], base_dir: Path, progress: Progress) -> None:
        self.hosts, self.plans, self.base_dir, self.progress = hosts, plans, base_dir, progress

    def reason(self, node: Node) -> str | None:
        return "converge to its profile"

    def run(self, node: Node) -> None:
        plan = self.plans[node.name]
        transport = self.hosts.transport(node.name)
        try:
            report = apply_host(node.name, profile_argument(plan.profile, self.base_dir), transport,
                                settings=plan.settings, phase=lambda p: self.progress(f"{node.name}: apply: {p}"))
        finally:
            transport.close()
        if not report.ok:
            raise GoldenError((report.error or "failed").splitlines()[0])
        self.progress(f"{node.name}: apply: changed {report.changed}, unchanged {report.unchanged}")

    def undo(self, node: Node) -> None:
        return None  # a converge has no previous state to go back to: the node stays out of its pools


class RebootChange:
    """`reboot --rolling`: a node that needs a reboot (kernel, microcode, libraries) is rebooted."""

    name = "reboot"
    in_place = False

    def __init__(self, hosts: Hosts, waits: Waits) -> None:
        self.hosts, self.waits = hosts, waits

    def reason(self, node: Node) -> str | None:
        reasons = reboot_reasons(self.hosts.run(node.name, ["sh", "-c", NEEDS_REBOOT], timeout=120))
        return "; ".join(reasons) or None

    def run(self, node: Node) -> None:
        before = self.hosts.boot_id(node.name)
        self.hosts.run(node.name, REBOOT)
        wait_new_boot(self.hosts, node, before, self.waits)

    def undo(self, node: Node) -> None:
        return None


class Replacer(Protocol):
    """The platform's step that boots a node on another image (rolling/platform.py: OpenStack, Proxmox VE).
    `replace` keeps what the node booted before, so that `restore` can boot it again."""

    def check(self) -> None:
        """Every host's server exists on the platform (before anything changes); InputError naming each."""

    def running(self, name: str) -> str | None:
        """The content key of the image the host booted, when the platform knows it."""

    def replace(self, name: str, artifact: Artifact) -> None: ...

    def restore(self, name: str) -> None: ...


class ImageChange:
    """`--image NEW`: the node booted on a disk made from the image for its profile (its seed, hence its
    identity, kept); when it does not come back or fails its health check, booted back on its previous one."""

    name = "image"
    in_place = False

    def __init__(self, hosts: Hosts, replacer: Replacer, images: dict[str, Artifact], waits: Waits) -> None:
        self.hosts, self.replacer, self.images, self.waits = hosts, replacer, images, waits

    def reason(self, node: Node) -> str | None:
        artifact = self.images.get(profile_name(node.profile))
        if artifact is None or self.replacer.running(node.name) == artifact.key:
            return None
        return f"new image {artifact.name}"

    def _boot(self, node: Node, action: Callable[[], None]) -> None:
        try:
            before = self.hosts.boot_id(node.name)
        except GoldenError:
            before = ""
        action()
        wait_new_boot(self.hosts, node, before, self.waits)

    def run(self, node: Node) -> None:
        artifact = self.images[profile_name(node.profile)]
        try:
            self._boot(node, lambda: self.replacer.replace(node.name, artifact))
        except WaitTimeout as exc:  # on the new disk and not answering: put the old one back
            self.undo(node)
            raise GoldenError(f"{exc.message}; back on its previous image") from None

    def undo(self, node: Node) -> None:
        self._boot(node, lambda: self.replacer.restore(node.name))
