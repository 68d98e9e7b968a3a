"""apt on a live host: `apt-get update` runs when something must be installed or the sources changed since the
engine's last update, never on a converge with every package installed and the same sources."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.unit import firstboot_fake  # noqa: F401  (puts the agent on sys.path)

from golden_firstboot import converge_system  # isort: skip
from golden_firstboot.converge import Host, Report  # isort: skip
from golden_firstboot.system import Result, Runner  # isort: skip

SOURCES = "deb http://deb.debian.org/debian bookworm main\n"


class AptHost(Host):
    """A live host whose files live under a temporary directory; apt-get 'installs' by editing dpkg's status."""

    def __init__(self, root: Path) -> None:
        super().__init__(str(root), Runner(logger=lambda line: None))
        self.live = True
        self.tree = root
        self.commands: list[list[str]] = []

    def path(self, path: str) -> str:
        return str(self.tree / path.lstrip("/"))

    def run(self, argv: list[str], check: bool = True, input: str | None = None) -> Result:
        self.commands.append(list(argv))
        if "install" in argv:
            status = self.tree / "var/lib/dpkg/status"
            names = argv[argv.index("install") + 1:]
            status.write_text(status.read_text() + "".join(f"Package: {n}\nStatus: install ok installed\n\n"
                                                           for n in names))
        if "update" in argv:
            (self.tree / "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages").touch()
        return Result(0)

    def systemctl(self, *args: str, check: bool = True) -> Result:
        return Result(0)

    def updates(self) -> int:
        return sum(1 for c in self.commands if c[0] == "apt-get" and c[-1] == "update")


@pytest.fixture
def host(tmp_path: Path) -> AptHost:
    for rel in ("var/lib/apt/lists", "etc/apt/sources.list.d", "etc/apt/trusted.gpg.d", "var/lib/dpkg/updates"):
        (tmp_path / rel).mkdir(parents=True)
    (tmp_path / "etc/apt/sources.list").write_text(SOURCES)
    (tmp_path / "var/lib/dpkg/status").write_text("Package: openssh-server\nStatus: install ok installed\n\n")
    return AptHost(tmp_path)


@contextmanager
def held(lock: Path, seconds: float = 1.5) -> Iterator[None]:
    """Another process holds `lock` (an fcntl lock, as dpkg and apt take theirs) for `seconds` from entry."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(lock)!r}, os.O_RDWR)\n"
        "fcntl.lockf(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        f"time.sleep({seconds})\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.wait(timeout=30)


def packages(host: AptHost, names: list[str], check: bool = False) -> Report:
    """One converge's packages step as the renderer asks for it (package_update and package_upgrade true)."""
    host.apt_updated = False  # a new converge  # type: ignore[attr-defined]
    report = Report(check=check)
    converge_system.packages(host, report, names, update=True, upgrade=True)
    return report


def test_apt_get_update_runs_only_when_something_is_missing_or_the_sources_changed(host):
    report = packages(host, ["apache2", "openssh-server"])
    assert host.updates() == 1 and ["apache2"] == [c[-1] for c in host.commands if "install" in c]
    assert report.changed == 1

    host.commands = []
    report = packages(host, ["apache2", "openssh-server"])
    assert host.updates() == 0 and report.changed == 0  # everything installed, same sources: nothing fetched
    assert ["apt-get", "-s", "-q", "upgrade"] in host.commands  # upgrades are still looked for, from the lists

    extra = "deb http://deb.debian.org/debian bookworm-backports main\n"
    (host.tree / "etc/apt/sources.list.d/extra.list").write_text(extra)
    host.commands = []
    packages(host, ["apache2"])
    assert host.updates() == 1  # a source added (by hand, or by a converge killed before its update)
    host.commands = []
    packages(host, ["apache2"])
    assert host.updates() == 0


def test_apt_get_update_runs_when_the_host_has_no_package_lists(host):
    (host.tree / "var/lib/dpkg/status").write_text("Package: apache2\nStatus: install ok installed\n\n")
    packages(host, ["apache2"])
    assert host.updates() == 1  # no lists at all (cleaned), although nothing is missing
    for name in (host.tree / "var/lib/apt/lists").iterdir():
        name.unlink()
    host.commands = []
    packages(host, ["apache2"])
    assert host.updates() == 1


def test_check_mode_never_updates(host):
    report = packages(host, ["apache2"], check=True)
    assert host.updates() == 0 and report.changed == 1 and not any("install" in c for c in host.commands)


def test_an_interrupted_dpkg_still_running_is_waited_for_before_dpkg_configure(host, monkeypatch):
    """An apply killed while dpkg worked: the dpkg it started may still hold the lock when the next apply comes
    (dpkg, unlike apt-get, does not wait for it): the converge waits, then finishes what is left."""
    from golden_firstboot import converge_apt

    monkeypatch.setattr(converge_apt, "LOCK_POLL", 0.1)
    lock = host.tree / "var/lib/dpkg/lock-frontend"
    lock.touch()
    (host.tree / "var/lib/dpkg/updates/0001").write_text("Package: mariadb-server\n")
    real_run = host.run

    def run(argv: list[str], check: bool = True, input: str | None = None) -> Result:
        if argv[:2] == ["dpkg", "--configure"]:
            if converge_apt.dpkg_busy(host):  # what dpkg itself does with a held lock
                result = Result(2, "", "dpkg: error: dpkg frontend lock was locked by another process")
                if check:
                    raise AssertionError(result.stderr)
                return result
            (host.tree / "var/lib/dpkg/updates/0001").unlink()
        return real_run(argv, check, input)

    host.run = run  # type: ignore[method-assign]
    with held(lock):
        assert converge_apt.dpkg_busy(host)
        report = packages(host, ["apache2"])
    assert ["dpkg", "--configure", "-a", "--force-confold"] in host.commands
    assert report.lines[0] == "note: dpkg was interrupted: dpkg --configure -a"
    assert not converge_apt.dpkg_busy(host)


def test_apt_get_update_waits_for_the_lists_lock_another_apt_holds(host, monkeypatch):
    """A freshly booted host's apt-daily (or an update a killed apply started) holds /var/lib/apt/lists/lock:
    `apt-get update` fails at once on that lock whatever DPkg::Lock::Timeout says, so the converge waits for it."""
    from golden_firstboot import converge_apt

    monkeypatch.setattr(converge_apt, "LOCK_POLL", 0.1)
    lock = host.tree / "var/lib/apt/lists/lock"
    lock.touch()
    real_run = host.run

    def run(argv: list[str], check: bool = True, input: str | None = None) -> Result:
        if argv[0] == "apt-get" and argv[-1] == "update" and converge_apt.locked(host, (converge_apt.LISTS_LOCK,)):
            # what apt-get update does with a held lists lock
            raise AssertionError("E: Could not get lock /var/lib/apt/lists/lock. It is held by process 510 (apt-get)")
        return real_run(argv, check, input)

    host.run = run  # type: ignore[method-assign]
    with held(lock):
        assert converge_apt.locked(host, (converge_apt.LISTS_LOCK,))
        packages(host, ["apache2"])
    assert host.updates() == 1 and ["apache2"] == [c for c in host.commands if "install" in c][0][-1:]
