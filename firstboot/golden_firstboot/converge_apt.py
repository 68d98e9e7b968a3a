"""apt on a live host for the converge engine: `apt-get update` only when something must be installed or the
sources changed since the engine's last update (at most once per converge), dpkg's and the lists' locks waited
for, an interrupted dpkg finished first."""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from typing import Callable

from .converge_host import Host, load_state, save_state

#: Seconds apt-get waits for dpkg's lock held by another apt (apt-daily on a freshly booted host).
LOCK_TIMEOUT = 600
# A live host may be running apt-daily or unattended-upgrades: wait for dpkg's lock (apt 1.9.11 and later;
# older apt ignores the option) instead of failing at once.
WAIT_LOCK = ["-o", f"DPkg::Lock::Timeout={LOCK_TIMEOUT}"]
APT_GET = ["apt-get", "-y", "-q", "-o", "Dpkg::Options::=--force-confold"] + WAIT_LOCK


#: What apt fetches from: the sources and the keys that sign them (files directly in these directories).
SOURCES = ("/etc/apt/sources.list", "/etc/apt/sources.list.d", "/etc/apt/trusted.gpg.d", "/etc/apt/trusted.gpg")
LISTS = "/var/lib/apt/lists"
#: The lock `apt-get update` takes (and fails on at once when another apt holds it).
LISTS_LOCK = LISTS + "/lock"
#: The converge state's key for the digest of SOURCES at the engine's last successful apt-get update.
STATE_KEY = "apt_sources"


def sources_digest(host: Host) -> str:
    """A digest of every apt source and key file on the host (names and contents)."""
    digest = hashlib.sha256()
    for top in SOURCES:
        path = host.path(top)
        files = [path] if os.path.isfile(path) else \
            sorted(os.path.join(path, n) for n in os.listdir(path)) if os.path.isdir(path) else []
        for name in files:
            if os.path.isfile(name):
                with open(name, "rb") as handle:
                    data = handle.read()
                digest.update(f"{top}/{os.path.basename(name)}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()


def lists_present(host: Host) -> bool:
    """Whether apt has package lists at all (a host whose lists were cleaned has none)."""
    path = host.path(LISTS)
    return os.path.isdir(path) and any("_Packages" in name for name in os.listdir(path))


def lists_current(host: Host) -> bool:
    """Whether the package lists were fetched by the engine from the sources the host has now: no source or key
    changed (by this converge, by hand, or by a converge killed before its update) since its last update."""
    return lists_present(host) and load_state(host).get(STATE_KEY) == sources_digest(host)


def apt_update(host: Host) -> None:
    """apt-get update on a live host, once per converge (the sources are converged before anything installs);
    the sources it read are recorded, so a later converge with nothing to install can skip it."""
    if not getattr(host, "apt_updated", False):
        digest = sources_digest(host)
        # DPkg::Lock::Timeout covers dpkg's lock, not the lists lock `apt-get update` takes, which a boot's
        # apt-daily (or an update a killed apply started) may hold: apt-get would fail at once. Wait for it.
        wait_unlocked(host, (LISTS_LOCK,))
        host.run(["apt-get", "-q"] + WAIT_LOCK + ["update"])
        host.apt_updated = True  # type: ignore[attr-defined]
        state = load_state(host)
        state[STATE_KEY] = digest
        save_state(host, state)


def apt_install(host: Host, names: list[str], update: bool) -> None:
    """apt-get install on a live host (after apt-get update when asked)."""
    if update:
        apt_update(host)
    host.run(APT_GET + ["install"] + names)


#: dpkg's locks (fcntl record locks): the frontend's (apt, dpkg 1.20+) and the database's.
DPKG_LOCKS = ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock")
LOCK_POLL = 5.0


def dpkg_busy(host: Host) -> bool:
    """Whether another process holds one of dpkg's locks (a dpkg or apt still running, e.g. one an apply that
    was killed started: it goes on without the agent)."""
    return locked(host, DPKG_LOCKS)


def locked(host: Host, names: tuple[str, ...]) -> bool:
    """Whether another process holds one of these apt or dpkg locks (fcntl record locks)."""
    for name in names:
        try:
            fd = os.open(host.path(name), os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.lockf(fd, fcntl.LOCK_UN)
        except OSError:
            return True
        finally:
            os.close(fd)
    return False


def wait_dpkg_idle(host: Host, timeout: float = LOCK_TIMEOUT,
                   sleep: Callable[[float], None] = time.sleep) -> bool:
    """Wait (at most timeout seconds) until no process holds dpkg's locks; whether it is free. dpkg itself,
    unlike apt-get, has no lock timeout: `dpkg --configure -a` fails at once while another dpkg runs."""
    return wait_unlocked(host, DPKG_LOCKS, timeout, sleep)


def wait_unlocked(host: Host, names: tuple[str, ...], timeout: float = LOCK_TIMEOUT,
                  sleep: Callable[[float], None] = time.sleep) -> bool:
    """Wait (at most timeout seconds) until no other process holds these locks; whether they are free (when
    not, the command that needs them fails with apt's own message)."""
    deadline = time.monotonic() + timeout
    while locked(host, names):
        if time.monotonic() >= deadline:
            return False
        sleep(LOCK_POLL)
    return True


def dpkg_interrupted(host: Host) -> bool:
    """Whether dpkg stopped midway (its journal in /var/lib/dpkg/updates holds entries)."""
    updates = host.path("/var/lib/dpkg/updates")
    return os.path.isdir(updates) and any(name.isdigit() for name in os.listdir(updates))
