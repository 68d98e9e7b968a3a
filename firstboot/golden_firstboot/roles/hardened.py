"""hardened: MariaDB encryption at rest with a key made on this host (when a sql role is present), and the
AIDE database initialised in the background once everything else is configured."""

from __future__ import annotations

import binascii
import hashlib
import os
import secrets

from ..steps import Context, step
from ..system import SettingsError
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


BEFORE_MARIADB = [mariadb_keyfile, mariadb_encryption]
LAST = [grub_password, aide_init]
