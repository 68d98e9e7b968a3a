"""sql-replica: wait for the primary, seed from a GTID-positioned dump, replicate with MASTER_USE_GTID.

Progress is kept in /var/lib/golden so that a reboot mid-seed converges without redoing finished work:
  sql-replica.seeding   written before the import: databases found with it present came from our seed;
  replica-seed.sql      the dump (0600); reused when complete, so a failed import does not dump again;
  sql-replica.seeded    written after the import: the data is in, only replication is left to set up.
A data directory holding databases without the `seeding` marker is never touched."""

from __future__ import annotations

import json
import re
import time
from typing import Iterable

from ..steps import Context, step
from ..system import CommandError, FirstbootError
from .mariadb import ENCRYPTION_CNF, MYSQL, mysql, rows, sql_str, user_databases, vertical

SEEDING = "/var/lib/golden/sql-replica.seeding"
SEEDED = "/var/lib/golden/sql-replica.seeded"
DUMP = "/var/lib/golden/replica-seed.sql"
CLIENT_CNF = "/var/lib/golden/replica-client.cnf"
DUMP_DONE = "-- Dump completed"


def _primary(ctx: Context):
    return ctx.get("mariadb.primary"), int(ctx.get("mariadb.primary_port") or ctx.get("mariadb.port", 3306))


def replication_configured(ctx: Context, status: dict) -> bool:
    return (status.get("Master_Host") == _primary(ctx)[0]
            and status.get("Using_Gtid", "").lower() == "slave_pos")


@step("sql-replica.wait-primary", roles=["sql-replica"], activate=["mariadb"],
      require=["mariadb.primary", "mariadb.replication_password"])
def wait_primary(ctx: Context) -> bool:
    """Wait, with backoff, until the primary accepts connections on its MariaDB port."""
    host, port = _primary(ctx)

    def probe() -> None:
        if not ctx.probe(host, port):
            raise ConnectionError(f"{host}:{port} refuses connections")

    ctx.retry(probe, f"waiting for primary {host}:{port}")
    ctx.log(f"primary {host}:{port} is up")
    return False


#: What the seed dump holds: every database with its GTID position. --flush-privileges: the dump writes the
#: accounts as rows of the mysql schema, which a server reads only at a FLUSH PRIVILEGES. Without it, a dump
#: taken while the primary's own first boot was between CREATE USER and GRANT made the replica replay the
#: GRANT for an account its import had not made live ("Can't find any matching row in the user table"), and
#: replication stopped for good (a clean-clone CI run under load).
DUMP_OPTIONS = ["--all-databases", "--flush-privileges", "--single-transaction", "--master-data=1", "--gtid",
                "--routines", "--events", "--triggers"]
#: The import stays out of the replica's binlog: it is the primary's history, not this server's. The dump
#: recreates the mysql schema's Aria tables and turns NO_ENGINE_SUBSTITUTION off: under an
#: enforce_storage_engine (hardened hosts) they would silently become InnoDB, so not for this session.
IMPORT_INIT = "--init-command=SET SESSION sql_log_bin=0, SESSION enforce_storage_engine=NULL"


def _dump_complete(ctx: Context) -> bool:
    text = ctx.read(DUMP)
    return text is not None and DUMP_DONE in text[-300:]


def _dump(ctx: Context) -> None:
    """Dump every database of the primary with its GTID position; retried while the primary is not ready
    (its replication account may not exist yet when both hosts boot together)."""
    host, port = _primary(ctx)
    user = ctx.get("mariadb.replication_user", "repl")
    tool = (ctx.image.get("release_vars") or {}).get("mariadb_dump", "mariadb-dump")
    # The password goes in a 0600 option file: never in argv, never in the environment.
    ctx.write(CLIENT_CNF, "[client]\npassword={}\n".format(ctx.get("mariadb.replication_password")), 0o600)
    argv = [tool, "--defaults-extra-file=" + CLIENT_CNF, "--host=" + host, f"--port={port}",
            "--user=" + user] + DUMP_OPTIONS

    def attempt() -> None:
        ctx.write(DUMP, "", 0o600)
        ctx.run(argv, stdout_path=ctx.path(DUMP))
        if not _dump_complete(ctx):
            raise FirstbootError(f"{tool} stopped before the end of the dump")
        with open(ctx.path(DUMP), encoding="utf-8", errors="replace") as handle:
            created, torn = dumped_databases(handle)
        if "mysql" not in created:
            # MariaDB's dump with --single-transaction --master-data needs no RELOAD: an account between CREATE
            # USER and GRANT dumps "successfully" a GTID position and nothing else, and the replica then fails
            # to replay that GRANT ("Can't find any matching row in the user table").
            raise FirstbootError(f"the dump holds no mysql schema: {user} had no privileges yet on the primary "
                                 "(between its CREATE USER and GRANT)")
        if torn:
            raise FirstbootError("the dump uses database {} without creating it: made on the primary while it "
                                 "was dumped".format(", ".join(torn)))

    try:
        ctx.retry(attempt, f"dumping the primary {host}", retry_on=(CommandError, FirstbootError))
    finally:
        ctx.remove(CLIENT_CNF)


def _seed(ctx: Context) -> None:
    databases = user_databases(ctx)
    if databases and not ctx.exists(SEEDING):
        raise FirstbootError(
            "the data directory holds databases golden-firstboot did not seed ({}): not touching them"
            .format(", ".join(databases)),
            hint="to seed from the primary, back them up and drop them, then `golden-firstboot --rerun`")
    if databases:
        ctx.log("an earlier seed stopped half-way (databases: {}): importing again over it".format(
            ", ".join(databases)))
    ctx.write(SEEDING, json.dumps({"primary": _primary(ctx)[0], "started": time.time()}) + "\n", 0o600)
    for attempt in range(1, SEED_ATTEMPTS + 1):
        if _dump_complete(ctx):
            ctx.log("reusing the complete dump " + DUMP)
        else:
            _dump(ctx)
        if rows(ctx, "SELECT @@GLOBAL.gtid_binlog_pos;\n") not in ([], [[""]]):
            # Our own binlog must not carry GTIDs the primary does not know, or gtid_slave_pos is refused.
            # It holds nothing but this server's empty start: there are no user databases yet.
            ctx.log("clearing this replica's own binary log before taking the primary's GTID position")
            mysql(ctx, "RESET MASTER;\n")
        try:
            ctx.run(MYSQL + [IMPORT_INIT], stdin_path=ctx.path(DUMP))
            break
        except CommandError as exc:
            # A dump the server refuses is not reused: the next attempt (or run) takes a new one (a torn dump,
            # torn_databases, is caught before; this is for what is not known yet).
            where = failed_statement(ctx, exc.stderr_tail)
            ctx.log(f"the primary's dump did not import (attempt {attempt} of {SEED_ATTEMPTS}){where}")
            _discard_dump(ctx)
            if attempt == SEED_ATTEMPTS:
                raise
            ctx.log("dumping the primary again")
    ctx.write(SEEDED, json.dumps({"primary": _primary(ctx)[0], "finished": time.time()}) + "\n", 0o600)


def dumped_databases(lines: Iterable[str]) -> tuple[set[str], list[str]]:
    """The databases the dump creates, and those it switches to (`USE`) before any `CREATE DATABASE` of theirs.
    --all-databases lists the databases twice, for the tables and again for the views (MariaDB's mysql.user is
    a view): one that became visible between the two lists (made on the primary, or granted to the dumping
    account) gets only `USE`, and the import stops with "ERROR 1049 Unknown database"."""
    created: set[str] = set()
    torn: list[str] = []
    for line in lines:
        if line.startswith("CREATE DATABASE ") or line.startswith("USE "):
            found = re.search(r"`((?:[^`]|``)+)`", line)
            if not found:
                continue
            name = found.group(1).replace("``", "`")
            if line.startswith("CREATE DATABASE "):
                created.add(name)
            elif name not in created and name not in torn:
                torn.append(name)
    return created, torn


#: Dump and import attempts in one run: a dump taken while the primary changes its schema can be refused.
SEED_ATTEMPTS = 3
#: Statements of a dump that carry no row data (and so no secret): the ones failed_statement may quote.
SAFE_STATEMENT = re.compile(r"^(USE |CREATE DATABASE |ALTER DATABASE |DROP TABLE |CREATE TABLE |-- )")


def failed_statement(ctx: Context, stderr: str) -> str:
    """Where the import stopped, for the log: the dump's line (only a statement that carries no data, else its
    first word) and the database part it is in. The dump holds rows and password hashes: nothing else is read
    out."""
    found = re.search(r"at line (\d+)", stderr or "")
    if not found:
        return ""
    number, part, text = int(found.group(1)), "", None
    try:
        with open(ctx.path(DUMP), encoding="utf-8", errors="replace") as handle:
            for index, line in enumerate(handle, 1):
                if line.startswith("-- Current Database: "):
                    part = line[len("-- Current Database: "):].strip()
                if index == number:
                    text = line.strip()
                    break
    except OSError:
        return ""
    if text is None:
        return ""
    shown = text[:120] if SAFE_STATEMENT.match(text) else (text.split() or ["(empty)"])[0] + " ..."
    return f": line {number} is {shown!r}" + (", in database " + part if part else ", before any database")


def _discard_dump(ctx: Context) -> bool:
    """Remove the seed dump; on a server that encrypts its data at rest, overwrite it first: it holds every
    row in clear, and removing it alone leaves them in the file system's free blocks."""
    if not ctx.exists(DUMP):
        return False
    if ctx.exists(ENCRYPTION_CNF):
        ctx.run(["shred", "--zero", "--iterations=0", "--remove", DUMP])
    ctx.remove(DUMP)
    return True


@step("sql-replica.seed", roles=["sql-replica"], activate=["mariadb"],
      require=["mariadb.primary", "mariadb.replication_password"])
def seed(ctx: Context) -> bool:
    """Seed from the primary and point replication at it, unless that is already done."""
    status = vertical(ctx, "SHOW SLAVE STATUS")
    if replication_configured(ctx, status):
        return _discard_dump(ctx)  # left by a run that stopped right after setting up replication
    if ctx.exists(SEEDED):
        ctx.log("seed already imported; setting up replication")
    else:
        _seed(ctx)
    host, port = _primary(ctx)
    # STOP SLAVE only when some replication exists: on a fresh server it is an error.
    mysql(ctx, ("STOP SLAVE;\n" if status else "") + (
        "CHANGE MASTER TO MASTER_HOST={}, MASTER_PORT={}, MASTER_USER={}, MASTER_PASSWORD={}, "
        "MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=10;\n"
        "START SLAVE;\n").format(sql_str(host), port, sql_str(ctx.get("mariadb.replication_user", "repl")),
                                 sql_str(ctx.get("mariadb.replication_password"))))
    ctx.remove(SEEDING)
    _discard_dump(ctx)
    ctx.log(f"replicating from {host}:{port} (GTID slave_pos)")
    return True


@step("sql-replica.replication-running", roles=["sql-replica"], activate=["mariadb"],
      require=["mariadb.primary"])
def replication_running(ctx: Context) -> bool:
    """Both replication threads run: start them if stopped, then wait for Yes/Yes."""
    status = vertical(ctx, "SHOW SLAVE STATUS")
    if status.get("Slave_IO_Running") == "Yes" and status.get("Slave_SQL_Running") == "Yes":
        return False
    changed = False
    if status.get("Slave_IO_Running") == "No" or status.get("Slave_SQL_Running") == "No":
        mysql(ctx, "START SLAVE;\n")
        changed = True

    def check() -> None:
        now = vertical(ctx, "SHOW SLAVE STATUS")
        if now.get("Slave_IO_Running") != "Yes" or now.get("Slave_SQL_Running") != "Yes":
            raise FirstbootError("IO thread {}, SQL thread {}{}{}".format(
                now.get("Slave_IO_Running", "?"), now.get("Slave_SQL_Running", "?"),
                ": " + now["Last_IO_Error"] if now.get("Last_IO_Error") else "",
                ": " + now["Last_SQL_Error"] if now.get("Last_SQL_Error") else ""))

    ctx.retry(check, "waiting for both replication threads", retry_on=(FirstbootError,))
    return changed


STEPS = [wait_primary, seed, replication_running]
