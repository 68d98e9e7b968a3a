"""`golden-firstboot backup restore-env`: one environment's databases (on the writer) or site files (on a web
node) put back as of a time, the others untouched. The databases: the whole server restored to that time in a
scratch server beside the live one, the environment's databases dumped from it and swapped in, the live ones
dumped into the archive first. The files: the node's own files backup, through restore-files' checked path
(backup_restore_files.restore_path), the live folder archived only once the restored one has been checked."""

from __future__ import annotations

import os
import re
import shutil
import time
from typing import Any

from . import backup_jobs
from .backup_jobs import DUMP_TOOL, tool
from .backup_restore import restore_database, verify
from .backup_restore_files import restore_path
from .steps import Context
from .system import FirstbootError

#: Where an environment's restore works (a scratch server's data directory), and where what it replaces goes.
ENV_WORK = "/var/lib/golden/restore-env"
ENV_ARCHIVE = "/var/lib/golden/env-archive"
ENV_ROOT = backup_jobs.ENV_HOMES
ENV_NAME = re.compile(r"[a-z][a-z0-9]{1,23}$")  # golden's environment names (goldenimage/hosting/model)
SCRATCH_START_S = 300


class ScratchServer:
    """A second mariadbd on a restored data directory beside the live one: its own socket, no network, no
    binary log (nothing it replays reaches the replicas), stopped when the environment's restore is over."""

    def __init__(self, ctx: Context, folder: str) -> None:
        self.ctx, self.folder = ctx, folder
        self.datadir = os.path.join(folder, "data")
        # A socket's path has at most 107 bytes: its own short folder, not one under the (long) work folder.
        import tempfile

        self.run_dir = tempfile.mkdtemp(prefix="golden-restore-", dir="/run" if os.access("/run", os.W_OK) else None)
        self.socket = os.path.join(self.run_dir, "mysqld.sock")
        self.proc: Any = None

    def start(self) -> None:
        import pwd
        import subprocess

        try:
            account = pwd.getpwnam("mysql")
            user = "mysql" if reachable(self.folder, account.pw_uid, account.pw_gid) else "root"
        except KeyError:
            user = "root"  # a host without MariaDB's account (the tests' own server)
        if user == "mysql":
            self.ctx.run(["chown", "-R", "mysql:mysql", self.folder, self.run_dir])
        server = shutil.which("mariadbd") or shutil.which("mysqld") or "mysqld"  # Debian 10: mysqld only
        argv = [server, "--no-defaults", "--user=" + user, "--datadir=" + self.datadir, "--socket=" + self.socket,
                "--skip-networking", "--skip-log-bin", "--innodb-buffer-pool-size=128M",
                "--pid-file=" + os.path.join(self.folder, "mysqld.pid"),
                "--log-error=" + os.path.join(self.folder, "error.log")]
        self.ctx.log("$ " + " ".join(argv))
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + SCRATCH_START_S
        while True:
            probe = subprocess.run(["mysql", "--protocol=socket", "--socket=" + self.socket, "--user=root",
                                    "--batch", "-e", "SELECT 1"], capture_output=True, timeout=60)
            if probe.returncode == 0:
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = system_tail(os.path.join(self.folder, "error.log"))
                raise FirstbootError("the scratch server for the restore did not start: " + log)
            time.sleep(1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=300)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.run_dir, ignore_errors=True)


def reachable(path: str, uid: int, gid: int) -> bool:
    """Whether an account may walk down to path (every folder above it searchable by it): mariadbd run as
    `mysql` cannot open a data directory under a folder only root enters (a test's temporary folder)."""
    parent = os.path.dirname(os.path.abspath(path))
    while True:
        st = os.stat(parent)
        bit = 0o100 if st.st_uid == uid else 0o010 if st.st_gid == gid else 0o001
        if not st.st_mode & bit:
            return False
        if parent == os.path.dirname(parent):
            return True
        parent = os.path.dirname(parent)


def system_tail(path: str) -> str:
    """The server's reason: its last [ERROR] line other than the final 'Aborting', else its last line."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = [line.strip() for line in handle if line.strip()]
    except OSError:
        return "no error log"
    errors = [line for line in lines if "[ERROR]" in line and not line.endswith("Aborting")]
    return (errors or lines or ["an empty error log"])[-1][:300]


def env_databases(ctx: Context, socket: str, name: str) -> list[str]:
    argv = ["mysql", "--protocol=socket", "--socket=" + socket, "--user=root", "--batch", "--skip-column-names"]
    out = ctx.run(argv, input=f"SHOW DATABASES LIKE '{name}\\_%';\n").stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def dump(ctx: Context, socket: str, databases: list[str], path: str) -> None:
    """The databases as SQL (with CREATE DATABASE), into a file only root reads."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    ctx.run([tool(ctx, DUMP_TOOL), "--protocol=socket", "--socket=" + socket, "--user=root", "--single-transaction",
             "--routines", "--triggers", "--events", "--databases"] + databases, stdout_path=path,
            timeout=backup_jobs.RESTIC_TIMEOUT)


def restore_env_databases(ctx: Context, name: str, at: float, source: str | None = None,
                          live_socket: str | None = None) -> dict[str, Any]:
    """Environment NAME's databases (NAME_*) as they were at `at`, put back on this (the writer's) live server:
    the whole server restored to `at` in a scratch server beside it, NAME's databases dumped from there; the
    live ones dumped into the archive first, then replaced; every restored table checked on the live server.
    Other environments' databases are not touched. The report, as JSON-ready data."""
    if not ENV_NAME.match(name):
        raise FirstbootError(f"{name!r} is not an environment name")
    live = live_socket or backup_jobs.database(ctx, backing_up=False).get("socket") or backup_jobs.SOCKET
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = ctx.path(f"{ENV_WORK}/{name}-{stamp}")
    archive = ctx.path(ENV_ARCHIVE)
    os.makedirs(folder, 0o700)
    os.makedirs(archive, 0o700, exist_ok=True)
    scratch = ScratchServer(ctx, folder)
    try:
        report = restore_database(ctx, at, scratch.datadir, scratch.socket, scratch.start, source,
                                  work=os.path.join(folder, "work"))
        found = env_databases(ctx, scratch.socket, name)
        if not found:
            raise FirstbootError(f"no database of environment {name} existed at {backup_jobs.now_iso(at)}")
        restored = os.path.join(folder, "env.sql")
        dump(ctx, scratch.socket, found, restored)
        scratch.stop()
        current = env_databases(ctx, live, name)
        before = os.path.join(archive, f"{name}-databases-before-restore-{stamp}.sql")
        if current:
            dump(ctx, live, current, before)
        client = ["mysql", "--protocol=socket", "--socket=" + live, "--user=root", "--batch"]
        dropped = "".join("DROP DATABASE `{}`;\n".format(db.replace("`", "``")) for db in current)
        if dropped:
            ctx.run(client, input=dropped)
        ctx.run(client, stdin_path=restored, timeout=backup_jobs.RESTIC_TIMEOUT)
        tables = verify(ctx, live, like=name + "\\_%")
    finally:
        scratch.stop()
        shutil.rmtree(folder, ignore_errors=True)  # the scratch data and the dump in clear: never left behind
    return {"environment": name, "at": report["at"], "reached": report["reached"], "from": report["from"],
            "databases": found, "archived": before if current else None, "tables": tables}


def restore_env_files(ctx: Context, name: str, at: float, source: str | None = None,
                      env_root: str = ENV_ROOT) -> dict[str, Any]:
    """Environment NAME's site files (ENV_ROOT/NAME/htdocs) as of `at`, from this web node's files backups,
    through `restore-files`' checked path: restored beside the live folder, every entry checked against the
    snapshot (sha256, size, mode, owner, mtime, the same entries), and only then the live folder moved into the
    archive (ENV_ARCHIVE/NAME-htdocs-before-restore-TIME-XXXX/...) and the restored one renamed into place.
    A restore that differs from the snapshot leaves the live folder as it was. The report."""
    if not ENV_NAME.match(name):
        raise FirstbootError(f"{name!r} is not an environment name")
    live = f"{env_root}/{name}/htdocs"  # as the files job names it (host.json paths, not under root)
    report = restore_path(ctx, at, live, source=source, archive=ENV_ARCHIVE, label=f"{name}-htdocs-before-restore-")
    report.update({"environment": name, "target": live,
                   "from": "files {} ({})".format(report["snapshot"], report["snapshot_time"])})
    return report
