"""Restores from the backup repository (`golden-firstboot backup restore --at TIME`, and `golden backup restore`
through it): a database to any second, from the last full copy before it and the binary logs after it.

A time is a UTC second; the state "at T" holds every transaction whose binlog timestamp is T or earlier and
none later (mysqlbinlog --stop-datetime T+1). Restic checks each object's MAC as it reads it back; the restore
then checks what it restored: every user table passes CHECK TABLE, and its row count and checksum are
reported, before it says it succeeded.

A backup of a server encrypted at rest (the banking variant) is restored with its source's key: backup_keys.py."""

from __future__ import annotations

import calendar
import json
import os
import re
import shutil
import time
from typing import Any, Callable

from . import backup_jobs
from .backup_jobs import BACKUP_TOOL, BINLOG_TOOL, restic, snapshots, tool
from .backup_keys import KEY_PLUGIN, data_path, install_key, key_path, key_settings, point_copy_at_key, replay_encrypted
from .roles.hardened import KEY_FILE
from .roles.mariadb import ENCRYPTION_CNF
from .steps import Context
from .system import FirstbootError

REPLICA_STATE = ("master.info", "relay-log.info", "multi-master.info")
SYSTEM_SCHEMAS = ("mysql", "information_schema", "performance_schema", "sys")
RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)?$")


def parse_time(text: str) -> float:
    """A UTC Unix time from RFC 3339 ('2026-12-07T04:42:43.12+01:00', 'Z', or no zone: UTC), or Unix seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    found = RFC3339.match(text)
    if not found:
        raise FirstbootError(f"{text!r} is not a time such as 2026-12-07T04:42:43Z")
    parts = [int(p) for p in found.groups()[:6]]
    seconds = float(calendar.timegm((parts[0], parts[1], parts[2], parts[3], parts[4], parts[5], 0, 0, 0)))
    zone = found.group(7)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds


class Plan:
    """What a restore to `at` reads: the full copy, the binlog snapshot after it, and how far that reaches."""

    def __init__(self, at: float, full: dict[str, Any], binlogs: list[dict[str, Any]]) -> None:
        self.at = at
        self.full = full
        #: The binlog snapshots to read, the first that holds the copy's starting binlog wins.
        self.binlogs = binlogs
        self.binlog = binlogs[0] if binlogs else None
        self.reaches = parse_time(binlogs[0]["time"]) if binlogs else parse_time(full["time"])
        #: The key plugin's settings of an encrypted source (its key installed here): fetch_full sets them.
        self.keys: dict[str, str] = {}
        self.key_aside: str | None = None

    def describe(self) -> str:
        text = "full {} ({})".format(self.full["short_id"], self.full["time"][:19])
        if self.binlog:
            text += ", binlogs {} ({})".format(self.binlog["short_id"], self.binlog["time"][:19])
        return text


def plan(ctx: Context, at: float, source: str | None = None) -> Plan:
    """The last full copy made at or before `at`, and the binlog snapshots to replay from: the newest first (a
    snapshot's time is the backing host's clock, and a replica's binlog holds a second's writes only once they
    have reached it, so an older snapshot "covering" `at` may still lack some; --stop-datetime caps the replay),
    then the first at or after `at`, in case the newest no longer holds the copy's starting binlog (purged)."""
    fulls = [s for s in snapshots(ctx, "full", source) if parse_time(s["time"]) <= at]
    if not fulls:
        raise FirstbootError("no full backup of {} at or before {} in {}".format(
            source or backup_jobs.host_name(ctx), backup_jobs.now_iso(at), backup_jobs.settings(ctx)["repository"]),
            hint="`golden backup list HOST` shows what the store holds")
    full = fulls[-1]
    logs = [s for s in snapshots(ctx, "binlog", source) if parse_time(s["time"]) >= parse_time(full["time"])]
    covering = [s for s in logs if parse_time(s["time"]) >= at + 1]
    chosen = logs[-1:] + [s for s in covering[:1] if s is not logs[-1]]
    return Plan(at, full, chosen)


def _fetch(ctx: Context, snapshot: dict[str, Any], target: str) -> str:
    """Restore a snapshot's spool folder into target; the folder that holds its files."""
    path = data_path(snapshot)
    shutil.rmtree(target, ignore_errors=True)
    os.makedirs(target, 0o700)
    # That folder only (never the key beside it), under its full path: `ID:PATH` needs restic 0.15+.
    restic(ctx, ["restore", snapshot["id"], "--target", target, "--include", path])
    return os.path.join(target, path.lstrip("/"))


def binlog_start(prepared: str) -> tuple[str, int]:
    """(file, position) the copy continues from: mariabackup's xtrabackup_binlog_info."""
    try:
        with open(os.path.join(prepared, "xtrabackup_binlog_info"), encoding="utf-8") as handle:
            fields = handle.read().split()
        return fields[0], int(fields[1])
    except (OSError, IndexError, ValueError):
        raise FirstbootError("the full backup has no readable xtrabackup_binlog_info") from None


def fetch_full(ctx: Context, restore_plan: Plan, work: str, keyfile: str | None = None) -> str:
    """The full copy restored into WORK/full and prepared (crash recovery applied): ready to copy back. A copy of
    a server encrypted at rest is prepared with the source's key, installed first as `keyfile`; its key settings
    are kept in restore_plan.keys for the binlog reader."""
    folder = _fetch(ctx, restore_plan.full, os.path.join(work, "full"))
    if key_path(restore_plan.full):
        if not keyfile:
            raise FirstbootError("full backup {} is of a server encrypted at rest: only its key reads it, and this "
                                 "restore has no key file to install it as".format(restore_plan.full["short_id"]),
                                 hint="restore it onto a SQL host of the banking (hardened) profile")
        restore_plan.keys = dict(key_settings(folder), **{KEY_PLUGIN + "_filename": keyfile})
        if restore_plan.keys.get(KEY_PLUGIN + "_filekey"):
            # the banking profile's key file is not itself encrypted: a file key would be a secret on argv
            raise FirstbootError(f"full backup {restore_plan.full['short_id']}: its server's key file is encrypted "
                                 f"({KEY_PLUGIN}_filekey): not supported by the restore")
        restore_plan.key_aside = install_key(ctx, restore_plan.full, keyfile)
        point_copy_at_key(folder, keyfile)
    ctx.run([tool(ctx, BACKUP_TOOL), "--prepare", "--target-dir=" + folder], timeout=backup_jobs.RESTIC_TIMEOUT)
    return folder


def copy_back(ctx: Context, prepared: str, datadir: str) -> None:
    """The prepared copy moved into datadir, which must be empty (a fresh host's, or one set aside)."""
    if os.path.isdir(datadir) and os.listdir(datadir):
        raise FirstbootError(f"{datadir} is not empty: a restore goes onto a fresh data directory",
                             hint="stop the server and move the data directory aside first")
    ctx.run([tool(ctx, BACKUP_TOOL), "--move-back", "--target-dir=" + prepared, "--datadir=" + datadir],
            timeout=backup_jobs.RESTIC_TIMEOUT)
    # A copy taken on a replica carries its replication state: started as it is, the restored server would
    # replicate from the old primary again and replay what the restore stops before (the DROP TABLE).
    for name in os.listdir(datadir):
        if name in REPLICA_STATE or "relay-bin" in name:
            os.unlink(os.path.join(datadir, name))


def stop_datetime(at: float) -> str:
    """mysqlbinlog's --stop-datetime (read in its TZ, UTC here) that keeps every event of second `at`."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(at) + 1))


def replay(ctx: Context, restore_plan: Plan, prepared: str, work: str, socket: str) -> int:
    """The binary logs from the copy's position up to `at` applied through the restored server's socket; the
    number of binlog files read."""
    if restore_plan.binlog is None:
        ctx.log("no binlogs after the full backup: the state is the copy's own")
        return 0
    first, position = binlog_start(prepared)
    names: list[str] = []
    for snapshot in restore_plan.binlogs:
        folder = _fetch(ctx, snapshot, os.path.join(work, "binlog"))
        names = sorted(n for n in os.listdir(folder) if n >= first and re.fullmatch(r".+\.\d{6}", n))
        if names and names[0] == first:
            break
    else:
        raise FirstbootError(f"the binlog {first} that the full backup continues from is not in the store",
                             hint="take a new full backup: `systemctl start golden-backup-full`")
    if restore_plan.keys:
        replay_encrypted(ctx, restore_plan.keys, folder, names, position, stop_datetime(restore_plan.at), socket,
                         work)
        return len(names)
    events = os.path.join(work, "replay.sql")
    fd = os.open(events, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    try:
        ctx.run([tool(ctx, BINLOG_TOOL), f"--start-position={position}",
                 "--stop-datetime=" + stop_datetime(restore_plan.at)] + [os.path.join(folder, n) for n in names],
                env={"TZ": "UTC"}, stdout_path=events, timeout=backup_jobs.RESTIC_TIMEOUT)
        ctx.run(["mysql", "--protocol=socket", "--socket=" + socket, "--user=root", "--batch"], stdin_path=events,
                timeout=backup_jobs.RESTIC_TIMEOUT)
    finally:
        os.unlink(events)  # the events in clear: never left behind
    return len(names)


def verify(ctx: Context, socket: str, like: str | None = None) -> list[dict[str, Any]]:
    """Every user table (in the schemas matching LIKE pattern `like`, when given) checked (CHECK TABLE), counted
    and checksummed; FirstbootError naming a table that fails its check."""
    argv = ["mysql", "--protocol=socket", "--socket=" + socket, "--user=root", "--batch", "--skip-column-names"]

    def query(statement: str) -> list[list[str]]:
        return [r.split("\t") for r in ctx.run(argv, input=statement).stdout.splitlines() if r.strip()]

    names = ", ".join("'" + s + "'" for s in SYSTEM_SCHEMAS)
    tables = query("SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' "
                   f"AND TABLE_SCHEMA NOT IN ({names})" + (f" AND TABLE_SCHEMA LIKE '{like}'" if like else "")
                   + " ORDER BY 1, 2;\n")
    report = []
    for schema, table in tables:
        name = "`{}`.`{}`".format(schema.replace("`", "``"), table.replace("`", "``"))
        checked = query(f"CHECK TABLE {name};\n")
        if not checked or checked[-1][-1] != "OK":
            raise FirstbootError("restored table {}.{} fails CHECK TABLE: {}".format(
                schema, table, checked[-1][-1] if checked else "no answer"))
        count = int(query(f"SELECT COUNT(*) FROM {name};\n")[0][0])
        checksum = query(f"CHECKSUM TABLE {name};\n")[0][-1]
        report.append({"table": f"{schema}.{table}", "rows": count, "checksum": checksum})
    return report


def restore_database(ctx: Context, at: float, datadir: str, socket: str, start: Callable[[], None],
                     source: str | None = None, work: str | None = None,
                     keyfile: str | None = None) -> dict[str, Any]:
    """The database as it was at `at`, onto an empty datadir: fetch and prepare the full copy, move it in,
    start the server (`start`), replay the binlogs, check every table. The report, as JSON-ready data. A backup
    of a server encrypted at rest needs `keyfile`, the key file the started server reads: the source's key is
    installed there."""
    restore_plan = plan(ctx, at, source)
    ctx.log(f"restoring {source or backup_jobs.host_name(ctx)} to {backup_jobs.now_iso(at)} "
            f"from {restore_plan.describe()}")
    work = work or ctx.path(backup_jobs.STATE_DIR + "/restore")
    try:
        prepared = fetch_full(ctx, restore_plan, work, keyfile)
        first, position = binlog_start(prepared)
        # mariabackup --move-back empties the copy; the binlog position is kept first.
        keep = os.path.join(work, "xtrabackup_binlog_info")
        shutil.copy(os.path.join(prepared, "xtrabackup_binlog_info"), keep)
        copy_back(ctx, prepared, datadir)
        start()
        files = replay(ctx, restore_plan, work, work, socket)
        tables = verify(ctx, socket)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    reached = min(restore_plan.reaches, at)
    report = {"at": backup_jobs.now_iso(at), "reached": backup_jobs.now_iso(reached), "from": restore_plan.describe(),
              "binlog_start": f"{first}:{position}", "binlog_files": files, "tables": tables,
              "encrypted": bool(restore_plan.keys)}
    if restore_plan.key_aside:
        report["key_set_aside"] = restore_plan.key_aside
    return report


def list_snapshots(ctx: Context, host: str | None = None) -> list[dict[str, Any]]:
    """Every snapshot of the repository (of `host` when given), oldest first, as JSON-ready data."""
    args = ["snapshots", "--json"] + (["--host", host] if host else [])
    found = json.loads(restic(ctx, args).stdout or "[]") or []
    out = []
    for snap in sorted(found, key=lambda s: s.get("time", "")):
        kind = next((t[len("golden-"):] for t in snap.get("tags") or [] if t.startswith("golden-")), "?")
        out.append({"id": snap.get("short_id"), "time": snap.get("time", "")[:19] + "Z", "host": snap.get("hostname"),
                    "kind": kind, "paths": snap.get("paths")})
    return out


def restore_here(ctx: Context, at: float, source: str | None = None) -> dict[str, Any]:
    """On this (fresh) SQL host: the server stopped, its data directory set aside (refused when it holds user
    databases), the restore, the server started on the restored data. The report."""
    conf = backup_jobs.database(ctx, backing_up=False)
    datadir = conf.get("datadir") or backup_jobs.DATADIR
    socket = conf.get("socket") or backup_jobs.SOCKET
    names = ", ".join("'" + s + "'" for s in SYSTEM_SCHEMAS)
    # A fresh host's first boot made the cluster's databases, empty: a table in one means data to lose.
    found = backup_jobs.sql(ctx, "SELECT DISTINCT TABLE_SCHEMA FROM information_schema.TABLES "
                                 f"WHERE TABLE_SCHEMA NOT IN ({names}) ORDER BY 1;\n")
    if found:
        raise FirstbootError("this server holds tables in {}: a restore goes onto a fresh SQL host".format(
            ", ".join(r[0] for r in found)), hint="boot a new host from the image and restore there")
    # A host of the banking profile runs MariaDB encrypted at rest: an encrypted backup's key becomes its key,
    # and the server starts on the restored data with the same encryption settings (never without them).
    keyfile = ctx.path(conf.get("keyfile") or KEY_FILE) if ctx.exists(ENCRYPTION_CNF) else None
    if keyfile is None:
        full = plan(ctx, at, source).full
        if key_path(full):  # refused before the server is stopped
            raise FirstbootError("full backup {} is of a server encrypted at rest, and this host's MariaDB is not "
                                 "({} is missing)".format(full["short_id"], ENCRYPTION_CNF),
                                 hint="restore it onto a SQL host of the banking (hardened) profile")
    ctx.run(["systemctl", "stop", "mariadb"], timeout=600)
    aside = "{}.before-restore-{}".format(datadir.rstrip("/"), int(time.time()))
    os.rename(datadir, aside)
    os.makedirs(datadir, 0o750)

    def start() -> None:
        ctx.run(["chown", "-R", "mysql:mysql", datadir])
        if keyfile and os.path.exists(keyfile):
            ctx.chown(keyfile, "mysql", "mysql")
        ctx.run(["systemctl", "start", "mariadb"], timeout=900)

    report = restore_database(ctx, at, datadir, socket, start, source, keyfile=keyfile)
    report["set_aside"] = aside
    return report
