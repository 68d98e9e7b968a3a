"""hardened: MariaDB encryption at rest with a key made on this host (when a sql role is present), and the
AIDE database initialised in the background once everything else is configured."""

from __future__ import annotations

import binascii
import os

from ..steps import Context, step
from .mariadb import SQL_ROLES, restart_mariadb

KEY_DIR = "/etc/mysql/encryption"
KEY_FILE = KEY_DIR + "/keyfile"
ENCRYPTION_SRC = "/etc/golden/mariadb/70-golden-encryption.cnf"
ENCRYPTION_CNF = "/etc/mysql/mariadb.conf.d/70-golden-encryption.cnf"
AIDE_DB = "/var/lib/aide/aide.db"
AIDE_UNIT = "golden-aide-init"


def new_keyfile(random_bytes=os.urandom) -> str:
    """file_key_management's format: `ID;HEX` per line; key 1 is the default key, 256 bits."""
    return f"1;{binascii.hexlify(random_bytes(32)).decode()}\n"


def _with_sql(ctx: Context) -> bool:
    return bool(set(SQL_ROLES) & set(ctx.roles))


@step("hardened.mariadb-keyfile", roles=["hardened"], when=_with_sql)
def mariadb_keyfile(ctx: Context) -> bool:
    """This host's own encryption key: made once and never replaced (the data would be lost with it)."""
    changed = False
    directory = ctx.path(KEY_DIR)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o750)
        changed = True
    if (os.stat(directory).st_mode & 0o777) != 0o750:
        os.chmod(directory, 0o750)
        changed = True
    existing = ctx.read(KEY_FILE)
    if existing and existing.startswith("1;"):
        if (os.stat(ctx.path(KEY_FILE)).st_mode & 0o777) != 0o400:
            os.chmod(ctx.path(KEY_FILE), 0o400)
            changed = True
    else:
        ctx.write(KEY_FILE, new_keyfile(), 0o400)
        ctx.log("made a new MariaDB encryption key in " + KEY_FILE)
        changed = True
    if changed:
        ctx.chown(directory, "root", "mysql")
        ctx.chown(ctx.path(KEY_FILE), "mysql", "mysql")
    return changed


@step("hardened.mariadb-encryption", roles=["hardened"], when=_with_sql)
def mariadb_encryption(ctx: Context) -> bool:
    """Install the baked encryption settings beside the key, then restart MariaDB to use them."""
    source = ctx.read(ENCRYPTION_SRC)
    if source is None:
        ctx.log(f"{ENCRYPTION_SRC} is not in this image: MariaDB encryption is not part of its profile")
        return False
    if not ctx.write(ENCRYPTION_CNF, source):
        return False
    restart_mariadb(ctx, "encryption at rest enabled")
    return True


@step("hardened.aide-init", roles=["hardened"], activate=["hardened.aide_init"])
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


BEFORE_MARIADB = [mariadb_keyfile, mariadb_encryption]
LAST = [aide_init]
