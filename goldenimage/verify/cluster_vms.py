"""Several guests on one private Ethernet segment for cluster tests: a second NIC on each VM, linked by
unicast UDP to an `L2Switch` on 127.0.0.1; SSH still goes through each VM's own user-mode NIC.

`boot_cluster` starts the guests, waits for SSH and yields a `ClusterNet`; leaving it (or any error on the
way) stops every guest and then the switch.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ..core.errors import GoldenError
from ..core.log import info
from ..core.ssh_keys import SSHKey
from .l2switch import MAC_PATTERN, MAX_LIFETIME, L2Switch
from .vm import VM

#: The QEMU netdev id of the cluster NIC (the user-mode NIC is n0).
CLUSTER_NETDEV = "cl0"
#: A host name also names the VM's work directory and QEMU's -name: keep it to a plain hostname.
HOST_NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class ClusterHost:
    """One guest: its image, its NoCloud seed, and the MACs its network-config matches NICs by."""

    name: str
    image: Path
    seed: Path
    mac: str  # the NIC on the private segment
    uplink_mac: str | None = None  # the user-mode NIC (DHCP, SSH); None leaves QEMU's default


class ClusterNet:
    """A private segment (an `L2Switch` on 127.0.0.1) and the guests booted onto it; a context manager.

    Leaving it stops every guest, then the switch, even after an error.
    """

    def __init__(
        self,
        key: SSHKey | Path,
        workdir: Path,
        *,
        memory_mib: int = 1024,
        cpus: int = 1,
        status_wait_ok: Sequence[int] = (0,),
        max_lifetime: float = MAX_LIFETIME,
        netdev_options: Sequence[str] = (),
    ) -> None:
        self.key = key
        #: more options of each guest's user-mode NIC (a mirror relay's guestfwd)
        self.netdev_options = tuple(netdev_options)
        self.workdir = Path(workdir)
        self.memory_mib = memory_mib
        self.cpus = cpus
        self.status_wait_ok = tuple(status_wait_ok)
        self.switch = L2Switch(max_lifetime=max_lifetime)
        self.vms: dict[str, VM] = {}
        #: seconds from QEMU's start to SSH, per guest (filled by wait_for_ssh)
        self.ssh_seconds: dict[str, float] = {}
        self._macs: set[str] = set()
        self._stack = ExitStack()

    def __enter__(self) -> ClusterNet:
        self._stack.enter_context(self.switch)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop every guest (newest first), then the switch; safe to call twice."""
        self._stack.close()

    def __getitem__(self, name: str) -> VM:
        return self.vms[name]

    def machine(self, host: ClusterHost) -> VM:
        """The guest for `host`, not started: user-mode NIC first (DHCP, SSH), the cluster NIC second."""
        self._check(host)
        return VM(
            host.image,
            seed=host.seed,
            key=self.key,
            name=host.name,
            workdir=self.workdir / host.name,
            mac=host.uplink_mac,
            extra_args=self.switch.netdev_args(host.mac, CLUSTER_NETDEV),
            memory_mib=self.memory_mib,
            cpus=self.cpus,
            status_wait_ok=self.status_wait_ok,
            netdev_options=self.netdev_options,
        )

    def boot(self, host: ClusterHost) -> VM:
        """Start the guest for `host` (without waiting for it); it is stopped when the ClusterNet closes."""
        if not self.switch.running:
            raise GoldenError("the cluster network is not running", hint="use ClusterNet as a context manager")
        vm = self.machine(host)
        self._stack.enter_context(vm)  # VM.__enter__ stops QEMU itself if starting fails
        self.vms[host.name] = vm
        self._macs.update(m.lower() for m in (host.mac, host.uplink_mac) if m)
        return vm

    def wait_for_ssh(self, timeout: float = 900.0) -> dict[str, float]:
        """Wait until every guest answers SSH, all within `timeout`; seconds from QEMU's start, per guest."""
        deadline = time.monotonic() + timeout
        for name, vm in self.vms.items():
            if name not in self.ssh_seconds:
                # the guests boot in parallel: each wait gets what is left of the common budget
                self.ssh_seconds[name] = vm.wait_for_ssh(timeout=max(deadline - time.monotonic(), 1.0))
        return dict(self.ssh_seconds)

    def _check(self, host: ClusterHost) -> None:
        if not HOST_NAME_PATTERN.match(host.name):
            raise GoldenError(f"{host.name!r} is not a host name", hint="use lower-case letters, digits and -")
        if host.name in self.vms:
            raise GoldenError(f"{host.name}: a guest of that name is already on the cluster network")
        macs = [mac for mac in (host.mac, host.uplink_mac) if mac is not None]
        for mac in macs:
            if not MAC_PATTERN.match(mac):
                raise GoldenError(f"{host.name}: {mac!r} is not a MAC address", hint="write it as 52:54:00:10:00:0b")
        lowered = [mac.lower() for mac in macs]
        # the switch learns where each MAC lives: two NICs with one MAC would steal each other's frames
        taken = self._macs.intersection(lowered) or {m for m in lowered if lowered.count(m) > 1}
        if taken:
            raise GoldenError(f"{host.name}: MAC {', '.join(sorted(taken))} is already in use on the cluster network")


@contextmanager
def boot_cluster(
    hosts: Sequence[ClusterHost],
    key: SSHKey | Path,
    workdir: Path,
    *,
    ssh_timeout: float = 900.0,
    memory_mib: int = 1024,
    cpus: int = 1,
    status_wait_ok: Sequence[int] = (0,),
) -> Iterator[ClusterNet]:
    """Boot `hosts` on one private segment and wait for SSH on all; every guest is stopped on the way out."""
    with ClusterNet(key, workdir, memory_mib=memory_mib, cpus=cpus, status_wait_ok=status_wait_ok) as net:
        for host in hosts:
            net.boot(host)
        times = net.wait_for_ssh(timeout=ssh_timeout)
        info("cluster up: " + ", ".join(f"{name} SSH after {s:.0f}s" for name, s in times.items()))
        yield net
