"""env (web nodes): hosting environments from `golden env apply`, one batch at a time.

Each environment gets a system account with no shell, in group golden-env, whose SFTP login (key only) is
chrooted into ROOT/NAME (sshd Match block); its site as an Apache vhost, HTTP redirected to HTTPS except the
ACME challenge path; a PHP-FPM pool running as that account (ondemand, bounded children, open_basedir on its
own tree, its own tmp and session directories). Layout of ROOT/NAME (the chroot: root-owned, as sshd wants):

    ROOT/NAME            root:NAME 0750   www-data is in group NAME: Apache reads the site, no other account can
    ROOT/NAME/htdocs     NAME:NAME 2750   the site; SFTP starts here
    ROOT/NAME/tmp        NAME:NAME 0700   PHP's upload and temporary files
    ROOT/NAME/sessions   NAME:NAME 0700   PHP's sessions
    ROOT/NAME/conf       root:NAME 0750   database.ini (root:NAME 0640): the database credentials

What is applied is read back from the host: a manifest per environment under /var/lib/golden/env (no secret in
it), the accounts in /etc/passwd, the files themselves. One Apache graceful reload and one PHP-FPM reload per
batch, whatever its size; an environment that fails is reported with its reason and the others go on.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from .. import env_schema
from ..steps import Context
from ..system import FirstbootError, one_line
from .env_render import (
    APACHE_MODULES,
    ARCHIVE_DIR,
    CHALLENGE_DIR,
    FPM_LIMITS,
    FPM_MAX_FILES,
    GROUP,
    KEYS_DIR,
    NOLOGIN,
    SITE_PREFIX,
    SITES_AVAILABLE,
    SITES_ENABLED,
    SSHD_BEGIN,
    SSHD_CONFIG,
    SSHD_END,
    STATE_DIR,
    cert_paths,
    pool_name,
    render_db_ini,
    render_fpm_limits,
    render_pool,
    render_vhost,
    sshd_block,
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


def ensure_site(batch: Batch, env: dict[str, Any], php: str) -> None:
    name = env["name"]
    pool = f"/etc/php/{php}/fpm/pool.d/{pool_name(name)}.conf"
    if batch.write(pool, render_pool(env, batch.root)):
        batch.change("PHP-FPM pool " + pool_name(name))
        batch.owe("fpm")
    has_cert = all(batch.ctx.exists(p) for p in cert_paths(name))
    site = SITE_PREFIX + name
    if batch.write(f"{SITES_AVAILABLE}/{site}.conf", render_vhost(env, batch.root, has_cert)):
        batch.change("Apache site {} ({})".format(site, ", ".join(env["domains"])))
        batch.owe("apache")
    link = site_link(batch.ctx, site)
    if not (os.path.islink(link) and os.readlink(link) == site_target(site)):
        batch.change("enable Apache site " + site)
        if not batch.check:
            enable_site(batch.ctx, site)
        batch.owe("apache")


def manifest(env: dict[str, Any], root: str) -> str:
    """What the host keeps of an environment: everything but its password, and where its tree is."""
    kept = {k: v for k, v in env.items() if k != "db_password"}
    kept["root"] = root
    return json.dumps(kept, sort_keys=True, indent=1) + "\n"


def applied(ctx: Context) -> dict[str, dict[str, Any]]:
    """The environments this host has, from its manifests (name -> what was applied)."""
    out = {}
    folder = ctx.path(STATE_DIR)
    for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if entry.endswith(".json") and not env_schema.name_problem(entry[:-5]):
            try:
                out[entry[:-5]] = json.loads(ctx.read(STATE_DIR + "/" + entry) or "{}")
            except ValueError:
                out[entry[:-5]] = {}
    return out


def prune(batch: Batch, name: str, php: str) -> None:
    """Archive an environment's tree, then remove its site, pool, keys, account and files."""
    home = f"{batch.root}/{name}"
    archive = "{}/{}-{}.tar.gz".format(ARCHIVE_DIR, name, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    batch.change(f"archive {home} into {archive}, then remove environment {name}")
    if batch.check:
        return
    os.makedirs(batch.ctx.path(ARCHIVE_DIR), mode=0o700, exist_ok=True)
    if os.path.isdir(batch.ctx.path(home)):
        batch.ctx.run(["tar", "--create", "--gzip", "--file", archive, "--directory", batch.root, name])
    site = SITE_PREFIX + name
    if os.path.lexists(site_link(batch.ctx, site)):
        os.remove(site_link(batch.ctx, site))
    for path in (f"{SITES_AVAILABLE}/{site}.conf", f"/etc/php/{php}/fpm/pool.d/{pool_name(name)}.conf",
                 f"{KEYS_DIR}/{name}"):
        batch.ctx.remove(path)
    if name in batch.passwd:
        batch.ctx.run(["userdel", name])
    if name in batch.groups:
        batch.ctx.run(["groupdel", name], check=False)
    if os.path.isdir(batch.ctx.path(home)):
        batch.ctx.run(["rm", "-rf", "--one-file-system", "--", home])
    batch.ctx.remove(f"{STATE_DIR}/{name}.json")
    batch.owe("apache", "fpm")


def ensure_shared(batch: Batch, php: str) -> None:
    """What every environment of this node shares: the group, the sshd block, Apache's modules, the challenge
    folder, PHP-FPM's file limit."""
    if GROUP not in batch.groups:
        batch.change("create group " + GROUP)
        batch.run(["groupadd", "--system", GROUP])
        batch.groups[GROUP] = []
    config = batch.ctx.read(SSHD_CONFIG) or ""
    block = sshd_block(batch.root)
    if block not in config:
        start, end = config.find(SSHD_BEGIN), config.find(SSHD_END)
        if start >= 0 and end > start:
            config = config[:start] + config[end + len(SSHD_END):].lstrip("\n")
        # Last in the file: a Match block runs to the end of it, so nothing may follow.
        batch.change("sshd: SFTP-only chrooted logins for group " + GROUP)
        if not batch.check:
            batch.ctx.write(SSHD_CONFIG, config.rstrip("\n") + "\n\n" + block, 0o644)
        batch.owe("ssh")
    for module in APACHE_MODULES:
        if not batch.ctx.exists(f"/etc/apache2/mods-enabled/{module}.load"):
            batch.change("enable Apache module " + module)
            batch.run(["a2enmod", "-q", module])
            batch.owe("apache")
    # One listening socket per pool in the master: at systemd's soft limit (1024) a node stops at about 1,000
    # pools, and FPM refuses to start at all. Raised for the master only (each pool keeps 1024: env_render).
    if batch.write(f"/etc/php/{php}/fpm/pool.d/{FPM_LIMITS}", render_fpm_limits()):
        batch.change(f"PHP-FPM: room for {FPM_MAX_FILES} open files in the master (a socket per pool)")
        batch.owe("fpm")
    if batch.directory(CHALLENGE_DIR, 0o755, "root", "root"):
        batch.change("ACME challenge folder " + CHALLENGE_DIR)


def finish(batch: Batch, php: str) -> None:
    """The batch's reloads, each once and after its configuration test."""
    if batch.check:
        return
    ctx = batch.ctx
    if "ssh" in batch.owed:
        ctx.run(["sshd", "-t"])
        ctx.run(["systemctl", "reload", "ssh"])
    if "fpm" in batch.owed:
        ctx.run([f"php-fpm{php}", "--test"])
        ctx.run(["systemctl", "reload", f"php{php}-fpm"])
    if "apache" in batch.owed:
        ctx.run(["apache2ctl", "configtest"])
        ctx.run(["apache2ctl", "graceful"])
    if batch.owed:
        ctx.remove(PENDING)


def apply_web(ctx: Context, data: dict[str, Any], check: bool = False, prune_removed: bool = False) -> dict[str, Any]:
    """Bring this web node's environments to `data` (a checked batch); the report says what changed."""
    php = php_version(ctx)
    batch = Batch(ctx, data, check)
    ensure_shared(batch, php)
    wanted = {env["name"]: env for env in data["environments"]}
    for name, env in wanted.items():
        start = len(batch.changes)
        try:
            ensure_account(batch, env)
            ensure_tree(batch, env)
            ensure_site(batch, env, php)
            if batch.write(f"{STATE_DIR}/{name}.json", manifest(env, batch.root), 0o600):
                if len(batch.changes) == start:
                    batch.change("record environment " + name)
        except (FirstbootError, OSError) as exc:
            batch.failed[name] = one_line(str(getattr(exc, "message", exc)))
            ctx.log(f"environment {name}: FAILED: {batch.failed[name]}")
            continue
        if len(batch.changes) == start:
            batch.unchanged.append(name)
    add_readers(batch)
    removed = sorted(set(applied(ctx)) - set(wanted))
    for name in removed:
        if prune_removed:
            prune(batch, name, php)
        else:
            ctx.log(f"environment {name} is no longer declared: kept (`--prune` removes it)")
    finish(batch, php)
    return {"changed": len(batch.changes), "changes": batch.changes,
            "unchanged": batch.unchanged, "failed": batch.failed, "removed": removed if prune_removed else [],
            "undeclared": [] if prune_removed else removed}


def load_batch(path: str, web: bool = True) -> dict[str, Any]:
    """The batch file golden sent, refused whole on any problem of the shared schema."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise FirstbootError(f"{path}: cannot read the environment batch: {exc}") from None
    problems = env_schema.check(data, web=web)
    if problems:
        raise FirstbootError("{}: {}".format(path, "; ".join(problems[:20])),
                             hint="golden and this agent disagree on the environment schema: apply again with "
                                  "the same goldenimage version on both ends")
    return data


def show(ctx: Context, name: str | None = None) -> dict[str, Any]:
    """The environments this node has (or one), from the host itself, with what is actually in place."""
    envs = applied(ctx)
    passwd = passwd_entries(ctx)
    out = {}
    for env_name, env in envs.items():
        if name is not None and env_name != name:
            continue
        site = SITE_PREFIX + env_name
        out[env_name] = dict(env, account=env_name in passwd,
                             site_enabled=ctx.exists(f"{SITES_ENABLED}/{site}.conf"),
                             certificate=all(ctx.exists(p) for p in cert_paths(env_name)))
    return out


def install_certificates(ctx: Context, folder: str, root: str = "/srv/env") -> dict[str, Any]:
    """Certificates golden issued, from FOLDER/NAME/{fullchain,privkey}.pem, for the environments this node has:
    installed (the key root's only, 0600), each site switched from snakeoil to its own; one graceful reload."""
    envs = applied(ctx)
    installed, refused = [], {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name not in envs:
            refused[name[:40]] = "no such environment on this node"
            continue
        try:
            with open(os.path.join(folder, name, "fullchain.pem"), encoding="ascii") as handle:
                chain = handle.read()
            with open(os.path.join(folder, name, "privkey.pem"), encoding="ascii") as handle:
                key = handle.read()
        except (OSError, ValueError) as exc:
            refused[name] = f"unreadable: {exc}"
            continue
        if not chain.startswith("-----BEGIN CERTIFICATE-----") or "PRIVATE KEY-----" not in key.split("\n", 1)[0]:
            refused[name] = "not a PEM certificate chain and private key"
            continue
        cert, private = cert_paths(name)
        os.makedirs(os.path.dirname(ctx.path(cert)), mode=0o700, exist_ok=True)
        changed = ctx.write(private, key, 0o600)
        changed = ctx.write(cert, chain, 0o644) or changed
        site = f"{SITES_AVAILABLE}/{SITE_PREFIX}{name}.conf"
        changed = ctx.write(site, render_vhost(envs[name], envs[name].get("root") or root, True)) or changed
        if changed:
            installed.append(name)
    if installed:
        ctx.run(["apache2ctl", "configtest"])
        ctx.run(["apache2ctl", "graceful"])
    return {"changed": len(installed), "installed": installed, "failed": refused}


def certificates(ctx: Context) -> dict[str, str]:
    """Each environment's installed certificate chain (public): golden decides renewals from them."""
    out = {}
    for name in applied(ctx):
        chain = ctx.read(cert_paths(name)[0])
        if chain:
            out[name] = chain
    return out
