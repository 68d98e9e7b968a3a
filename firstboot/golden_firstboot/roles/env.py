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
from .env_batch import (
    PENDING,
    Batch,
    add_readers,
    enable_site,
    ensure_account,
    ensure_tree,
    passwd_entries,
    php_version,
    site_link,
    site_target,
)
from .env_render import (
    APACHE_MODULES,
    ARCHIVE_DIR,
    CHALLENGE_DIR,
    FPM_LIMITS,
    FPM_MAX_FILES,
    GROUP,
    KEYS_DIR,
    SITE_PREFIX,
    SITES_AVAILABLE,
    SITES_ENABLED,
    SSHD_BEGIN,
    SSHD_CONFIG,
    SSHD_END,
    STATE_DIR,
    cert_paths,
    pool_name,
    render_fpm_limits,
    render_pool,
    render_vhost,
    sshd_block,
)


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
