"""A fake host transport for rolling changes: a small world of hosts (examples/cluster-ha.yaml's) answering the
commands golden sends them (the agent's facts, HAProxy's runtime API through the load balancer's python3, the boot
id, the reboot, keepalived), every change recorded. A load balancer listed in `real` has its runtime API answered
by a real haproxy's admin socket on this machine, through the same exchange the load balancer would run."""

from __future__ import annotations

import csv
import functools
import io
import json
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from goldenimage.apply.haproxy_runtime import ADMIN_SOCKET, REMOTE_EXCHANGE
from goldenimage.apply.target import SSHTarget
from goldenimage.render.cluster import HostPlan, plan
from goldenimage.rolling.changes import NEEDS_REBOOT, REBOOT

ROOT = Path(__file__).resolve().parents[2]
HA = ROOT / "examples" / "cluster-ha.yaml"
ROLES = {"lb": ["lb"], "web": ["web"], "sql-galera": ["sql-galera"], "nfs": ["nfs"]}


@functools.cache
def ha_plan() -> list[HostPlan]:
    """examples/cluster-ha.yaml's hosts (secrets generated in memory: nothing written)."""
    return plan(HA, Path("/nonexistent"))[0]


@dataclass
class FakeHost:
    name: str
    profile: str
    boot: int = 1
    needs_reboot: bool = True
    problems: list[str] = field(default_factory=list)
    #: the problems it has once it has been changed (rebooted, converged, booted on a new image)
    after_change: list[str] = field(default_factory=list)
    keepalived: bool = False
    image: str = "old"


class World:
    """The hosts of examples/cluster-ha.yaml, lb1 holding the floating address, HAProxy on both load balancers."""

    def __init__(self, real: dict[str, str] | None = None,
                 on_change: Callable[[str], None] | None = None) -> None:
        hosts = ha_plan()
        #: load balancer -> the admin socket of a real haproxy that answers for it
        self.real = real or {}
        #: called with the node's name as it changes (it is out of its pools then)
        self.hosts = {h.name: FakeHost(h.name, h.profile, keepalived=h.profile == "lb") for h in hosts}
        self.on_change = on_change
        self.holder: str | None = "lb1"
        #: what was done to the hosts, in order
        self.events: list[str] = []
        #: the progress lines golden printed
        self.progress: list[str] = []
        #: lb -> (backend, server) -> [status, sessions]
        self.haproxy: dict[str, dict[tuple[str, str], list[Any]]] = {}
        for host in hosts:
            if host.profile == "lb":
                self.haproxy[host.name] = {(b["name"], s["name"]): ["UP", 0]
                                           for b in host.settings["lb"]["backends"] for s in b["servers"]}

    def pools_of(self, server: str) -> list[str]:
        return [f"{lb}:{state[0]}/{state[1]}" for lb, servers in self.haproxy.items()
                for (_, name), state in servers.items() if name == server]

    def changed(self, name: str, what: str) -> None:
        host = self.hosts[name]
        if self.on_change:
            self.on_change(name)
        self.events.append(f"{name} {what} [{' '.join(self.pools_of(name))}]".replace(" []", ""))
        host.boot += 1
        host.needs_reboot = False
        host.problems = list(host.after_change)
        if host.keepalived:
            host.keepalived = True  # enabled: it starts at boot, as BACKUP (nopreempt)
            self.holder = self.holder or name

    def facts(self, name: str) -> dict[str, Any]:
        host = self.hosts[name]
        checks = [{"name": p.split(":")[0], "ok": False, "detail": p.split(": ", 1)[-1]} for p in host.problems]
        if host.profile == "lb":
            checks.append({"name": "virtual address", "ok": self.holder == name, "detail": "10.10.0.5"})
        return {"roles": ROLES[host.profile], "firstboot": {"result": "done", "failed_steps": []}, "checks": checks}

    def runtime(self, lb: str, command: str) -> str:
        servers = self.haproxy[lb]
        if command == "show stat":
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow(["# pxname", "svname", "scur", "qcur", "stot", "status"])
            for (backend, server), state in servers.items():
                writer.writerow([backend, server, state[1], 0, 10, state[0]])
                if state[0] == "DRAIN" and state[1]:
                    state[1] -= 1  # its connections end, one per look
            return out.getvalue()
        words = command.split()  # set server BACKEND/SERVER state STATE
        backend, server = words[2].split("/")
        state = servers[(backend, server)]
        wanted = {"drain": "DRAIN", "maint": "MAINT", "ready": "UP"}[words[4]]
        if wanted == "MAINT" and state[1]:
            raise AssertionError(f"{server} put in maintenance on {lb} with {state[1]} sessions")
        state[0] = "DOWN" if wanted == "UP" and self.hosts[server].problems else wanted
        self.events.append(f"{lb}: {backend}/{server} {words[4]}")
        return ""

    def answer(self, name: str, argv: Sequence[str]) -> str:
        host = self.hosts[name]
        if argv[:2] == ["mktemp", "-d"]:
            return argv[2].replace("XXXXXXXX", "abcdefgh") + "\n"
        if argv[0] == "rm":
            return ""
        if argv[0] == "python3" and argv[1] == "-c":
            assert argv[2] == REMOTE_EXCHANGE and argv[3] == ADMIN_SOCKET
            if name in self.real:  # the exchange itself, run here against the real haproxy's socket
                done = subprocess.run([sys.executable, "-c", argv[2], self.real[name], argv[4]], capture_output=True,
                                      text=True, timeout=30, check=True)
                if argv[4].startswith("set server"):
                    self.events.append(f"{name}: {argv[4].split()[2]} {argv[4].split()[4]}")
                return done.stdout
            return self.runtime(name, argv[4])
        if argv[0] == "python3" and list(argv[2:]) == ["facts", "--json"]:
            return json.dumps(self.facts(name))
        if list(argv) == ["sh", "-c", NEEDS_REBOOT]:
            return "reboot-required\n" if host.needs_reboot else ""
        if argv[0] == "cat" and argv[1].endswith("boot_id"):
            return f"boot-{host.boot}\n"
        if list(argv) == REBOOT:
            self.changed(name, "reboot")
            return ""
        if argv[0] == "systemctl" and argv[2] == "keepalived":
            host.keepalived = argv[1] == "start"
            self.events.append(f"{name}: keepalived {argv[1]}")
            if argv[1] == "stop" and self.holder == name:
                self.holder = next((n for n, h in self.hosts.items() if h.keepalived and n != name), None)
            return ""
        raise AssertionError(f"{name}: unexpected command {argv}")


class FakeTransport:
    def __init__(self, world: World, name: str, target: SSHTarget) -> None:
        self.world, self.name, self.target = world, name, target

    def run(self, argv: Sequence[str], *, root: bool = True, timeout: float = 120, check: bool = True,
            secrets: Iterable[str] = (), cleanup: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(list(argv), 0, self.world.answer(self.name, list(argv)), "")

    def put(self, files: Sequence[Path], remote_dir: str, *, timeout: float = 120) -> None:
        pass

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass


def factory(world: World) -> Any:
    names = {}
    for host in ha_plan():
        names[host.address] = host.name
    return lambda target, options: FakeTransport(world, names[target.host], target)
