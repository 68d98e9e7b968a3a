"""`golden-firstboot backup run KIND`: the backup jobs golden-backup-*.timer start, each a oneshot unit.

Kinds: `full` (a physical copy by mariabackup), `binlog` (the binary logs closed since the last run: the
server's current one is flushed when it holds anything new, so a restore reaches any second up to the last
run), `files` (the docroot or NFS exports), `prune` (restic forget --prune by the retention counts), and
`check` (fails when a kind's last good run is older than its schedule plus a margin).

Everything goes to one restic repository per cluster (S3): restic encrypts every object on this host with the
repository key, so the store holds no plaintext. The key and the S3 credentials reach restic in its
environment only (never argv, a file or a log line). A server encrypted at rest (the banking variant's
file_key_management) has its key file saved in each full snapshot beside the copy, read by restic from where the
server reads it: its files and binary logs are shipped as the server wrote them (encrypted), and only that key,
which a fresh host lacks, reads them back (backup_restore). Each run records its result in STATE_DIR/<kind>.json,
touches the kind's mark (its mtime is the last good time, read by `golden-firstboot facts`) and exits non-zero
with one line (the unit's failure reason in the journal) when it fails."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time
from typing import Any, Iterator

from . import backup_keyfile
from .steps import Context
from .system import FirstbootError, one_line

STATE_DIR = "/var/lib/golden/backup"
MARK = "/var/lib/golden/backup-last-success.{}"
SPOOL = "/var/lib/golden/backup/spool"
CACHE = "/var/cache/golden-restic"
KINDS = ("full", "binlog", "files")
JOBS = KINDS + ("prune",)
TAG = "golden-{}"
SOCKET = "/run/mysqld/mysqld.sock"
DATADIR = "/var/lib/mysql"
#: Environments' homes on a web node (roles/env.py), backed up with the files when they exist.
ENV_HOMES = "/srv/env"
#: The tools' names by release (image.json's release_vars: Debian 10's MariaDB 10.3 has the mysql* names only).
BINLOG_TOOL = ("mariadb_binlog", "mariadb-binlog")
BACKUP_TOOL = ("mariadb_backup", "mariadb-backup")
DUMP_TOOL = ("mariadb_dump", "mariadb-dump")
RESTIC_TIMEOUT = 6 * 3600
#: How long a job waits for another job of this host to release a shared step (the repository's making, the
#: binlog spool) before it fails; a binlog run takes seconds, a first `init` a few.
LOCK_WAIT = 900


def now_iso(when: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if when is None else when))


def tool(ctx: Context, which: Any) -> str:
    """A MariaDB tool's name on this release: BINLOG_TOOL or BACKUP_TOOL."""
    return str((ctx.image.get("release_vars") or {}).get(which[0]) or which[1])


def settings(ctx: Context) -> dict[str, Any]:
    found = ctx.get("backup")
    if not isinstance(found, dict) or not found.get("repository"):
        raise FirstbootError("/etc/golden/host.json: backup.repository: missing: this host backs nothing up",
                             hint="add a `backup` section to the cluster file and render it again")
    return found


def restic_env(ctx: Context) -> dict[str, str]:
    """restic's environment: the repository, its key, the S3 credentials. Never logged (the runner logs argv)."""
    conf = settings(ctx)
    for key in ("password", "access_key_id", "secret_access_key"):
        if not conf.get(key):
            raise FirstbootError(f"/etc/golden/host.json: backup.{key}: missing",
                                 hint="the cluster file's backup secrets; render and apply it again")
    ctx.runner.secrets = sorted(set(ctx.runner.secrets) | {conf["password"], conf["access_key_id"],
                                                            conf["secret_access_key"]})
    return {"RESTIC_REPOSITORY": conf["repository"], "RESTIC_PASSWORD": conf["password"],
            "AWS_ACCESS_KEY_ID": conf["access_key_id"], "AWS_SECRET_ACCESS_KEY": conf["secret_access_key"],
            "RESTIC_CACHE_DIR": ctx.path(conf.get("cache") or CACHE), "TZ": "UTC"}


def restic(ctx: Context, args: list[str], check: bool = True, **kwargs: Any):
    conf = settings(ctx)
    options: list[str] = []
    if conf.get("region"):
        options += ["-o", "s3.region=" + str(conf["region"])]
    return ctx.run(["restic"] + (["--no-cache"] if conf.get("no_cache") else []) + options + args,
                   env=restic_env(ctx), check=check, timeout=kwargs.pop("timeout", RESTIC_TIMEOUT), **kwargs)


@contextlib.contextmanager
def host_lock(ctx: Context, name: str, wait: float = LOCK_WAIT) -> Iterator[None]:
    """One job of this host at a time in a shared step (STATE_DIR/NAME.lock, flock: released if the job dies)."""
    path = ctx.path(STATE_DIR + "/" + name + ".lock")
    os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
    deadline = time.monotonic() + wait
    with open(path, "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise FirstbootError(f"another backup job of this host held {path} for over {int(wait)} s",
                                         hint="systemctl list-units 'golden-backup-*'") from None
                time.sleep(0.5)
        yield


def ensure_repository(ctx: Context) -> bool:
    """The repository exists: made on first use by the one host host.json names for it (`init`), since two
    hosts making it at once would each write a master key and leave it unreadable; on that host, by one job at
    a time (the full job and the binlog timer start together at first boot). True when made now."""
    with host_lock(ctx, "repository"):
        if restic(ctx, ["cat", "config"], check=False).returncode == 0:
            return False
        if not settings(ctx).get("init"):
            raise FirstbootError("the repository {} does not exist yet: another host of the cluster makes it".format(
                settings(ctx)["repository"]), hint="the next run tries again; see that host's golden-backup-* units")
        restic(ctx, ["init"])
        ctx.log("made the restic repository " + settings(ctx)["repository"])
        return True


def host_name(ctx: Context) -> str:
    return str(settings(ctx).get("host") or ctx.get("hostname") or socket.gethostname())


def snapshots(ctx: Context, kind: str, host: str | None = None) -> list[dict[str, Any]]:
    """The repository's snapshots of `kind` (of `host`: this one by default), oldest first."""
    out = restic(ctx, ["snapshots", "--json", "--tag", TAG.format(kind), "--host", host or host_name(ctx)]).stdout
    found = json.loads(out or "[]") or []
    return sorted(found, key=lambda s: s.get("time", ""))


def _backup(ctx: Context, kind: str, paths: list[str], when: float | None = None) -> str:
    """A restic snapshot of paths tagged golden-KIND; its short id. `when` sets its time (the full backup's is
    its consistent point, which a point-in-time restore compares with the target time)."""
    args = ["backup", "--json", "--tag", TAG.format(kind), "--host", host_name(ctx)]
    if when is not None:
        args += ["--time", time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(when))]
    out = restic(ctx, args + paths).stdout
    for line in reversed(out.splitlines()):
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("message_type") == "summary":
            return str(message.get("snapshot_id", ""))[:8]
    return ""


def sql(ctx: Context, statements: str) -> list[list[str]]:
    """SQL as root through the local server's socket (the backup's own, as host.json names it)."""
    sock = (settings(ctx).get("database") or {}).get("socket") or SOCKET
    argv = ["mysql", "--protocol=socket", "--socket=" + sock, "--user=root", "--batch", "--skip-column-names"]
    out = ctx.run(argv, input=statements).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


def database(ctx: Context, backing_up: bool = True) -> dict[str, Any]:
    """host.json backup.database; {} (the defaults) for a restore onto a host that backs nothing up."""
    found = settings(ctx).get("database")
    if not isinstance(found, dict):
        if not backing_up:
            return {}
        raise FirstbootError("/etc/golden/host.json: backup.database: missing: this host does not back up "
                             "its database (the replica does, where there is one)")
    return found


def run_full(ctx: Context) -> str:
    """mariabackup into a fresh spool directory, then into the repository; the spool is removed either way. On a
    server encrypted at rest, mariabackup reads the key settings from the server (it writes them to the copy's
    backup-my.cnf, checked here) and the key file goes into the same snapshot, read where it lies."""
    conf = database(ctx)
    spool = ctx.path(conf.get("spool") or SPOOL) + "/full"
    shutil.rmtree(spool, ignore_errors=True)
    os.makedirs(spool, 0o700)
    try:
        ctx.run([tool(ctx, BACKUP_TOOL), "--backup", "--target-dir=" + spool,
                 "--datadir=" + (conf.get("datadir") or DATADIR), "--socket=" + (conf.get("socket") or SOCKET),
                 "--user=root"], timeout=RESTIC_TIMEOUT)
        finished = time.time()
        keyfile = backup_keyfile.server_keyfile(lambda statements: sql(ctx, statements))
        if not os.path.exists(os.path.join(spool, "xtrabackup_binlog_info")):
            raise FirstbootError("mariabackup wrote no xtrabackup_binlog_info: the server runs without a binary "
                                 "log, so no point-in-time restore could start from this copy")
        if keyfile:
            backup_keyfile.check_copy(spool, keyfile)
        # The binlog that holds the writes after the copy's consistent point is closed and shipped with it.
        run_binlog(ctx)
        return _backup(ctx, "full", [spool] + ([keyfile] if keyfile else []), when=finished)
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def run_binlog(ctx: Context) -> str:
    """The binary logs closed so far, hard-linked into the spool (a stable path: each snapshot holds all the
    server still keeps), the current one flushed first when it holds anything new since the last run. One run
    at a time: the full job ships the binlogs too, and two runs would prune each other's spool."""
    with host_lock(ctx, "binlog"):
        return _ship_binlogs(ctx)


def _ship_binlogs(ctx: Context) -> str:
    conf = database(ctx)
    datadir = conf.get("datadir") or DATADIR
    spool = ctx.path(conf.get("spool") or SPOOL) + "/binlog"
    os.makedirs(spool, 0o700, exist_ok=True)
    state_path = ctx.path(STATE_DIR + "/binlog-position.json")
    status = sql(ctx, "SHOW MASTER STATUS;\n")
    if not status:
        raise FirstbootError("the server runs without a binary log (SHOW MASTER STATUS is empty): "
                             "no point-in-time restore is possible")
    position = status[0][:2]
    try:
        with open(state_path, encoding="utf-8") as handle:
            flushed = json.load(handle)
    except (OSError, ValueError):
        flushed = None
    if flushed != position:
        sql(ctx, "FLUSH BINARY LOGS;\n")
        position = sql(ctx, "SHOW MASTER STATUS;\n")[0][:2]
    covered = time.time()
    logs = [row[0] for row in sql(ctx, "SHOW BINARY LOGS;\n")]
    closed = logs[:-1]
    for name in closed:
        target = os.path.join(spool, name)
        if not os.path.exists(target):
            source = os.path.join(datadir, name)
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)  # another file system: a copy (a closed binlog never changes)
    for name in os.listdir(spool):
        if name not in closed:
            os.unlink(os.path.join(spool, name))  # purged by the server: older snapshots still hold it
    # Every event up to now is in a closed file: the snapshot's time says how far a restore from it reaches.
    snapshot = _backup(ctx, "binlog", [spool], when=covered)
    os.makedirs(os.path.dirname(state_path), 0o700, exist_ok=True)
    with open(state_path, "w", encoding="utf-8") as handle:
        json.dump(position, handle)
    return snapshot


def run_files(ctx: Context) -> str:
    paths = [str(p) for p in (settings(ctx).get("files") or {}).get("paths") or []]
    if not paths:
        raise FirstbootError("/etc/golden/host.json: backup.files.paths: missing: no files to back up")
    # Environments' homes exist once `golden env apply` made the first one: until then there is nothing there.
    paths = [p for p in paths if p != ENV_HOMES or os.path.isdir(p)]
    missing = [p for p in paths if not os.path.isdir(p)]
    if missing:
        raise FirstbootError("not a directory: " + ", ".join(missing))
    if not paths:
        ctx.log("no environment yet: nothing to back up")
        return ""
    return _backup(ctx, "files", paths)


def run_prune(ctx: Context) -> str:
    """restic forget --prune by the retention counts, per host and kind (binlog snapshots are cumulative: the
    day's last holds every binlog the server kept)."""
    keep = settings(ctx).get("retention") or {}
    args = ["forget", "--prune", "--group-by", "host,tags", "--keep-last", str(int(keep.get("last", 3)))]
    for period in ("daily", "weekly", "monthly"):
        if keep.get(period):
            args += [f"--keep-{period}", str(int(keep[period]))]
    restic(ctx, args)
    return ""


RUNNERS = {"full": run_full, "binlog": run_binlog, "files": run_files, "prune": run_prune}


def record(ctx: Context, kind: str, ok: bool, detail: str, started: float) -> None:
    """STATE_DIR/<kind>.json (the last run's result, for `status`) and, when it succeeded, the kind's mark."""
    path = ctx.path(STATE_DIR + f"/{kind}.json")
    os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
    previous = read_state(ctx, kind)
    finished = now_iso()
    entry = {"kind": kind, "ok": ok, "started": now_iso(started), "finished": finished,
             "seconds": round(time.time() - started, 1), "detail": detail,
             "last_good": now_iso() if ok else previous.get("last_good")}
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(entry, handle)
    os.replace(tmp, path)
    if ok:
        mark = ctx.path(MARK.format(kind))
        with open(mark, "w", encoding="utf-8") as handle:
            handle.write(finished + "\n")


def read_state(ctx: Context, kind: str) -> dict[str, Any]:
    try:
        with open(ctx.path(STATE_DIR + f"/{kind}.json"), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run(ctx: Context, kind: str) -> str:
    """One job, recorded either way; FirstbootError (one line) when it fails."""
    if kind not in RUNNERS:
        raise FirstbootError(f"unknown backup kind {kind!r} (one of {', '.join(JOBS)})")
    started = time.time()
    try:
        if kind != "prune":
            ensure_repository(ctx)
        snapshot = RUNNERS[kind](ctx)
    except FirstbootError as exc:
        reason = one_line(exc.message)
        record(ctx, kind, False, reason, started)
        raise FirstbootError(f"backup {kind} failed: {reason}", hint=exc.hint) from None
    record(ctx, kind, True, f"snapshot {snapshot}" if snapshot else "done", started)
    return snapshot


def max_age(ctx: Context, kind: str) -> float | None:
    """Seconds after which a kind's last good run counts as failed (host.json, from its schedule plus margin)."""
    conf = settings(ctx)
    section = conf.get("database") if kind in ("full", "binlog") else conf.get("files")
    if not isinstance(section, dict):
        return None
    value = (section.get("max_age") or {}).get(kind)
    return float(value) if value else None


def kinds(ctx: Context) -> list[str]:
    conf = settings(ctx)
    return (["full", "binlog"] if isinstance(conf.get("database"), dict) else []) + \
        (["files"] if isinstance(conf.get("files"), dict) else [])


def verdicts(ctx: Context, at: float | None = None) -> list[dict[str, Any]]:
    """Each kind this host backs up: its last good time, age, and whether it counts as failed (and why)."""
    at = time.time() if at is None else at
    out = []
    for kind in kinds(ctx):
        state = read_state(ctx, kind)
        try:
            good = os.stat(ctx.path(MARK.format(kind))).st_mtime
        except OSError:
            good = None
        limit = max_age(ctx, kind)
        problem = ""
        if good is None:
            problem = "never succeeded"
        elif limit is not None and at - good > limit:
            problem = f"last good {now_iso(good)} is older than {int(limit)} s"
        if state and not state.get("ok"):
            problem = (problem + "; " if problem else "") + "last run failed: " + str(state.get("detail"))
        out.append({"kind": kind, "last_good": now_iso(good) if good else None, "ok": not problem,
                    "problem": problem, "age": None if good is None else round(at - good)})
    return out


def check(ctx: Context) -> None:
    """FirstbootError naming every kind that counts as failed (golden-backup-check.service fails with it)."""
    bad = [f"{v['kind']}: {v['problem']}" for v in verdicts(ctx) if not v["ok"]]
    if bad:
        raise FirstbootError("backups failing: " + "; ".join(bad),
                             hint="journalctl -u 'golden-backup-*'; `golden-firstboot backup status`")


def format_verdicts(items: list[dict[str, Any]]) -> str:
    if not items:
        return ""
    lines = ["backups:"]
    for v in items:
        state = "ok" if v["ok"] else "FAILED"
        lines.append("  {:<8} {:<7} last good {}{}".format(v["kind"], state, v["last_good"] or "never",
                                                           "" if v["ok"] else " (" + v["problem"] + ")"))
    return "\n".join(lines) + "\n"


def print_status(root: str, out: Any) -> bool:
    """`golden-firstboot status`'s backup lines, when host.json has a backup section; False when one fails."""
    path = os.path.join(root, "etc/golden/host.json")
    try:
        with open(path, encoding="utf-8") as handle:
            host = json.load(handle)
    except (OSError, ValueError):
        return True
    if not isinstance(host, dict) or not isinstance(host.get("backup"), dict):
        return True
    items = verdicts(Context({}, host, root=root))
    out.write(format_verdicts(items))
    return all(v["ok"] for v in items)
