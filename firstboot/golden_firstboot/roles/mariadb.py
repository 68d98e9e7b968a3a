"""What the sql-primary, sql-replica and sql-galera roles share: SQL through the root socket, accounts that are
compared before they are changed, and the host's own server_id and address."""

from __future__ import annotations

import ipaddress

from ..services import restart, wait_serving
from ..steps import Context, step

SQL_ROLES = ("sql-primary", "sql-replica", "sql-galera")
HOST_CNF = "/etc/mysql/mariadb.conf.d/61-golden-host.cnf"
# Installed by hardened first boot: this server encrypts its data at rest.
ENCRYPTION_CNF = "/etc/mysql/mariadb.conf.d/70-golden-encryption.cnf"
SYSTEM_SCHEMAS = ("mysql", "information_schema", "performance_schema", "sys")
# Root logs in through the unix socket (Debian's default): no password anywhere.
MYSQL = ["mysql", "--protocol=socket", "--user=root", "--batch", "--skip-column-names"]


def sql_str(value: object) -> str:
    """A SQL string literal (default sql_mode: backslashes escape)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


def sql_ident(name: str) -> str:
    return "`" + str(name).replace("`", "``") + "`"


def mysql(ctx: Context, sql: str) -> str:
    """Run SQL as root; statements and their secrets go through stdin, never argv."""
    return ctx.run(MYSQL, input=sql).stdout


def rows(ctx: Context, sql: str) -> list[list[str]]:
    return [line.split("\t") for line in mysql(ctx, sql).splitlines() if line.strip()]


def vertical(ctx: Context, sql: str) -> dict[str, str]:
    """The first row of a `\\G` query (SHOW SLAVE STATUS) as a dict; empty when there is no row."""
    out: dict[str, str] = {}
    # --skip-column-names would drop the names from \\G output too: this query keeps them
    argv = [a for a in MYSQL if a != "--skip-column-names"]
    text = ctx.run(argv, input=sql.rstrip().rstrip(";") + "\\G\n").stdout
    for line in text.splitlines():
        if ":" in line and not line.startswith("*"):
            key, _, value = line.partition(":")
            out[key.strip()] = value.strip()
    return out


def user_databases(ctx: Context) -> list[str]:
    names = ", ".join(sql_str(s) for s in SYSTEM_SCHEMAS)
    return [r[0] for r in rows(ctx, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA "
                                    f"WHERE SCHEMA_NAME NOT IN ({names}) ORDER BY 1;\n")]


def client_host(ctx: Context, explicit: str | None = None) -> str:
    """The account host part: explicit, else the cluster network in MariaDB's ip/netmask form, else '%'."""
    if explicit:
        return explicit
    network = ctx.get("network")
    if not network:
        return "%"
    net = ipaddress.ip_network(network, strict=False)
    return f"{net.network_address}/{net.netmask}"


def ensure_account(ctx: Context, user: str, host: str, password: str, grant_check: str, grant: str) -> bool:
    """Create the account, set its password, grant its privileges: each only when the server lacks it.

    grant_check is a SQL condition over mysql.user/mysql.db that holds when the grant is in place."""
    account = f"{sql_str(user)}@{sql_str(host)}"
    who = f"User = {sql_str(user)} AND Host = {sql_str(host)}"
    state = rows(ctx, (
        f"SELECT (SELECT COUNT(*) FROM mysql.user WHERE {who}),"
        f" (SELECT COUNT(*) FROM mysql.user WHERE {who} AND Password = PASSWORD({sql_str(password)})),"
        f" ({grant_check});\n"))
    exists, password_ok, granted = (int(v) for v in state[0])
    statements = []
    if not exists:
        statements.append(f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {sql_str(password)};")
    elif not password_ok:
        statements.append(f"ALTER USER {account} IDENTIFIED BY {sql_str(password)};")
    if not granted:
        statements.append(f"GRANT {grant} TO {account};")
    if not statements:
        return False
    ctx.log("account {}@{}: {}".format(user, host, ", ".join(s.split(" ")[0].lower() for s in statements)))
    mysql(ctx, "\n".join(statements) + "\n")
    return True


def answers(ctx: Context) -> None:
    """MariaDB takes SQL through its socket (CommandError while it does not)."""
    ctx.run(MYSQL, input="SELECT 1;\n")


def restart_mariadb(ctx: Context, why: str) -> None:
    """Restart MariaDB and wait until it takes SQL again; a restart that fails on a slow host is retried."""
    restart(ctx, "mariadb", why, lambda: answers(ctx))


@step("mariadb.running", roles=SQL_ROLES)
def running(ctx: Context) -> bool:
    """MariaDB enabled and running (restarted when it failed at boot), answering SQL on its socket."""
    return wait_serving(ctx, ["mariadb"], lambda: answers(ctx), "waiting for MariaDB to answer on its socket")


def render_host_cnf(ctx: Context) -> str:
    address = ctx.get("address")
    lines = [
        "# goldenimage first boot: this host's identity and address (written by golden-firstboot).",
        "[mysqld]",
        "server_id    = {}".format(int(ctx.get("mariadb.server_id"))),
        f"bind-address = {address}",
        "port         = {}".format(int(ctx.get("mariadb.port", 3306))),
        f"report_host  = {address}",
    ]
    expire_days = ctx.get("mariadb.binlog_expire_days")
    if expire_days is not None:  # the image's setting (an overlay's included) over 60-golden.cnf's default
        lines.append(f"expire_logs_days = {int(expire_days)}")
    return "\n".join(lines) + "\n"


@step("mariadb.host-config", roles=SQL_ROLES, activate=["mariadb"],
      require=["address", "mariadb.server_id"])
def host_config(ctx: Context) -> bool:
    """server_id and bind-address for this host; restart MariaDB when they change."""
    if not ctx.write(HOST_CNF, render_host_cnf(ctx)):
        return False
    restart_mariadb(ctx, "server_id or bind-address changed")
    return True


FIRST = [running]
STEPS = [host_config]
