"""The audit tools for a guest that has no network: the host's own OpenSCAP and Lynis on a read-only disk.

Debian 11 ships no OpenSCAP at all, and installing packages would change the system being measured, so
the clone gets a tools disk instead: an ISO 9660 image (Rock Ridge: real names, root-owned, modes kept)
holding the host's `oscap` with every library it loads (down to the host's glibc, run through the bundled
dynamic loader, so it works on any Debian release), the host's Lynis, and the datastream. The guest mounts
it read-only on /run; nothing is installed and nothing is written to its disk but the scan's own work.
The image is cached under the cache directory, keyed by everything in it.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pycdlib

from ..core.errors import GoldenError
from ..core.paths import cache_dir
from ..core.run import run
from . import lynis
from .content import Content

LABEL = "GOLDENAUDIT"
#: Where the guest mounts the tools disk: /run is a tmpfs, so the guest's own disk is not touched.
GUEST_MOUNT = "/run/golden-audit/tools"
LYNIS_SCRIPT = Path("/usr/sbin/lynis")
LYNIS_SHARE = Path("/usr/share/lynis")
LYNIS_ETC = Path("/etc/lynis")
#: Bumped when the layout changes, so that cached images made by older code are not reused.
LAYOUT_VERSION = 1
STALE_AFTER = 7 * 86400.0


@dataclass(frozen=True)
class ToolsDisk:
    """The tools image for one datastream, and the paths the guest sees once it is mounted."""

    iso: Path
    datastream_name: str

    @property
    def oscap_argv(self) -> list[str]:
        """How the guest runs the bundled oscap: the bundled loader with the bundled libraries only."""
        lib = f"{GUEST_MOUNT}/oscap/lib"
        return [f"{lib}/ld-linux-x86-64.so.2", "--library-path", lib, f"{GUEST_MOUNT}/oscap/bin/oscap"]

    @property
    def lynis_dir(self) -> str:
        return f"{GUEST_MOUNT}/lynis"

    @property
    def datastream(self) -> str:
        return f"{GUEST_MOUNT}/content/{self.datastream_name}"


def _oscap_files() -> dict[str, Path]:
    """The host's oscap, its libraries (ldd) and libopenscap's auto-loaded plugins."""
    oscap = shutil.which("oscap")
    if oscap is None:
        raise GoldenError("oscap is required to audit images", hint="apt-get install openscap-scanner")
    files = {"oscap/bin/oscap": Path(oscap).resolve()}
    out = run(["ldd", oscap]).stdout
    libs = [Path(p) for p in re.findall(r"=>\s+(/\S+)", out)]
    libs += [Path(p) for p in re.findall(r"^\s*(/\S*ld-linux\S*)", out, re.M)]
    for lib in libs:
        files[f"oscap/lib/{lib.name}"] = lib.resolve()
        if lib.name.startswith("libopenscap.so."):
            for plugin in lib.parent.glob("libopenscap_*.so.*"):
                if re.fullmatch(r"libopenscap_\w+\.so\.\d+", plugin.name):
                    files[f"oscap/lib/{plugin.name}"] = plugin.resolve()
    if not any(name.startswith("oscap/lib/ld-linux") for name in files):
        raise GoldenError(f"ldd {oscap} names no dynamic loader: cannot bundle oscap")
    return files


def _lynis_files() -> dict[str, Path]:
    """The host's Lynis laid out as its own release tarball is (run with --usecwd)."""
    if not LYNIS_SCRIPT.is_file() or not (LYNIS_SHARE / "include").is_dir():
        raise GoldenError("lynis is required to audit images", hint="apt-get install lynis")
    files = {"lynis/lynis": LYNIS_SCRIPT, "lynis/default.prf": LYNIS_ETC / "default.prf"}
    for sub, root in (("include", LYNIS_SHARE / "include"), ("db", LYNIS_SHARE / "db"),
                      ("plugins", LYNIS_ETC / "plugins")):
        for path in sorted(root.rglob("*")):
            if path.is_file():
                files[f"lynis/{sub}/{path.relative_to(root)}"] = path.resolve()
    return files


def tools_disk(content: Content, *, cache: Path | None = None) -> ToolsDisk:
    """The tools image for `content` (built once, then reused while nothing in it changes)."""
    files = {**_oscap_files(), **_lynis_files(), f"content/{content.path.name}": content.path}
    extra = {f"lynis/{lynis.PROFILE_NAME}": lynis.PROFILE_TEXT.encode()}
    h = hashlib.sha256(f"layout {LAYOUT_VERSION}\n".encode())
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name].read_bytes() + b"\0")
    for name in sorted(extra):
        h.update(name.encode() + b"\0" + extra[name] + b"\0")
    directory = (cache or cache_dir()) / "audit" / "tools"
    iso = directory / f"tools-{h.hexdigest()[:16]}.iso"
    if iso.is_file():
        os.utime(iso)  # in use: not stale
    else:
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("tools-*.iso"):  # disks of older tools or content: a week, then gone
            if time.time() - old.stat().st_mtime > STALE_AFTER:
                old.unlink(missing_ok=True)
        write_iso(iso, files, extra)
    return ToolsDisk(iso, content.path.name)


def write_iso(path: Path, files: dict[str, Path], extra: dict[str, bytes]) -> None:
    """An ISO 9660 + Rock Ridge image of `files` (name -> host file) and `extra` (name -> bytes), root-owned."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, rock_ridge="1.09", vol_ident=LABEL)
    handles = []
    dirs: dict[str, str] = {"": ""}
    counter = 0

    def iso_dir(rel: PurePosixPath) -> str:
        nonlocal counter
        key = str(rel) if str(rel) != "." else ""
        if key not in dirs:
            parent = iso_dir(rel.parent)
            counter += 1
            dirs[key] = f"{parent}/D{counter:06d}"
            iso.add_directory(dirs[key], rr_name=rel.name, file_mode=0o040755)
        return dirs[key]

    try:
        entries: list[tuple[str, bytes | Path]] = [*files.items(), *extra.items()]
        for name, source in sorted(entries, key=lambda e: e[0]):
            rel = PurePosixPath(name)
            parent = iso_dir(rel.parent)
            counter += 1
            iso_name = f"{parent}/F{counter:06d}.;1"
            if isinstance(source, Path):
                fp = source.open("rb")
                handles.append(fp)
                mode = 0o100755 if os.access(source, os.X_OK) else 0o100644
                iso.add_fp(fp, source.stat().st_size, iso_name, rr_name=rel.name, file_mode=mode)
            else:
                iso.add_fp(io.BytesIO(source), len(source), iso_name, rr_name=rel.name, file_mode=0o100644)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                iso.write_fp(out)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    finally:
        iso.close()
        for fp in handles:
            fp.close()


def mount_command(user: str) -> str:
    """The guest shell command (run as root) that mounts the tools disk and makes the output directory."""
    return (f"set -e; mkdir -p {GUEST_MOUNT} /run/golden-audit/out; "
            f"mountpoint -q {GUEST_MOUNT} || mount -o ro /dev/disk/by-label/{LABEL} {GUEST_MOUNT}; "
            f"chown {user} /run/golden-audit/out")
