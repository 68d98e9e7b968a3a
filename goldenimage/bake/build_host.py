"""What this build host has and lacks for a bake and a verify (`golden doctor` prints it), each missing piece
with the command that fixes it. Read-only: it installs nothing and writes nothing but the accelerator's
cached verdict."""

from __future__ import annotations

import lzma
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from ..core.paths import cache_dir, images_dir
from ..core.run import INSTALL_HINTS, run

#: every request to a mirror is one attempt, bounded: doctor must answer in seconds, network or not
MIRROR_TIMEOUT = 4.0
OVMF_DIR = Path("/usr/share/OVMF")
#: below this, a bake (package layer, staging tree, raw disk) is likely to run out of room
MIN_FREE_GIB = 15


@dataclass(frozen=True)
class Check:
    """One line of the report: what, what was found, and the fix when something is missing."""

    what: str
    found: str
    ok: bool = True
    fix: str = ""
    #: False for what only some releases or targets need (a mirror): reported, but `doctor` still exits 0
    blocking: bool = True


def diagnose(network: bool = True) -> list[Check]:
    """Every check, the mirror ones side by side (each bounded by MIRROR_TIMEOUT)."""
    local: list[Callable[[], Check | list[Check]]] = [host, accelerator, qemu, ovmf, packer, mmdebstrap,
                                                       cloud_init, lambda: space("cache", cache_dir()),
                                                       lambda: space("images", images_dir())]
    with ThreadPoolExecutor(max_workers=12) as pool:
        futures = [pool.submit(check) for check in [*local, *(mirror_checks() if network else [])]]
        checks: list[Check] = []
        for future in futures:
            result = future.result()
            checks += result if isinstance(result, list) else [result]
    return checks


def host() -> list[Check]:
    cores = os.cpu_count() or 0
    mem = _meminfo()
    total, available = mem.get("MemTotal", 0) / 2**20, mem.get("MemAvailable", 0) / 2**20
    return [
        Check("cores", f"{cores}" + ("" if cores >= 2 else " (a bake and two verify clones want 2 or more)"),
              cores >= 2),
        Check("memory", f"{total:.1f} GiB, {available:.1f} GiB available", available >= 3,
              "" if available >= 3 else "free memory: verify boots two 1 GiB guests, the HA drill six"),
    ]


def accelerator() -> Check:
    from ..core.errors import GoldenError
    from .accel import verdict

    try:
        chosen = verdict()
    except GoldenError as exc:
        return Check("accelerator", exc.message, False, exc.hint or "")
    fix = ""
    if chosen.accel == "tcg" and chosen.source == "probe" and "no Linux kernel" in chosen.reason:
        fix = "make image PROFILE=web (its package layer gives the probe a kernel)"
    return Check("accelerator", chosen.line().removeprefix("accelerator "), True, fix)


def qemu() -> Check:
    return _tool("qemu", "qemu-system-x86_64", ["--version"], package="qemu-system-x86")


def packer() -> Check:
    check = _tool("packer", "packer", ["version"], package="packer")
    if not check.ok:
        return check
    match = re.search(r"(\d+)\.(\d+)", check.found)
    init = bool(match) and (int(match[1]), int(match[2])) >= (1, 7)  # type: ignore[index]
    return Check("packer", f"{check.found}; `packer init` {'applies' if init else 'does not exist (before 1.7)'}")


def mmdebstrap() -> Check:
    return _tool("mmdebstrap", "mmdebstrap", ["--version"], package="mmdebstrap")


def cloud_init() -> Check:
    return _tool("cloud-init", "cloud-init", ["--version"], package="cloud-init")


def ovmf() -> Check:
    need = {"UEFI": ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
            "Secure Boot (Microsoft keys enrolled)": ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd")}
    have = [name for name, files in need.items() if all((OVMF_DIR / f).is_file() for f in files)]
    if len(have) == len(need):
        return Check("OVMF", f"{OVMF_DIR}: " + ", ".join(have))
    return Check("OVMF", f"{OVMF_DIR}: " + (", ".join(have) or "missing"), False, "apt-get install ovmf")


def space(what: str, path: Path) -> Check:
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(existing).free / 2**30
    ok = free >= MIN_FREE_GIB
    return Check(f"free space ({what})", f"{free:.0f} GiB free under {path}", ok,
                 "" if ok else f"free {MIN_FREE_GIB} GiB or more there, or point GOLDEN_"
                                f"{'CACHE' if what == 'cache' else 'IMAGES'}_DIR elsewhere")


def mirror_checks() -> list[Callable[[], Check]]:
    """One check per release: its suites' Release files answer, and its security pool holds the kernel its
    index lists (a pool that answers 404 for listed files stopped Debian 11 bakes here)."""
    from ..model.releases import matrix

    return [lambda r=release: replace(_mirror(r), blocking=False) for release in matrix()]  # type: ignore[misc]


def _mirror(release) -> Check:  # type: ignore[no-untyped-def]
    what = f"mirror Debian {release.number} ({release.codename})"
    mirror = os.environ.get("GOLDEN_MIRROR") or release.mirror
    security = os.environ.get("GOLDEN_SECURITY_MIRROR") or release.security_mirror
    env = "GOLDEN_MIRROR"
    for url in [f"{mirror}/dists/{s}/Release" for s in release.suites]:
        error = _head(url)
        if error:
            return Check(what, f"{_redact(url)}: {error}", False,
                         f"set {env} to a mirror that has {release.codename} (a local mirror or snapshot.debian.org)")
    if not release.security_suite:
        return Check(what, f"{_redact(mirror)}: {', '.join(release.suites)}")
    index = f"{security}/dists/{release.security_suite}/main/binary-amd64/Packages.xz"
    kernel_file, error = _kernel_in_index(index, release.kernel("cloud"))
    if error:
        return Check(what, f"{_redact(index)}: {error}", False,
                     "set GOLDEN_SECURITY_MIRROR to a security mirror that has it")
    if kernel_file is None:
        return Check(what, f"{_redact(mirror)}: {', '.join(release.suites)}; {release.security_suite} (no kernel "
                           "update listed)")
    error = _head(f"{security}/{kernel_file}")
    if error:
        return Check(what, f"{release.security_suite} lists {kernel_file.rsplit('/', 1)[-1]} but its pool "
                           f"answers {error}", False,
                     "set GOLDEN_SECURITY_MIRROR to a security mirror whose pool is complete")
    return Check(what, f"{_redact(mirror)}: {', '.join(release.suites)}, {release.security_suite} (pool complete)")


def _head(url: str) -> str:
    """'' when the URL answers 200 to a HEAD, else why not (one short line)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=MIRROR_TIMEOUT):
            return ""
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"unreachable ({reason})"


def _kernel_in_index(index: str, meta: str) -> tuple[str | None, str]:
    """The pool path of the newest cloud kernel package the security index lists, and an error text."""
    try:
        with urllib.request.urlopen(index, timeout=MIRROR_TIMEOUT) as response:
            data = lzma.decompress(response.read(64 * 2**20))
    except urllib.error.HTTPError as exc:
        return None, f"{exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError, lzma.LZMAError) as exc:
        return None, f"unreadable ({getattr(exc, 'reason', exc)})"
    flavour = meta.removeprefix("linux-image-").removesuffix("-amd64")  # cloud
    newest: tuple[str, str] | None = None
    for stanza in data.decode(errors="replace").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " ")
        name = fields.get("Package", "")
        if name.startswith("linux-image-") and name.endswith(f"-{flavour}-amd64") and "Filename" in fields:
            candidate = (fields.get("Version", ""), fields["Filename"])
            newest = max(newest, candidate) if newest else candidate
    return (newest[1] if newest else None), ""


def _tool(what: str, command: str, version_args: list[str], package: str = "") -> Check:
    """The tool's version: dpkg's record of its Debian package when it comes from one (milliseconds, where
    `cloud-init --version` starts a Python and took 5 s on a loaded host), else what the tool prints."""
    if shutil.which(command) is None:
        return Check(what, "missing", False, INSTALL_HINTS.get(command, f"apt-get install {command}"))
    if package and shutil.which("dpkg-query"):
        proc = run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev} ${Version}", package], check=False, timeout=20)
        status, _, version = (proc.stdout or "").partition(" ")
        if proc.returncode == 0 and status.startswith("ii") and version.strip():
            return Check(what, f"{package} {version.strip()} (Debian package)")
    proc = run([command, *version_args], check=False, timeout=20)
    text = (proc.stdout or proc.stderr or "").strip().splitlines()
    return Check(what, text[0].strip() if text else "installed (no version printed)", proc.returncode == 0)


def _meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            values[name] = int(rest.split()[0]) if rest.split() else 0
    except (OSError, ValueError):
        pass
    return values


def _redact(url: str) -> str:
    return re.sub(r"//[^/@\s]*@", "//***@", url)
