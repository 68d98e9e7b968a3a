"""Two baked systems compared file by file: type, mode, owner and group, content (sha256) or link target, for
every path of both trees (the ESP aside, see offline_disk). Users and groups, sudoers, enabled units (the
.wants symlinks), sysctls, apt sources, locale and time zone are files: each difference names its path and
the area it belongs to. ALLOWED is the one allow-list: each entry a pattern (fnmatch: `*` crosses `/`), what
may differ there, and why. Anything else is a difference.

    python -m tests.e2e.system_diff NATIVE.qcow2 VM.qcow2   # as root: the comparison alone, on two disks
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

#: What may differ between the native bake and cloud-init's in a VM, and why. `what`: "content" (same type,
#: mode and owner; other bytes), "any" (present in one only, or anything else).
ALLOWED: tuple[tuple[str, str, str], ...] = (
    ("/var/log/*", "any",
     "logs are emptied by both; which log files exist depends on the services a booted system ran"),
    ("/var/cache/debconf/*-old", "any", "debconf's backup of its database, written when a VM's dpkg runs"),
    ("/var/lib/dpkg/status-old", "any", "dpkg's backup, written at each dpkg run"),
    ("/var/cache/ldconfig/aux-cache", "any", "ldconfig's cache of what it scanned, written at boot in a VM"),
    ("/etc/ld.so.cache", "content", "ldconfig's output: same libraries, order of scan may differ"),
    ("*/__pycache__/*", "any", "bytecode compiled by the Python programs a booted system ran (cloud-init)"),
    ("/var/lib/golden/converge.json", "any",
     "the native engine's record of what it converged (the manifest's converge section); cloud-init keeps its "
     "own under /var/lib/cloud, which cleanup.sh removes"),
    ("/etc/hostname", "content",
     "the bake VM's name from its meta-data (golden-PROFILE) against the layer's 'debian'; every clone sets "
     "its own at first boot"),
    ("/etc/hosts", "content", "manage_etc_hosts writes the bake VM's name (see /etc/hostname)"),
)

#: The area each part of the tree belongs to, for the messages (first match wins).
AREAS = (
    ("/etc/passwd*", "users"), ("/etc/shadow*", "users"), ("/etc/group*", "groups"), ("/etc/gshadow*", "groups"),
    ("/etc/sudoers*", "sudoers"), ("/etc/systemd/system/*.wants/*", "enabled units"),
    ("/etc/systemd/*", "units"), ("/lib/systemd/system/*", "units"), ("/etc/sysctl*", "sysctls"),
    ("/usr/lib/sysctl.d/*", "sysctls"), ("/etc/apt/*", "apt sources"), ("/etc/default/locale", "locale"),
    ("/etc/locale.gen", "locale"), ("/usr/lib/locale/*", "locale"), ("/etc/timezone", "time zone"),
    ("/etc/localtime", "time zone"),
)


@dataclass(frozen=True)
class Entry:
    kind: str  # file, dir, link, other
    mode: int
    uid: int
    gid: int
    data: str  # sha256 of a file's bytes, a link's target, "" otherwise

    def show(self) -> str:
        return f"{self.kind} {self.mode:04o} {self.uid}:{self.gid} {self.data[:16]}"


def snapshot(root: Path) -> dict[str, Entry]:
    """Every path under `root` (as /path), without following links or crossing into another tree."""
    out: dict[str, Entry] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = "/" + os.path.relpath(path, root)
            if stat.S_ISLNK(st.st_mode):
                kind, data = "link", os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256()
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):  # noqa: B023 - read at once
                        digest.update(chunk)
                kind, data = "file", digest.hexdigest()
            elif stat.S_ISDIR(st.st_mode):
                kind, data = "dir", ""
            else:
                kind, data = "other", f"{stat.S_IFMT(st.st_mode):o}"
            out[rel] = Entry(kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, data)
    return out


def area(path: str) -> str:
    return next((name for pattern, name in AREAS if fnmatch.fnmatch(path, pattern)), "files")


def allowed(path: str, what: str) -> bool:
    """Whether a difference of kind `what` ("content" or "any") at `path` is on the allow-list."""
    for pattern, may, _ in ALLOWED:
        if fnmatch.fnmatch(path, pattern) and (may == "any" or may == what):
            return True
    return False


def differences(native: dict[str, Entry], vm: dict[str, Entry]) -> list[str]:
    """One line per difference not on the allow-list, naming the path and its area."""
    out = []
    for path in sorted(native.keys() | vm.keys()):
        a, b = native.get(path), vm.get(path)
        if a == b:
            continue
        if a is None or b is None:
            if not allowed(path, "any"):
                out.append(f"{area(path)}: {path} only in the {'VM' if a is None else 'native'} bake")
            continue
        what = "content" if (a.kind, a.mode, a.uid, a.gid) == (b.kind, b.mode, b.uid, b.gid) else "any"
        if not allowed(path, what):
            out.append(f"{area(path)}: {path} native {a.show()} / VM {b.show()}")
    return out


def compare_disks(native_disk: Path, vm_disk: Path, work: Path) -> list[str]:
    """The differences between the systems on two disks (read offline)."""
    from tests.e2e.offline_disk import mounted_disk

    with ExitStack() as stack:
        (work / "native").mkdir(exist_ok=True)
        (work / "vm").mkdir(exist_ok=True)
        a = stack.enter_context(mounted_disk(native_disk, work / "native"))
        b = stack.enter_context(mounted_disk(vm_disk, work / "vm"))
        return differences(snapshot(a), snapshot(b))


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="system-diff-", dir="/var/tmp") as work:
        found = compare_disks(Path(argv[0]), Path(argv[1]), Path(work))
    print("\n".join(found) or "no difference outside the allow-list")
    print(f"{len(found)} differences", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
