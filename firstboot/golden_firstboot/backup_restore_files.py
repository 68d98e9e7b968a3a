"""`golden-firstboot backup restore-files --path PATH --at TIME [--to DIR]` (and `golden backup restore-files`
through it): one file or folder of this host's files backups put back as it was at a time.

The newest files snapshot at or before TIME that holds PATH is read. Without --to, the live PATH is moved into
the archive (FILES_ARCHIVE/STAMP/PATH) and the snapshot's version takes its place with the owners, modes and
times restic kept; with --to, the snapshot's version lands under DIR and nothing live is touched. Before
anything is swapped in, what restic restored is checked against a second read of the snapshot (`restic dump`):
the same entries, and each file's size, sha256, mode, owner and time."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
from typing import IO, Any

from . import backup_jobs
from .backup_jobs import restic, snapshots
from .backup_restore import parse_time
from .steps import Context
from .system import FirstbootError

FILES_ARCHIVE = "/var/lib/golden/files-archive"
STAGING = ".golden-restore-"
DUMP = ".golden-restore-dump"
GLOB = re.compile(r"([*?\[\]\\])")  # restic's --include is a pattern: a name such as photo[1].jpg is escaped


def check_path(path: str, what: str = "--path") -> str:
    """An absolute, canonical path (no `.`, `..`, `//`, trailing `/` or control character); FirstbootError."""
    shown = repr(path[:200])
    if not path.startswith("/"):
        raise FirstbootError(f"{what} {shown}: not an absolute path")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise FirstbootError(f"{what} {shown}: holds a control character")
    parts = path.split("/")[1:]
    if path != "/" and any(p in ("", ".", "..") for p in parts):
        raise FirstbootError(f"{what} {shown}: not a plain path (an empty, `.` or `..` part)",
                             hint="write it as /srv/nfs/www/uploads/logo.png")
    return path


def inside(path: str, root: str) -> bool:
    root = root.rstrip("/")
    return path == root or path.startswith(root + "/")


def backed_up_roots(ctx: Context) -> list[str]:
    paths = [str(p).rstrip("/") or "/" for p in (backup_jobs.settings(ctx).get("files") or {}).get("paths") or []]
    if not paths:
        raise FirstbootError("/etc/golden/host.json: backup.files.paths: missing: this host backs no files up")
    return paths


def no_links_below(root: str, path: str) -> None:
    """Every folder from the backed-up root down to PATH's parent is a real folder on the live host (a link
    there would send the restore, or the archive move, outside the backed-up tree)."""
    current = root
    below = path[len(root.rstrip("/")):].strip("/").split("/")[:-1]
    for part in [""] + below:
        current = os.path.join(current, part) if part else current
        try:
            info = os.lstat(current)
        except OSError:
            raise FirstbootError(f"{current} does not exist on this host: restore it first (or use --to)") from None
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
            raise FirstbootError(f"{current} is a symbolic link or not a folder: refusing to restore {path} "
                                 "through it", hint="use --to DIR and copy what is needed")


def find_snapshot(ctx: Context, at: float, path: str, source: str | None) -> dict[str, Any]:
    """The newest files snapshot at or before `at` whose tree holds `path`, with its node (restic ls)."""
    for snap in reversed(snapshots(ctx, "files", source)):
        if parse_time(snap["time"]) > at or not any(inside(path, p) for p in snap.get("paths") or []):
            continue
        for line in restic(ctx, ["ls", "--json", snap["id"], path]).stdout.splitlines():
            try:
                node = json.loads(line)
            except ValueError:
                continue
            if isinstance(node, dict) and node.get("struct_type") == "node" and node.get("path") == path:
                return dict(snap, node=node)
    raise FirstbootError(f"no files backup of {source or backup_jobs.host_name(ctx)} holds {path} at or before "
                         f"{backup_jobs.now_iso(at)}", hint="`golden backup list HOST` shows what the store holds")


def sha256_stream(handle: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str) -> str:
    with open(path, "rb") as handle:
        return sha256_stream(handle)


def _mtime(text: str) -> int:
    return int(parse_time(text))


def _compare(where: str, info: os.stat_result, mode: int, uid: int, gid: int, mtime: int | None) -> None:
    problems = []
    # Permission bits only: restic keeps setuid/setgid/sticky in Go's own bits, which its tar leaves out.
    if info.st_mode & 0o777 != mode & 0o777:
        problems.append(f"mode {info.st_mode & 0o777:o}, not {mode & 0o777:o}")
    if os.geteuid() == 0 and (info.st_uid, info.st_gid) != (uid, gid):
        problems.append(f"owner {info.st_uid}:{info.st_gid}, not {uid}:{gid}")
    # To the second: restic's tar rounds a time to the nearest second, its ls gives the fraction that parse drops.
    if mtime is not None and abs(info.st_mtime - mtime) >= 1:
        problems.append(f"mtime {int(info.st_mtime)}, not {mtime}")
    if problems:
        raise FirstbootError(f"restored {where} differs from the snapshot: " + "; ".join(problems))


def verify(ctx: Context, snap: dict[str, Any], path: str, restored: str, dump: str) -> dict[str, int]:
    """What restic restored at `restored`, against the snapshot read again (`restic dump`: the file itself, or
    a tar of the folder): the same entries; each file's size, sha256, mode, owner and time. Counts."""
    node = snap["node"]
    fd = os.open(dump, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    try:
        restic(ctx, ["dump", snap["id"], path], stdout_path=dump)
        if node.get("type") == "file":
            info = os.lstat(restored)
            if not stat.S_ISREG(info.st_mode) or info.st_size != int(node.get("size") or 0) \
                    or sha256_file(restored) != sha256_file(dump):
                raise FirstbootError(f"restored {path} differs from the snapshot's content (size or sha256)")
            _compare(path, info, int(node["mode"]), int(node["uid"]), int(node["gid"]), _mtime(node["mtime"]))
            return {"files": 1, "bytes": info.st_size, "entries": 1}
        if node.get("type") != "dir":
            return {"files": 0, "bytes": 0, "entries": 1}  # a link or a special file: restic restored it as is
        _compare(path, os.lstat(restored), int(node["mode"]), int(node["uid"]), int(node["gid"]), None)
        return _verify_tree(path, restored, dump)
    finally:
        os.unlink(dump)


def _verify_tree(path: str, restored: str, dump: str) -> dict[str, int]:
    prefix = path.strip("/") + "/"
    seen = set()
    files = size = 0
    with tarfile.open(dump, "r:") as tar:
        for member in tar:
            name = member.name.lstrip("/").rstrip("/")
            if name + "/" == prefix:
                continue  # the folder itself (checked against restic ls)
            if not name.startswith(prefix):
                raise FirstbootError(f"the snapshot's dump of {path} holds {name!r}, outside it")
            relative = name[len(prefix):]
            check_path("/" + relative, "an entry")  # no `..` in the tar walks out of the restored folder
            where = os.path.join(restored, relative)
            seen.add(relative)
            try:
                info = os.lstat(where)
            except OSError:
                raise FirstbootError(f"restored {path}/{relative} is missing") from None
            if member.isfile():
                handle = tar.extractfile(member)
                if handle is None or not stat.S_ISREG(info.st_mode) or info.st_size != member.size \
                        or sha256_file(where) != sha256_stream(handle):
                    raise FirstbootError(f"restored {path}/{relative} differs from the snapshot's content")
                _compare(f"{path}/{relative}", info, member.mode, member.uid, member.gid, int(member.mtime))
                files += 1
                size += info.st_size
            elif member.isdir():
                if not stat.S_ISDIR(info.st_mode):
                    raise FirstbootError(f"restored {path}/{relative} is not a folder")
                _compare(f"{path}/{relative}", info, member.mode, member.uid, member.gid, None)
            elif member.issym() and (not stat.S_ISLNK(info.st_mode) or os.readlink(where) != member.linkname):
                raise FirstbootError(f"restored {path}/{relative} is not the snapshot's link")
    on_disk = set()
    for top, dirs, names in os.walk(restored):
        for name in dirs + names:
            on_disk.add(os.path.relpath(os.path.join(top, name), restored))
    if on_disk != seen:
        extra = sorted(on_disk ^ seen)[:3]
        raise FirstbootError(f"restored {path} holds {len(on_disk)} entries, the snapshot {len(seen)}: "
                             + ", ".join(extra))
    return {"files": files, "bytes": size, "entries": len(seen) + 1}


def move(source: str, target: str) -> None:
    """rename, or (another file system) a copy that keeps owners, modes and times, then the source removed."""
    try:
        os.rename(source, target)
        return
    except OSError as exc:
        if exc.errno != 18:  # EXDEV
            raise
    if os.path.isdir(source) and not os.path.islink(source):
        shutil.copytree(source, target, symlinks=True)
        pairs = [(source, target)] + [
            (os.path.join(top, n), os.path.join(target, os.path.relpath(os.path.join(top, n), source)))
            for top, dirs, names in os.walk(source) for n in dirs + names]
    else:
        shutil.copy2(source, target, follow_symlinks=False)
        pairs = [(source, target)]
    for old, new in pairs:
        info = os.lstat(old)
        os.lchown(new, info.st_uid, info.st_gid)
        if not stat.S_ISLNK(info.st_mode):
            os.chmod(new, stat.S_IMODE(info.st_mode))
            os.utime(new, ns=(info.st_atime_ns, info.st_mtime_ns))
    if os.path.isdir(source) and not os.path.islink(source):
        shutil.rmtree(source)
    else:
        os.unlink(source)


def restore_path(ctx: Context, at: float, path: str, to: str | None = None, source: str | None = None,
                 archive: str = FILES_ARCHIVE, label: str = "") -> dict[str, Any]:
    """PATH (a file or folder under one of this host's backed-up folders) as of `at`: in place, the live one
    archived first (under `archive`, in a folder of its own named LABEL + the time + a unique tail), or under
    `to`. Checked against the snapshot before it is put in place. The report."""
    check_path(path)
    own = source is None or source == backup_jobs.host_name(ctx)
    roots = backed_up_roots(ctx) if own else \
        [str(p) for p in (backup_jobs.settings(ctx).get("files") or {}).get("paths") or []]
    if own and not any(inside(path, r) for r in roots):
        raise FirstbootError(f"--path {path}: not inside this host's backed-up folders ({', '.join(roots)})")
    if not own and to is None:
        raise FirstbootError(f"--source {source}: another host's files are restored with --to DIR only")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    if to is not None:
        check_path(to, "--to")
        real = os.path.realpath(to)  # a link on the way there counts where it leads
        if any(inside(t, r) or inside(r, t) for t in (to, real) for r in roots + [os.path.realpath(r) for r in roots]):
            raise FirstbootError(f"--to {to}: inside (or above) a backed-up folder: it would touch the live tree")
        if os.path.islink(to) or (os.path.lexists(to) and (not os.path.isdir(to) or os.listdir(to))):
            raise FirstbootError(f"--to {to}: not an empty folder")
    else:
        root = max((r for r in roots if inside(path, r)), key=len)
        if path == root and os.path.ismount(path):
            raise FirstbootError(f"{path} is a mount point: restore the folders in it, or use --to DIR")
        no_links_below(root, path)
    snap = find_snapshot(ctx, at, path, source)
    ctx.log("restoring {} from files snapshot {} ({}){}".format(
        path, snap["short_id"], snap["time"][:19], " under " + to if to else ""))
    if to is None:
        # Beside the live PATH (one file system: the swap is a rename that keeps everything), closed to others.
        staging = tempfile.mkdtemp(prefix=STAGING + stamp + "-", dir=os.path.dirname(path))
    else:
        os.makedirs(to, 0o700, exist_ok=True)
        staging = to
    restored = os.path.join(staging, path.lstrip("/"))
    archived = None
    try:
        restic(ctx, ["restore", snap["id"], "--target", staging, "--include", GLOB.sub(r"\\\1", path)])
        if not os.path.lexists(restored):
            raise FirstbootError(f"restic restored no {path} from snapshot {snap['short_id']}")
        counts = verify(ctx, snap, path, restored, os.path.join(staging, DUMP))
        if to is None:
            if os.path.lexists(path):
                os.makedirs(ctx.path(archive), 0o700, exist_ok=True)
                archived = tempfile.mkdtemp(prefix=label + stamp + "-", dir=ctx.path(archive)) + path
                os.makedirs(os.path.dirname(archived), 0o700, exist_ok=True)
                move(path, archived)
            try:
                os.rename(restored, path)
            except OSError:
                if archived:
                    move(archived, path)  # the live version back where it was: nothing half-done
                raise
    except OSError as exc:  # a full disk, a busy mount: one line, not a traceback
        raise FirstbootError(f"restoring {path}: {exc}") from None
    finally:
        if to is None:
            shutil.rmtree(staging, ignore_errors=True)
    return {"at": backup_jobs.now_iso(at), "snapshot": snap["short_id"], "snapshot_time": snap["time"][:19] + "Z",
            "path": path, "type": snap["node"].get("type"), "restored": path if to is None else restored,
            "archived": archived, "files": counts["files"], "bytes": counts["bytes"], "entries": counts["entries"],
            "checked": "sha256, size, mode, owner and mtime of each file against restic dump"}
