"""hardened: MariaDB encryption at rest with a key made on this host, or the Galera cluster's key (when a sql
role is present), and the AIDE database initialised in the background once everything else is configured.

Encryption at rest, in three steps: the key (made once, never replaced), the settings (installed, MariaDB
restarted until the server runs with every one of them), then what was on disk before them: InnoDB
tablespaces rotated (waited for), the mysql schema's Aria tables rebuilt, binary logs written in clear purged."""

from __future__ import annotations

import binascii
import hashlib
import json
import os
import re
import secrets
import time

from ..steps import Context, step
from ..system import FirstbootError, SettingsError
from .mariadb import ENCRYPTION_CNF, SQL_ROLES, mysql, restart_mariadb, rows, sql_ident, sql_str

KEY_DIR = "/etc/mysql/encryption"
KEY_FILE = KEY_DIR + "/keyfile"
ENCRYPTION_SRC = "/etc/golden/mariadb/70-golden-encryption.cnf"
# file_key_management: one `ID;HEX` line per key, AES-128, -192 or -256; key 1 is the default key.
KEY_LINE = re.compile(r"^([0-9]+);([0-9a-fA-F]{32}|[0-9a-fA-F]{48}|[0-9a-fA-F]{64})$")
SETTING_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# Options of the cnf that are not server variables, so not checked against the running server.
NOT_VARIABLES = ("plugin_load_add", "plugin_load")
ARIA_REBUILT = "/var/lib/golden/mariadb-aria-encrypted.json"
AIDE_DB = "/var/lib/aide/aide.db"
AIDE_UNIT = "golden-aide-init"


def new_keyfile(random_bytes=os.urandom) -> str:
    """file_key_management's format: `ID;HEX` per line; key 1 is the default key, 256 bits."""
    return f"1;{binascii.hexlify(random_bytes(32)).decode()}\n"


def keyfile_problem(text: str) -> str | None:
    """What makes text unusable as file_key_management's key file, or None when it is a good one."""
    ids = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = KEY_LINE.match(line)
        if not match:
            return "a line is not ID;KEY (a key id, then 32, 48 or 64 hex digits)"
        ids.append(int(match.group(1)))
    return None if 1 in ids else "no key 1 (the default key MariaDB encrypts with)"


def _with_sql(ctx: Context) -> bool:
    return bool(set(SQL_ROLES) & set(ctx.roles))


def _mode(ctx: Context, absolute: str) -> int:
    return os.stat(ctx.path(absolute)).st_mode & 0o777


@step("hardened.mariadb-keyfile", roles=["hardened"], when=_with_sql)
def mariadb_keyfile(ctx: Context) -> bool:
    """This host's own encryption key: made once, when there is none, and never replaced (the data would be
    lost with it). A Galera node takes its cluster's key (galera.encryption_key) instead: a state transfer
    copies the donor's encrypted files, which only the same key reads."""
    cluster_key = ctx.get("galera.encryption_key")
    if cluster_key is not None and (not KEY_LINE.match("1;" + str(cluster_key)) or "\n" in str(cluster_key)):
        raise SettingsError("host.json: galera.encryption_key: not a key of 32, 48 or 64 hex digits",
                            hint="golden cluster render writes it; render the cluster again")
    changed = False
    if not os.path.isdir(ctx.path(KEY_DIR)):
        os.makedirs(ctx.path(KEY_DIR), 0o750)
        changed = True
    if _mode(ctx, KEY_DIR) != 0o750:
        os.chmod(ctx.path(KEY_DIR), 0o750)
        changed = True
    existing = ctx.read(KEY_FILE)
    if existing is None:
        if ctx.exists(ENCRYPTION_CNF):
            raise FirstbootError(
                f"{KEY_FILE} is missing, but MariaDB's data is encrypted with it ({ENCRYPTION_CNF} is installed)",
                hint="restore the key file from this host's backup; a new key cannot read the data")
        if cluster_key is not None:
            ctx.write(KEY_FILE, f"1;{str(cluster_key).lower()}\n", 0o400)
            ctx.log("installed the Galera cluster's MariaDB encryption key in " + KEY_FILE)
        else:
            ctx.write(KEY_FILE, new_keyfile(), 0o400)
            ctx.log("made a new MariaDB encryption key in " + KEY_FILE)
        changed = True
    else:
        problem = keyfile_problem(existing)
        if problem:
            raise FirstbootError(f"{KEY_FILE}: {problem}",
                                 hint="the key is never replaced by golden-firstboot: restore it from this host's "
                                      "backup, then `golden-firstboot --rerun`")
        if cluster_key is not None and existing.strip().lower() != f"1;{str(cluster_key).lower()}":
            raise FirstbootError(f"{KEY_FILE} is not the Galera cluster's key (galera.encryption_key)",
                                 hint="the key is never replaced by golden-firstboot: this node's data may be "
                                      "encrypted with it; a node that joins with another key cannot read what a "
                                      "state transfer copies (boot a fresh node, or restore the cluster's key)")
        if _mode(ctx, KEY_FILE) != 0o400:
            os.chmod(ctx.path(KEY_FILE), 0o400)
            changed = True
    if changed:
        ctx.chown(ctx.path(KEY_DIR), "root", "mysql")
        ctx.chown(ctx.path(KEY_FILE), "mysql", "mysql")
    return changed


def encryption_settings(cnf: str) -> dict[str, str]:
    """The server variables an option file sets, name -> value (names with `_`, never `-`)."""
    settings = {}
    for raw in cnf.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("[") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        name = name.strip().lower().replace("-", "_")
        if name in NOT_VARIABLES:
            continue
        if not SETTING_NAME.match(name):
            raise FirstbootError(f"{ENCRYPTION_SRC}: {name!r} is not an option name",
                                 hint="this image's encryption settings are damaged: rebuild it")
        settings[name] = value.strip()
    return settings


def _same(wanted: str, actual: str) -> bool:
    booleans = {"on": "1", "true": "1", "off": "0", "false": "0"}
    return booleans.get(wanted.lower(), wanted.lower()) == booleans.get(actual.lower(), actual.lower())


def settings_not_in_effect(ctx: Context, wanted: dict[str, str]) -> list[str]:
    """The settings the running server does not have, as `name = wanted (server: actual)`."""
    names = ", ".join(sql_str(name.upper()) for name in sorted(wanted))
    actual = {r[0].lower(): r[1] if len(r) > 1 else "" for r in rows(
        ctx, f"SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES "
             f"WHERE VARIABLE_NAME IN ({names});\n")}
    return [f"{name} = {value} (server: {actual.get(name, 'unset')})" for name, value in sorted(wanted.items())
            if name not in actual or not _same(value, actual[name])]


@step("hardened.mariadb-encryption", roles=["hardened"], when=_with_sql)
def mariadb_encryption(ctx: Context) -> bool:
    """Install the baked encryption settings beside the key; restart MariaDB until it runs with all of them."""
    source = ctx.read(ENCRYPTION_SRC)
    if source is None:
        ctx.log(f"{ENCRYPTION_SRC} is not in this image: MariaDB encryption is not part of its profile")
        return False
    wanted = encryption_settings(source)
    changed = ctx.write(ENCRYPTION_CNF, source)
    if changed:
        restart_mariadb(ctx, "encryption at rest enabled")
    elif settings_not_in_effect(ctx, wanted):
        # installed by an earlier run that stopped before the restart
        restart_mariadb(ctx, "encryption settings installed but not in effect")
        changed = True
    missing = settings_not_in_effect(ctx, wanted) if changed else []
    if missing:
        raise FirstbootError("MariaDB runs without its encryption settings: " + "; ".join(missing),
                             hint=f"another option file overrides {ENCRYPTION_CNF}? "
                                  "`my_print_defaults --mysqld` shows what the server reads")
    return changed


INNODB_PROGRESS = (
    # Every tablespace but the temporary one (encrypted page by page as it is written, never rotated), and
    # the system tablespace (undo logs, doublewrite buffer) whether or not INNODB_SYS_TABLESPACES lists it.
    "SELECT COUNT(*), COALESCE(SUM(e.ENCRYPTION_SCHEME = 1 AND e.MIN_KEY_VERSION > 0 "
    "AND e.ROTATING_OR_FLUSHING = 0), 0) "
    "FROM (SELECT 0 AS SPACE UNION SELECT SPACE FROM information_schema.INNODB_SYS_TABLESPACES "
    "WHERE NAME <> 'innodb_temporary') AS t "
    "LEFT JOIN information_schema.INNODB_TABLESPACES_ENCRYPTION AS e ON e.SPACE = t.SPACE;\n")


def wait_innodb_encrypted(ctx: Context) -> int:
    """Wait until the encryption threads have encrypted every InnoDB tablespace; how many there are."""
    found = {"total": 0}

    def check() -> None:
        total, encrypted = (int(v) for v in rows(ctx, INNODB_PROGRESS)[0])
        found["total"] = total
        if encrypted < total:
            raise FirstbootError(f"InnoDB: {encrypted} of {total} tablespaces encrypted")

    ctx.retry(check, "waiting for InnoDB to encrypt its tablespaces", retry_on=(FirstbootError,))
    return found["total"]


def encrypt_aria_system_tables(ctx: Context) -> list[str]:
    """Rebuild the mysql schema's Aria tables so that aria_encrypt_tables applies to them (it only encrypts
    tables as they are written anew): accounts, grants, routines, events, column statistics. Once per host."""
    if ctx.exists(ARIA_REBUILT):
        return []
    tables = [r[0] for r in rows(ctx, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
                                      "'mysql' AND ENGINE = 'Aria' AND ROW_FORMAT = 'Page' ORDER BY 1;\n")]
    if tables:
        # ALTER without ENGINE= is allowed by enforce_storage_engine; kept out of the binary log: this is
        # how this host stores its tables, not a change for its replicas.
        mysql(ctx, "SET SESSION sql_log_bin = 0;\n"
                   + "".join(f"ALTER TABLE mysql.{sql_ident(t)} FORCE;\n" for t in tables))
    ctx.write(ARIA_REBUILT, json.dumps({"tables": tables, "rebuilt": time.time()}) + "\n", 0o600)
    return tables


def _binlog_encrypted(ctx: Context, name: str) -> bool:
    # An encrypted binary log starts with Format_desc, then Start_encryption.
    return any(len(r) > 2 and r[2] == "Start_encryption"
               for r in rows(ctx, f"SHOW BINLOG EVENTS IN {sql_str(name)} LIMIT 2;\n"))


def purge_clear_binlogs(ctx: Context) -> list[str]:
    """Purge the binary logs written before encrypt_binlog was on (MariaDB's start at this boot); the
    current one was opened by the restart with the settings, so it is encrypted."""
    if rows(ctx, "SELECT @@GLOBAL.log_bin;\n") != [["1"]]:
        return []
    logs = [r[0] for r in rows(ctx, "SHOW BINARY LOGS;\n")]
    clear: list[str] = []
    for name in logs[:-1]:
        if _binlog_encrypted(ctx, name):
            break
        clear.append(name)
    if clear:
        mysql(ctx, f"PURGE BINARY LOGS TO {sql_str(logs[len(clear)])};\n")
    return clear


@step("hardened.mariadb-encrypted", roles=["hardened"], when=_with_sql)
def mariadb_encrypted(ctx: Context) -> bool:
    """Encrypt what was on disk before the key: InnoDB tablespaces (waited for), the mysql schema's Aria
    tables; purge binary logs written in clear."""
    if not ctx.exists(ENCRYPTION_CNF):
        return False
    tablespaces = wait_innodb_encrypted(ctx)
    rebuilt = encrypt_aria_system_tables(ctx)
    purged = purge_clear_binlogs(ctx)
    ctx.log("MariaDB encryption at rest: {} InnoDB tablespaces encrypted, redo log and temporary files too{}{}"
            .format(tablespaces, f"; {len(rebuilt)} Aria tables of the mysql schema rebuilt encrypted" if rebuilt
                    else "", "; purged binary logs written in clear: " + ", ".join(purged) if purged else ""))
    return bool(rebuilt or purged)


def _aide_wanted(ctx: Context) -> bool:
    # on by default (the image's settings say so); a host can turn it off with hardened.aide_init: false
    return bool(ctx.get("hardened.aide_init", True))


@step("hardened.aide-init", roles=["hardened"], when=_aide_wanted)
def aide_init(ctx: Context) -> bool:
    """Start AIDE's database initialisation as a transient unit: it takes minutes and must not hold boot."""
    if ctx.exists(AIDE_DB):
        return False
    if ctx.run(["systemctl", "is-active", "--quiet", AIDE_UNIT], check=False).returncode == 0:
        ctx.log(f"AIDE initialisation is still running ({AIDE_UNIT}.service)")
        return False
    # aideinit writes aide.db.new and, with -y -f, moves it into place as aide.db when done.
    ctx.run(["systemd-run", "--unit=" + AIDE_UNIT, "--description=goldenimage AIDE database initialisation",
             "--property=Nice=10", "--property=IOSchedulingClass=idle", "/usr/sbin/aideinit", "-y", "-f"])
    ctx.log(f"AIDE initialisation started in the background: journalctl -u {AIDE_UNIT}")
    return True


GRUB_HASH_FILE = "/etc/golden/grub-password.pbkdf2"
GRUB_PASSWORD_FILE = "/root/grub-password"
GRUB_ITERATIONS = 10000


def grub_pbkdf2(password: str, salt: bytes, iterations: int = GRUB_ITERATIONS) -> str:
    """The hash grub-mkpasswd-pbkdf2 prints: grub.pbkdf2.sha512.ITERATIONS.SALT.HASH, hex in upper case."""
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    salt_hex, digest_hex = binascii.hexlify(salt).decode().upper(), binascii.hexlify(digest).decode().upper()
    return f"grub.pbkdf2.sha512.{iterations}.{salt_hex}.{digest_hex}"


@step("hardened.grub-password", roles=["hardened"])
def grub_password(ctx: Context) -> bool:
    """GRUB's superuser password, per host: the operator's hash (settings hardened.grub_password_pbkdf2)
    or, without one, a random password kept for root in /root/grub-password. Booting needs no password
    (the menu entries are --unrestricted); editing entries and the GRUB shell do."""
    given = ctx.get("hardened.grub_password_pbkdf2")
    current = (ctx.read(GRUB_HASH_FILE) or "").strip()
    if given:
        if not str(given).startswith("grub.pbkdf2.sha512."):
            raise SettingsError("host.json: hardened.grub_password_pbkdf2: not a GRUB PBKDF2 hash",
                                hint="paste the output of grub-mkpasswd-pbkdf2 (grub.pbkdf2.sha512.N.SALT.HASH)")
        wanted = str(given).strip()
    elif current:
        return False
    else:
        password = secrets.token_urlsafe(18)
        wanted = grub_pbkdf2(password, os.urandom(64))
        ctx.write(GRUB_PASSWORD_FILE, password + "\n", 0o400)
        ctx.log("made a GRUB password for this host: root can read it in " + GRUB_PASSWORD_FILE)
    if wanted == current:
        return False
    ctx.write(GRUB_HASH_FILE, wanted + "\n", 0o400)
    ctx.run(["update-grub"])
    grub_cfg = ctx.path("/boot/grub/grub.cfg")
    if os.path.exists(grub_cfg):
        os.chmod(grub_cfg, 0o600)
    return True


BEFORE_MARIADB = [mariadb_keyfile, mariadb_encryption, mariadb_encrypted]
LAST = [grub_password, aide_init]
