"""apt on a live host for the converge engine: one `apt-get update` per converge, dpkg's lock waited for, an
interrupted dpkg finished first."""

from __future__ import annotations

import os

from .converge import Host

#: Seconds apt-get waits for dpkg's lock held by another apt (apt-daily on a freshly booted host).
LOCK_TIMEOUT = 600
# A live host may be running apt-daily or unattended-upgrades: wait for dpkg's lock (apt 1.9.11 and later;
# older apt ignores the option) instead of failing at once.
WAIT_LOCK = ["-o", f"DPkg::Lock::Timeout={LOCK_TIMEOUT}"]
APT_GET = ["apt-get", "-y", "-q", "-o", "Dpkg::Options::=--force-confold"] + WAIT_LOCK


def apt_update(host: Host) -> None:
    """apt-get update on a live host, once per converge (the sources are converged before anything installs)."""
    if not getattr(host, "apt_updated", False):
        host.run(["apt-get", "-q"] + WAIT_LOCK + ["update"])
        host.apt_updated = True  # type: ignore[attr-defined]


def apt_install(host: Host, names: list[str], update: bool) -> None:
    """apt-get install on a live host (after apt-get update when asked)."""
    if update:
        apt_update(host)
    host.run(APT_GET + ["install"] + names)


def dpkg_interrupted(host: Host) -> bool:
    """Whether dpkg stopped midway (its journal in /var/lib/dpkg/updates holds entries)."""
    updates = host.path("/var/lib/dpkg/updates")
    return os.path.isdir(updates) and any(name.isdigit() for name in os.listdir(updates))
