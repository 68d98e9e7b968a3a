"""env (web nodes): one batch of environments on a web node, and what it makes before the sites: the account
(its group, www-data's membership, all in one usermod per batch), its tree and keys, and the site's link in
sites-enabled. env.py writes the pools and sites and runs the batch."""

from __future__ import annotations

import os
from typing import Any

from ..steps import Context
from ..system import FirstbootError, one_line
from .env_render import (
    GROUP,
    KEYS_DIR,
    NOLOGIN,
    SITES_ENABLED,
    STATE_DIR,
    render_db_ini,
)

#: The reloads a batch owes, one word a line, until they are done.
PENDING = STATE_DIR + "/.reloads"
RELOADS = ("apache", "fpm", "ssh")


def passwd_entries(ctx: Context) -> dict[str, list[str]]:
    """/etc/passwd as name -> fields."""
    out = {}
    for line in (ctx.read("/etc/passwd") or "").splitlines():
        fields = line.split(":")
        if len(fields) == 7:
            out[fields[0]] = fields
    return out


def group_members(ctx: Context) -> dict[str, list[str]]:
    out = {}
    for line in (ctx.read("/etc/group") or "").splitlines():
        fields = line.split(":")
        if len(fields) == 4:
            out[fields[0]] = [m for m in fields[3].split(",") if m]
    return out


def php_version(ctx: Context) -> str:
    php = (ctx.image.get("release_vars") or {}).get("php")
    if not php:
        raise FirstbootError("this image names no PHP version (image.json release_vars.php): no web node")
    return str(php)


class Batch:
    """One batch on one web node: what changed, what failed, and the reloads it owes at the end."""

    def __init__(self, ctx: Context, data: dict[str, Any], check: bool) -> None:
        self.ctx = ctx
        self.data = data
        self.root = data["root"]
        self.check = check
        self.changes: list[str] = []
        self.failed: dict[str, str] = {}
        self.unchanged: list[str] = []
        # Reloads a batch owes are kept on the host until done: a batch that stops (a failed test, a kill)
        # after writing its files leaves nothing to compare, and the next one still reloads.
        self.owed: set[str] = set((ctx.read(PENDING) or "").split()) & set(RELOADS)
        self.passwd = passwd_entries(ctx)
        self.groups = group_members(ctx)
        #: The environments' groups www-data joins at the end of the batch (one usermod for all of them).
        self.readers: list[str] = []

    def owe(self, *reloads: str) -> None:
        if self.check or set(reloads) <= self.owed:
            self.owed |= set(reloads)
            return
        self.owed |= set(reloads)
        os.makedirs(self.ctx.path(STATE_DIR), mode=0o700, exist_ok=True)
        self.ctx.write(PENDING, "".join(r + "\n" for r in sorted(self.owed)), 0o600)

    def change(self, what: str) -> None:
        self.changes.append(what)
        self.ctx.log(("would " if self.check else "") + what)

    def run(self, argv: list[str]) -> None:
        if not self.check:
            self.ctx.run(argv)

    def write(self, path: str, content: str, mode: int = 0o644) -> bool:
        """Whether the file differs; written unless checking."""
        current = self.ctx.read(path)
        real = self.ctx.path(path)
        same_mode = os.path.exists(real) and (os.stat(real).st_mode & 0o7777) == mode
        if current == content and same_mode:
            return False
        if not self.check:
            os.makedirs(os.path.dirname(real), exist_ok=True)
            self.ctx.write(path, content, mode)
        return True

    def directory(self, path: str, mode: int, owner: str, group: str) -> bool:
        real = self.ctx.path(path)
        if os.path.isdir(real) and (os.stat(real).st_mode & 0o7777) == mode:
            return False
        if not self.check:
            os.makedirs(real, exist_ok=True)
            self.ctx.chown(real, owner, group)
            os.chmod(real, mode)
        return True


def ensure_account(batch: Batch, env: dict[str, Any]) -> None:
    name, uid = env["name"], env["uid"]
    home = f"{batch.root}/{name}"
    current = batch.passwd.get(name)
    if name not in batch.groups:
        batch.change(f"create group {name} ({uid})")
        batch.run(["groupadd", "--gid", str(uid), name])
    if current is None:
        batch.change(f"create account {name} ({uid}, SFTP only)")
        batch.run(["useradd", "--uid", str(uid), "--gid", name, "--groups", GROUP, "--home-dir", home,
                   "--no-create-home", "--shell", NOLOGIN, name])
    else:
        if current[2] != str(uid) or current[5] != home or current[6] != NOLOGIN:
            raise FirstbootError(f"account {name} exists with uid {current[2]}, home {current[5]}, shell "
                                 f"{current[6]}: not this environment's (uid {uid}); remove it or give the "
                                 "environment another name")
        if name not in batch.groups.get(GROUP, []):
            batch.change(f"put {name} into group {GROUP}")
            batch.run(["usermod", "--append", "--groups", GROUP, name])
    if "www-data" not in batch.groups.get(name, []):
        batch.change(f"let Apache (www-data) read {name}'s site")
        batch.readers.append(name)


def add_readers(batch: Batch) -> None:
    """www-data into the groups of the batch's new environments, with one usermod (one rewrite of /etc/group
    instead of one per environment): an environment whose group it could not join fails with the reason."""
    if batch.check or not batch.readers:
        return
    try:
        batch.ctx.run(["usermod", "--append", "--groups", ",".join(batch.readers), "www-data"])
    except FirstbootError as exc:
        for name in batch.readers:
            batch.failed[name] = "www-data cannot join its group: " + one_line(exc.message)
        return
    for name in batch.readers:
        batch.groups.setdefault(name, []).append("www-data")


def site_target(site: str) -> str:
    """Where sites-enabled/SITE.conf points: what a2ensite links (relative, into sites-available)."""
    return f"../sites-available/{site}.conf"


def site_link(ctx: Context, site: str) -> str:
    """The link sites-enabled/SITE.conf itself (not followed, as ctx.path follows links inside a tree)."""
    return os.path.join(ctx.path(SITES_ENABLED), site + ".conf")


def enable_site(ctx: Context, site: str) -> None:
    """The site's link in sites-enabled, as a2ensite makes it, without a Perl process per environment (a thousand
    of them cost minutes on a slow guest)."""
    link = site_link(ctx, site)
    os.makedirs(os.path.dirname(link), exist_ok=True)
    tmp = link + ".golden-tmp"
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(site_target(site), tmp)
    os.replace(tmp, link)


def ensure_tree(batch: Batch, env: dict[str, Any]) -> None:
    name = env["name"]
    home = f"{batch.root}/{name}"
    for path, mode, owner in ((home, 0o750, "root"), (home + "/htdocs", 0o2750, name), (home + "/tmp", 0o700, name),
                              (home + "/sessions", 0o700, name), (home + "/conf", 0o750, "root")):
        if batch.directory(path, mode, owner, name):
            batch.change(f"directory {path} ({mode:o})")
    keys = "".join(k + "\n" for k in env["ssh_authorized_keys"])
    if batch.write(f"{KEYS_DIR}/{name}", keys, 0o644):
        batch.change("SFTP keys of {} ({})".format(name, len(env["ssh_authorized_keys"])))
    if env.get("db_password"):
        path = home + "/conf/database.ini"
        if batch.write(path, render_db_ini(env, batch.data.get("db_address", "")), 0o640):
            if not batch.check:
                batch.ctx.chown(batch.ctx.path(path), "root", name)
            batch.change(f"database credentials of {name}")
