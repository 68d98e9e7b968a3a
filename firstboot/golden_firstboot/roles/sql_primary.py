"""sql-primary: the replication account (password from the host settings, never baked), databases and
application users from the settings. A Galera node runs the databases and users steps too, once Synced: Galera
replicates them, and each step compares before it acts."""

from __future__ import annotations

from ..steps import Context, step
from ..system import HOST, SettingsError
from .mariadb import client_host, ensure_account, mysql, sql_ident, sql_str, user_databases

# What a replica needs: the replication stream, and enough to seed itself with a consistent dump.
REPLICATION_GRANT = ("REPLICATION SLAVE, REPLICATION CLIENT, SELECT, RELOAD, LOCK TABLES, SHOW VIEW, EVENT, "
                     "TRIGGER ON *.*")


@step("sql-primary.replication-user", roles=["sql-primary"], activate=["mariadb.replication_password"],
      require=["mariadb.replication_user"])
def replication_user(ctx: Context) -> bool:
    """The account replicas connect and seed with, limited to the cluster network."""
    user = ctx.get("mariadb.replication_user")
    host = client_host(ctx, ctx.get("mariadb.replication_host"))
    who = f"User = {sql_str(user)} AND Host = {sql_str(host)}"
    check = (f"SELECT COUNT(*) FROM mysql.user WHERE {who} AND Repl_slave_priv = 'Y' AND Select_priv = 'Y' "
             "AND Reload_priv = 'Y'")
    return ensure_account(ctx, user, host, ctx.get("mariadb.replication_password"), check, REPLICATION_GRANT)


@step("sql-primary.databases", roles=["sql-primary", "sql-galera"], activate=["mariadb.databases"])
def databases(ctx: Context) -> bool:
    """Create the databases the settings name that the server does not have yet."""
    wanted = [str(d) for d in ctx.get("mariadb.databases") or []]
    present = set(user_databases(ctx))
    missing = [d for d in wanted if d not in present]
    if not missing:
        return False
    mysql(ctx, "".join(f"CREATE DATABASE IF NOT EXISTS {sql_ident(d)};\n" for d in missing))
    ctx.log("created databases: " + ", ".join(missing))
    return True


@step("sql-primary.users", roles=["sql-primary", "sql-galera"], activate=["mariadb.users"])
def users(ctx: Context) -> bool:
    """Application accounts, each with all privileges on its own database."""
    changed = False
    for index, spec in enumerate(ctx.get("mariadb.users") or []):
        for key in ("name", "password", "database"):
            if not spec.get(key):
                raise SettingsError(f"{HOST}: mariadb.users[{index}].{key}: missing",
                                    hint="each user needs name, password and database")
        host = client_host(ctx, spec.get("host"))
        who = "User = {} AND Host = {}".format(sql_str(spec["name"]), sql_str(host))
        check = "SELECT COUNT(*) FROM mysql.db WHERE {} AND Db = {}".format(who, sql_str(spec["database"]))
        grant = "ALL PRIVILEGES ON {}.*".format(sql_ident(spec["database"]))
        changed = ensure_account(ctx, spec["name"], host, spec["password"], check, grant) or changed
    return changed


STEPS = [replication_user, databases, users]
