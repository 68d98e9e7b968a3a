"""The hosts of a rolling change, over SSH and nowhere else: only the inventory's addresses are ever reached. One
shared connection per host for short commands (the runtime API's polls), a fresh one for the agent's facts and
after a reboot; every wait bounded."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ..apply.cluster import TransportFactory
from ..apply.haproxy_runtime import Send, remote_socket
from ..apply.inventory import Inventory
from ..apply.status import HostStatus, ask
from ..apply.transport import SHORT_TIMEOUT, SSHOptions, Transport
from ..core.errors import GoldenError

T = TypeVar("T")
BOOT_ID = "/proc/sys/kernel/random/boot_id"


@dataclass(frozen=True)
class Waits:
    """The bound of every wait, in seconds, and how often each looks."""

    drain: float = 120.0  # a server's connections end
    up: float = 60.0  # a server put back is seen UP by HAProxy's checks
    health: float = 1200.0  # a changed node's first boot done and health checks passing
    boot: float = 900.0  # a rebooted or replaced node answers SSH with a new boot id
    address: float = 60.0  # the floating address moves to the other load balancer
    poll: float = 5.0  # facts and boot id
    runtime_poll: float = 1.0  # the runtime API during a drain


DEFAULT_WAITS = Waits()


class WaitTimeout(GoldenError):
    """A bounded wait ended without what it waited for."""


class Hosts:
    """Commands to the inventory's hosts by name."""

    def __init__(self, inventory: Inventory, options: SSHOptions, factory: TransportFactory,
                 profiles: dict[str, str]) -> None:
        self.inventory = inventory
        self.options = options
        self.factory = factory
        self.profiles = profiles
        self._open: dict[str, Transport] = {}

    def transport(self, name: str) -> Transport:
        """A new transport to the host (the caller closes it)."""
        return self.factory(self.inventory.hosts[name], self.options)

    def run(self, name: str, argv: list[str], *, timeout: float = SHORT_TIMEOUT, check: bool = True) -> str:
        """argv as root on the host, over its shared connection; its standard output."""
        if name not in self._open:
            self._open[name] = self.transport(name)
        return self._open[name].run(argv, timeout=timeout, check=check).stdout

    def forget(self, name: str) -> None:
        """Drop the host's shared connection (it reboots, or its disk is replaced)."""
        transport = self._open.pop(name, None)
        if transport is not None:
            transport.close()

    def close(self) -> None:
        for name in list(self._open):
            self.forget(name)

    def runtime(self, lb: str) -> Send:
        """HAProxy's runtime API on load balancer lb."""
        return remote_socket(lambda argv: self.run(lb, argv, timeout=30))

    def facts(self, name: str) -> HostStatus:
        """The host's facts from the agent (shipped for the call); an unreachable host is the status's error."""
        return ask(name, self.profiles[name], self.transport(name))

    def boot_id(self, name: str) -> str:
        return self.run(name, ["cat", BOOT_ID]).strip()


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, poll: float) -> T:
    """probe() every `poll` seconds until it gives something other than None (a GoldenError counts as not yet:
    a host that reboots refuses SSH for a while); WaitTimeout naming what and the last error after `timeout`."""
    started = time.monotonic()
    last = ""
    while True:
        try:
            found = probe()
        except GoldenError as exc:
            found, last = None, exc.message.splitlines()[0][:160]
        if found is not None:
            return found
        if time.monotonic() - started > timeout:
            raise WaitTimeout(f"{what}: not after {timeout:.0f}s" + (f" (last: {last})" if last else ""))
        time.sleep(poll)
