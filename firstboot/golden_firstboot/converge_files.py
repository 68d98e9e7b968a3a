"""Files for the converge engine: cloud-init's write_files and apt modules, and the one file writer every
other module uses (compare first; atomic rename; mode and owner set before the file appears)."""

from __future__ import annotations

import base64
import gzip
import os
import stat
from typing import Any

from .converge_host import ConvergeError, Host, Report
from .system import replace_file

#: cloud-init's write_files encodings.
ENCODINGS = {
    "b64": ("b64",), "base64": ("b64",),
    "gz": ("gz",), "gzip": ("gz",),
    "gz+b64": ("b64", "gz"), "gz+base64": ("b64", "gz"), "gzip+b64": ("b64", "gz"), "gzip+base64": ("b64", "gz"),
    "text/plain": (), "text_plain": (),
}
APT_CONF = "/etc/apt/apt.conf.d/94cloud-init-config"
SOURCES_LIST = "/etc/apt/sources.list"


def decode(entry: dict[str, Any]) -> bytes:
    """The bytes a write_files entry stands for."""
    content = entry.get("content", "")
    data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
    encoding = str(entry.get("encoding", "text/plain")).lower()
    if encoding not in ENCODINGS:
        raise ConvergeError("write_files {}: unknown encoding {!r}".format(entry.get("path"), encoding))
    for step in ENCODINGS[encoding]:
        data = base64.b64decode(data) if step == "b64" else gzip.decompress(data)
    return data


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _makedirs(host: Host, directory: str) -> None:
    """Parents as cloud-init makes them: root-owned, 0755."""
    if not os.path.isdir(directory):
        _makedirs(host, os.path.dirname(directory))
        os.mkdir(directory, 0o755)
        os.chmod(directory, 0o755)


def ensure_file(host: Host, report: Report, path: str, data: bytes, mode: int = 0o644, owner: str = "root:root",
                append: bool = False, what: str = "file") -> bool:
    """Make `path` hold `data` (or end with it, for append) with mode and owner; True when it changed."""
    real = host.path(path)
    uid, gid = host.ids(owner)
    current = _read(real)
    if append and current is not None:
        # cloud-init appends once per instance; a converge appends only what is not there yet
        target = current if current.endswith(data) else current + data
    else:
        target = data
    reasons = []
    if current != target:
        reasons.append("content" if current is not None else "created")
    else:
        st = os.lstat(real)
        if stat.S_IMODE(st.st_mode) != mode:
            reasons.append(f"mode {stat.S_IMODE(st.st_mode):04o} -> {mode:04o}")
        if (st.st_uid, st.st_gid) != (uid, gid):
            reasons.append(f"owner -> {owner}")
    if not reasons:
        report.same(f"{what} {path}")
        return False
    report.change("{} {} ({})".format(what, path, ", ".join(reasons)))
    if report.check:
        return True
    report.changed_paths.append(path)
    if current == target:
        os.chmod(real, mode)
        os.chown(real, uid, gid)
        return True
    _makedirs(host, os.path.dirname(real))
    replace_file(real, target, mode, (uid, gid), prefix=".golden-converge-")
    return True


def mode_of(entry: dict[str, Any]) -> int:
    value = entry.get("permissions", "0644")
    try:
        return int(str(value), 8) if isinstance(value, str) else int(value)
    except ValueError as exc:
        path = entry.get("path")
        raise ConvergeError(f"write_files {path}: permissions {value!r} is not an octal mode") from exc


def write_files(host: Host, report: Report, entries: list[dict[str, Any]]) -> None:
    """cloud-init's write_files: content (decoded), owner (default root:root), permissions (default 0644),
    append; deferred entries are passed in after users and packages, as cloud-init's final stage does."""
    for entry in entries:
        path = entry.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConvergeError(f"write_files: path {path!r} is not absolute")
        ensure_file(host, report, path, decode(entry), mode_of(entry), str(entry.get("owner") or "root:root"),
                    bool(entry.get("append")))


def apt(host: Host, report: Report, config: dict[str, Any]) -> bool:
    """cloud-init's apt_configure: sources.list (unless preserved), apt.conf lines, extra sources and their
    keys; True when a source or key changed (the package lists must then be refreshed)."""
    changed = False
    if config.get("sources_list") and not config.get("preserve_sources_list", False):
        changed |= ensure_file(host, report, SOURCES_LIST, _substitute(host, config["sources_list"]).encode())
    if config.get("conf"):
        ensure_file(host, report, APT_CONF, str(config["conf"]).encode())
    for name, source in sorted((config.get("sources") or {}).items()):
        base = name[:-5] if name.endswith(".list") else name
        if source.get("source"):
            line = _substitute(host, source["source"]).rstrip("\n") + "\n"
            changed |= ensure_file(host, report, f"/etc/apt/sources.list.d/{base}.list", line.encode())
        if source.get("key"):
            # apt reads ASCII-armoured keys from trusted.gpg.d/*.asc: no gpg needed to dearmour them
            key = str(source["key"]).rstrip("\n") + "\n"
            changed |= ensure_file(host, report, f"/etc/apt/trusted.gpg.d/{base}.asc", key.encode())
    return changed


def _substitute(host: Host, text: str) -> str:
    """cloud-init's $RELEASE in source lines: the codename of the system converged."""
    if "$RELEASE" not in text:
        return text
    codename = ""
    data = _read(host.path("/etc/os-release")) or b""
    for line in data.decode("utf-8", "replace").splitlines():
        if line.startswith("VERSION_CODENAME="):
            codename = line.split("=", 1)[1].strip().strip('"')
    if not codename:
        raise ConvergeError("$RELEASE in an apt source, but /etc/os-release has no VERSION_CODENAME")
    return text.replace("$RELEASE", codename)
