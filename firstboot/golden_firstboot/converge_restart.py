"""On a live host (`golden apply`): after a converge, reload or restart the services whose configuration it
changed, and only those. A service is affected by a changed file when the file is one of its drop-ins
(/etc/systemd/system/UNIT.d/), a file its package ships, or a new file in a directory its package owns (dpkg;
of several owners, the one the path names: /etc/apache2/... is apache2's, not php8.2-fpm's, which ships a
snippet there), and only services the cloud-config enables are ever touched (never the whole of systemd
because /etc/sysctl.d changed)."""

from __future__ import annotations

import os
import re
import shlex
from typing import Any

#: Directories too general to say whose configuration a file is.
TOO_GENERAL = {"/", "/etc", "/usr", "/usr/lib", "/usr/share", "/usr/local", "/usr/local/lib", "/usr/local/sbin",
               "/usr/local/bin", "/lib", "/var", "/var/lib", "/opt", "/srv", "/home", "/root"}
UNIT_DIRS = ("/etc/systemd/", "/lib/systemd/", "/usr/lib/systemd/")
DROP_IN = re.compile(r"^/etc/systemd/system/([^/]+)\.d/[^/]+\.conf$")
UNIT_FILE = re.compile(r"^(?:/usr)?/lib/systemd/system/([^/@]+\.service)$")
#: The agent's own run-once units: enabled, never started or restarted by a converge (that would run first
#: boot without the host's settings; `golden apply` runs the agent itself).
AGENT_UNITS = ("golden-firstboot.service", "golden-firstboot-early.service")


UNIT_TYPES = (".service", ".socket", ".timer", ".target", ".path", ".mount")


def unit_name(name: str) -> str:
    """systemctl's reading of a name: `php8.2-fpm` is php8.2-fpm.service."""
    return name if name.endswith(UNIT_TYPES) else name + ".service"


def managed_services(runcmd: list[Any]) -> list[str]:
    """The units the cloud-config enables (`systemctl enable UNIT...` lines), the agent's own left out."""
    units: list[str] = []
    for entry in runcmd:
        words = list(map(str, entry)) if isinstance(entry, list) else shlex.split(str(entry))
        if len(words) > 2 and words[:2] == ["systemctl", "enable"]:
            units += [unit_name(w) for w in words[2:] if not w.startswith("-") and unit_name(w) not in AGENT_UNITS]
    return units


class Owners:
    """Which packages a changed path belongs to, and which units a package ships (dpkg, asked once each)."""

    def __init__(self, host: Any) -> None:
        self.host = host
        self._owners: dict[str, list[str]] = {}
        self._units: dict[str, list[str]] = {}

    def owners(self, path: str) -> list[str]:
        """The packages dpkg lists for path itself (a file or a directory they ship); [] when none."""
        if path not in self._owners:
            result = self.host.run(["dpkg-query", "-S", path], check=False)
            found: list[str] = []
            if result.returncode == 0:
                for line in result.stdout.splitlines():
                    names, _, owned = line.rpartition(": ")
                    if owned.strip() == path:
                        found += [n.strip().split(":")[0] for n in names.split(",") if n.strip()]
            self._owners[path] = found
        return self._owners[path]

    def packages(self, path: str) -> list[str]:
        """Whose configuration path is: the packages shipping the file itself (a conffile edited), else those
        owning its nearest owned directory ([] when none, or only a too general one). Several packages may ship
        files into one directory (php8.2-fpm ships its Apache snippet into /etc/apache2/conf-available): when
        some of them are named by a component of the path (apache2 in /etc/apache2/...), only those."""
        found = self.owners(path)
        directory = os.path.dirname(path)
        while not found and directory not in TOO_GENERAL:
            found = self.owners(directory)
            directory = os.path.dirname(directory)
        parts = path.split("/")
        named = [p for p in found if p in parts]
        return named or found

    def units(self, package: str) -> list[str]:
        if package not in self._units:
            result = self.host.run(["dpkg-query", "-L", package], check=False)
            self._units[package] = [m.group(1) for m in map(UNIT_FILE.match, result.stdout.splitlines()) if m]
        return self._units[package]


def affected(owners: Owners, path: str, managed: list[str]) -> list[str]:
    """The managed units a change to path concerns."""
    drop_in = DROP_IN.match(path)
    if drop_in:
        unit = drop_in.group(1)
        return [unit] if unit in managed else []
    if path.startswith(UNIT_DIRS):
        return []  # a unit file of its own: daemon-reload, and its next start uses it
    found: list[str] = []
    for package in owners.packages(path):
        found += [u for u in owners.units(package) if u in managed and u not in found]
    return found


def restart_changed(host: Any, report: Any, paths: list[str], runcmd: list[Any]) -> list[str]:
    """Reload (or restart, for units without reload) each running managed unit whose configuration changed;
    the units it reloaded. A live host only, never in check mode."""
    if not getattr(host, "live", False) or report.check or not paths:
        return []
    if any(p.startswith(UNIT_DIRS) for p in paths):
        host.systemctl("daemon-reload")
    managed = managed_services(runcmd)
    owners = Owners(host)
    because: dict[str, str] = {}
    for path in paths:
        for unit in affected(owners, path, managed):
            because.setdefault(unit, path)
    done = []
    for unit, path in because.items():
        if host.systemctl("is-active", unit, check=False).stdout.strip() != "active":
            continue  # a stopped unit reads its configuration when it starts
        host.systemctl("reload-or-restart", unit)
        report.note(f"reloaded {unit} ({path} changed)")
        done.append(unit)
    return done
