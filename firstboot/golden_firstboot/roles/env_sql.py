"""env (the SQL writer): each environment's databases NAME_1..NAME_N and its account NAME, with every right on
the databases under its own prefix (`NAME\\_%`): the self-service rights a customer has, to create more.

The password is made here, once, and kept on the writer (/var/lib/golden/env/NAME.password, root 0600):
`golden env apply` reads it back to write the sites' database.ini, so no secret lives on the operator's
machine. All of a batch's statements go to MariaDB in one session; a Galera cluster replicates them."""

from __future__ import annotations

import os
import secrets
from typing import Any

from ..steps import Context
from ..system import FirstbootError
from .mariadb import mysql, rows, sql_ident, sql_str

STATE_DIR = "/var/lib/golden/env"


def password_file(name: str) -> str:
    return f"{STATE_DIR}/{name}.password"


def grant_pattern(name: str) -> str:
    """The grant's database pattern: NAME, then a literal '_' (escaped: '_' alone matches any character)."""
    return name + "\\_%"


def database_names(env: dict[str, Any]) -> list[str]:
    return ["{}_{}".format(env["name"], i) for i in range(1, env["databases"] + 1)]


def password(ctx: Context, name: str, check: bool) -> str:
    """The environment's password: the one kept on this host, else a new one (kept unless checking)."""
    current = (ctx.read(password_file(name)) or "").strip()
    if current:
        return current
    new = secrets.token_urlsafe(24)
    if not check:
        os.makedirs(ctx.path(STATE_DIR), mode=0o700, exist_ok=True)
        ctx.write(password_file(name), new + "\n", 0o600)
    return new


def current_state(ctx: Context, names: list[str], host: str) -> dict[str, set[str]]:
    """What the server has of these environments: databases, accounts, accounts whose grant is in place."""
    if not names:
        return {"databases": set(), "accounts": set(), "granted": set()}
    listed = ", ".join(sql_str(n) for n in names)
    found = rows(ctx, (
        "SELECT 'db', SCHEMA_NAME FROM information_schema.SCHEMATA;\n"
        f"SELECT 'user', User FROM mysql.user WHERE Host = {sql_str(host)} AND User IN ({listed});\n"
        f"SELECT 'grant', User FROM mysql.db WHERE Host = {sql_str(host)} AND User IN ({listed}) "
        "AND Db = CONCAT(User, '\\\\_%') "
        "AND Create_priv = 'Y' AND Drop_priv = 'Y' AND Select_priv = 'Y';\n"))
    state: dict[str, set[str]] = {"databases": set(), "accounts": set(), "granted": set()}
    key = {"db": "databases", "user": "accounts", "grant": "granted"}
    for row in found:
        if len(row) == 2 and row[0] in key:
            state[key[row[0]]].add(row[1])
    return state


def password_ok(ctx: Context, host: str, passwords: dict[str, str]) -> set[str]:
    """The accounts whose password is already the kept one."""
    if not passwords:
        return set()
    query = "".join(f"SELECT User FROM mysql.user WHERE User = {sql_str(n)} AND Host = {sql_str(host)} "
                    f"AND Password = PASSWORD({sql_str(p)});\n" for n, p in sorted(passwords.items()))
    return {row[0] for row in rows(ctx, query) if row}


def apply_sql(ctx: Context, data: dict[str, Any], check: bool = False, prune_removed: bool = False,
              dump_dir: str = "/var/lib/golden/env-archive") -> dict[str, Any]:
    """Bring the writer's environment databases and accounts to `data`; the report carries each password for
    golden to hand to the web nodes (never logged)."""
    host = data["db_host"]
    envs = data["environments"]
    names = [env["name"] for env in envs]
    kept = {env["name"]: password(ctx, env["name"], check) for env in envs}
    ctx.runner.secrets.extend(kept.values())
    state = current_state(ctx, names, host)
    existing = [n for n in names if n in state["accounts"]]
    good = password_ok(ctx, host, {n: kept[n] for n in existing})
    statements = []
    changes = []
    unchanged = []
    for env in envs:
        name = env["name"]
        account = f"{sql_str(name)}@{sql_str(host)}"
        mine = []
        for db in database_names(env):
            if db not in state["databases"]:
                mine.append(f"CREATE DATABASE IF NOT EXISTS {sql_ident(db)};")
        if name not in state["accounts"]:
            mine.append(f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {sql_str(kept[name])};")
        elif name not in good:
            mine.append(f"ALTER USER {account} IDENTIFIED BY {sql_str(kept[name])};")
        if name not in state["granted"]:
            mine.append(f"GRANT ALL PRIVILEGES ON {sql_ident(grant_pattern(name))}.* TO {account};")
        if mine:
            changes.append("environment {}: {}".format(name, ", ".join(
                " ".join(s.split(" ")[:2]).lower() for s in mine)))
            statements.extend(mine)
        else:
            unchanged.append(name)
    for line in changes:
        ctx.log(("would " if check else "") + line)
    if statements and not check:
        mysql(ctx, "\n".join(statements) + "\n")
    removed = undeclared(ctx, set(names))
    if prune_removed:
        for name in removed:
            changes.append(f"dump and drop environment {name}")
            if not check:
                drop(ctx, name, host, dump_dir)
    return {"changed": len(changes), "changes": changes, "unchanged": unchanged, "failed": {},
            "removed": removed if prune_removed else [], "undeclared": [] if prune_removed else removed,
            "credentials": kept}


def undeclared(ctx: Context, wanted: set[str]) -> list[str]:
    """Environments this writer made (a kept password) that the batch no longer declares."""
    folder = ctx.path(STATE_DIR)
    return sorted(entry[:-len(".password")] for entry in (os.listdir(folder) if os.path.isdir(folder) else [])
                  if entry.endswith(".password") and entry[:-len(".password")] not in wanted)


def drop(ctx: Context, name: str, host: str, dump_dir: str) -> None:
    """A final dump of every database under the environment's prefix, then the databases and the account go."""
    dbs = [r[0] for r in rows(ctx, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE "
                                   f"{sql_str(grant_pattern(name))};\n")]
    os.makedirs(ctx.path(dump_dir), mode=0o700, exist_ok=True)
    if dbs:
        dump = f"{dump_dir}/{name}-databases.sql"
        result = ctx.run(["mysqldump", "--single-transaction", "--routines", "--events", "--databases"] + dbs,
                         stdout_path=ctx.path(dump), check=False)
        if result.returncode != 0:
            raise FirstbootError(f"environment {name}: the final dump failed: nothing dropped")
    mysql(ctx, "".join(f"DROP DATABASE IF EXISTS {sql_ident(db)};\n" for db in dbs)
          + f"DROP USER IF EXISTS {sql_str(name)}@{sql_str(host)};\n")
    ctx.remove(password_file(name))
