"""The agent's env role on a fake web node and a fake SQL writer: facts in, commands out."""

from __future__ import annotations

import copy
import json
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "firstboot"))

from golden_firstboot import env_schema  # noqa: E402
from golden_firstboot.roles import env, env_render, env_sql  # noqa: E402
from golden_firstboot.steps import Context  # noqa: E402
from golden_firstboot.system import FirstbootError, Result, Runner  # noqa: E402

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHZ0b2tlbnRva2VudG9rZW50b2tlbnRva2VudG9rZW4 customer@laptop"
PHP = {"max_children": 5, "memory_limit_mb": 128, "max_execution_time": 30, "upload_max_mb": 32}


def environment(name: str, uid: int, *domains: str, databases: int = 1) -> dict[str, Any]:
    return {"name": name, "uid": uid, "domains": list(domains) or [f"{name}.example.com"], "databases": databases,
            "quota_mb": None, "php": dict(PHP), "ssh_authorized_keys": [KEY]}


def batch(*envs: dict[str, Any]) -> dict[str, Any]:
    data = {"schema": env_schema.SCHEMA, "root": "/srv/env", "db_host": "10.10.0.0/255.255.255.0",
            "environments": list(envs)}
    assert env_schema.check(data) == []
    return data


THREE = [environment("shop", 200001), environment("blog", 200002), environment("wiki", 200003, "wiki.example.org",
                                                                                "www.wiki.example.org")]


class FakeWebNode(Runner):
    """A web node's account database, Apache's site links and modules, as files under root."""

    def __init__(self, root: Path) -> None:
        self.lines: list[str] = []
        super().__init__(logger=self.lines.append)
        self.root = root
        self.commands: list[list[str]] = []
        self.chowns: list[tuple[str, str, str]] = []
        (root / "etc/ssh").mkdir(parents=True)
        (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n"
                                         "www-data:x:33:33::/var/www:/usr/sbin/nologin\n")
        (root / "etc/group").write_text("root:x:0:\nwww-data:x:33:\n")
        (root / "etc/ssh/sshd_config").write_text("Include /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin no\n")
        (root / "etc/apache2/mods-enabled").mkdir(parents=True)
        (root / "etc/apache2/sites-enabled").mkdir(parents=True)

    def _groups(self) -> list[list[str]]:
        return [line.split(":") for line in (self.root / "etc/group").read_text().splitlines()]

    def _save_groups(self, groups: list[list[str]]) -> None:
        (self.root / "etc/group").write_text("".join(":".join(g) + "\n" for g in groups))

    def execute(self, args: list[str], input: str | None, env: dict[str, str] | None, stdin_path: str | None,
                stdout_path: str | None, timeout: float | None) -> Result:
        self.commands.append(args)
        tool = args[0]
        if tool == "groupadd":
            gid = args[args.index("--gid") + 1] if "--gid" in args else "999"
            self._save_groups(self._groups() + [[args[-1], "x", gid, ""]])
        elif tool == "useradd":
            words = [a for a in args if a != "--no-create-home"]
            opt = {words[i]: words[i + 1] for i in range(1, len(words) - 1, 2)}
            with open(self.root / "etc/passwd", "a") as handle:
                handle.write(f"{args[-1]}:x:{opt['--uid']}:{opt['--uid']}::{opt['--home-dir']}:{opt['--shell']}\n")
            groups = self._groups()
            for g in groups:
                if g[0] == opt["--groups"]:
                    g[3] = ",".join([m for m in g[3].split(",") if m] + [args[-1]])
            self._save_groups(groups)
        elif tool == "usermod":
            groups = self._groups()
            for g in groups:
                if g[0] in args[3].split(","):
                    g[3] = ",".join([m for m in g[3].split(",") if m] + [args[4]])
            self._save_groups(groups)
        elif tool == "userdel":
            passwd = (self.root / "etc/passwd").read_text().splitlines()
            (self.root / "etc/passwd").write_text("".join(p + "\n" for p in passwd if p.split(":")[0] != args[1]))
        elif tool == "groupdel":
            self._save_groups([g for g in self._groups() if g[0] != args[1]])
        elif tool == "a2ensite":
            (self.root / "etc/apache2/sites-enabled" / (args[-1] + ".conf")).write_text("")
        elif tool == "a2dissite":
            (self.root / "etc/apache2/sites-enabled" / (args[-1] + ".conf")).unlink()
        elif tool == "a2enmod":
            (self.root / "etc/apache2/mods-enabled" / (args[-1] + ".load")).write_text("")
        elif tool == "rm":
            import shutil

            shutil.rmtree(str(self.root) + args[-1])
        elif tool == "tar":
            Path(str(self.root) + args[args.index("--file") + 1]).write_text("archive")
        return Result(0, "", "")

    def chown(self, path: str, user: str, group: str) -> None:
        self.chowns.append(("/" + os.path.relpath(path, self.root), user, group))

    def ran(self, *words: str) -> int:
        return sum(1 for c in self.commands if c[:len(words)] == list(words))


@pytest.fixture
def node(tmp_path: Path) -> tuple[FakeWebNode, Context]:
    fake = FakeWebNode(tmp_path)
    ctx = Context({"roles": ["web"], "release_vars": {"php": "8.2"}}, {}, root=str(tmp_path), runner=fake,
                  logger=fake.lines.append, chown=fake.chown)
    return fake, ctx


def test_three_environments_cost_one_reload_of_each_service(node: tuple[FakeWebNode, Context]) -> None:
    fake, ctx = node
    report = env.apply_web(ctx, batch(*THREE))
    assert report["failed"] == {} and report["changed"] > 0
    assert fake.ran("apache2ctl", "graceful") == 1
    assert fake.ran("systemctl", "reload", "php8.2-fpm") == 1
    assert fake.ran("systemctl", "reload", "ssh") == 1
    assert fake.ran("apache2ctl", "configtest") == 1 and fake.ran("php-fpm8.2", "--test") == 1
    assert fake.ran("sshd", "-t") == 1
    # each test comes before its reload
    flat = [" ".join(c) for c in fake.commands]
    assert flat.index("apache2ctl configtest") < flat.index("apache2ctl graceful")
    passwd = (fake.root / "etc/passwd").read_text()
    assert "shop:x:200001:200001::/srv/env/shop:/usr/sbin/nologin" in passwd
    groups = {g.split(":")[0]: g.split(":")[3] for g in (fake.root / "etc/group").read_text().splitlines()}
    assert groups["golden-env"] == "shop,blog,wiki"
    assert groups["shop"] == "www-data"  # Apache reads the site; no other environment's account does


def test_a_batch_costs_no_process_per_site_and_one_usermod_for_apache(node: tuple[FakeWebNode, Context]) -> None:
    """A thousand environments on a slow guest: a2ensite (Perl) and usermod (a rewrite of /etc/group) per
    environment cost minutes; the links are written as a2ensite writes them and www-data joins all at once."""
    fake, ctx = node
    many = [environment(f"e{n:03d}", 210000 + n) for n in range(40)]
    report = env.apply_web(ctx, batch(*many))
    assert report["failed"] == {}
    assert fake.ran("a2ensite") == 0 and fake.ran("usermod") == 1
    assert fake.ran("useradd") == 40 and fake.ran("groupadd") == 41  # the environments' and golden-env
    link = fake.root / "etc/apache2/sites-enabled/golden-env-e007.conf"
    assert os.readlink(link) == "../sites-available/golden-env-e007.conf"  # relative, as a2ensite makes it
    groups = {g.split(":")[0]: g.split(":")[3] for g in (fake.root / "etc/group").read_text().splitlines()}
    assert all(groups[e["name"]] == "www-data" for e in many)
    # the master can hold a socket per pool (tests/integration/test_fpm_many_pools.py starts a real FPM on it)
    limits = (fake.root / "etc/php/8.2/fpm/pool.d" / env_render.FPM_LIMITS).read_text()
    assert limits.splitlines()[1:] == ["[global]", f"rlimit_files = {env_render.FPM_MAX_FILES}"]
    pool = (fake.root / "etc/php/8.2/fpm/pool.d/golden-env-e007.conf").read_text()
    assert f"rlimit_files = {env_render.POOL_MAX_FILES}" in pool.splitlines()
    fake.commands.clear()
    assert env.apply_web(ctx, batch(*many))["changed"] == 0 and fake.commands == []


def test_an_environment_apache_cannot_join_fails_and_is_retried(node: tuple[FakeWebNode, Context]) -> None:
    fake, ctx = node
    real = fake.execute

    def usermod_fails(args, *rest):  # type: ignore[no-untyped-def]
        if args[0] == "usermod":
            fake.commands.append(args)
            return Result(10, "", "usermod: cannot lock /etc/group; try again later.")
        return real(args, *rest)

    fake.execute = usermod_fails  # type: ignore[method-assign,assignment]
    report = env.apply_web(ctx, batch(*THREE))
    assert set(report["failed"]) == {"shop", "blog", "wiki"}
    assert "cannot lock /etc/group" in report["failed"]["shop"]
    fake.execute = real  # type: ignore[method-assign]
    report = env.apply_web(ctx, batch(*THREE))
    assert report["failed"] == {} and fake.ran("usermod") == 2


def test_each_environment_is_isolated_by_its_tree_and_its_pool(node: tuple[FakeWebNode, Context]) -> None:
    fake, ctx = node
    env.apply_web(ctx, batch(*THREE))
    modes = {p: stat.S_IMODE(os.stat(fake.root / p.lstrip("/")).st_mode) for p in (
        "/srv/env/shop", "/srv/env/shop/htdocs", "/srv/env/shop/tmp", "/srv/env/shop/sessions", "/srv/env/shop/conf")}
    assert modes == {"/srv/env/shop": 0o750, "/srv/env/shop/htdocs": 0o2750, "/srv/env/shop/tmp": 0o700,
                     "/srv/env/shop/sessions": 0o700, "/srv/env/shop/conf": 0o750}
    assert ("/srv/env/shop", "root", "shop") in fake.chowns  # the chroot: root's, as sshd requires
    assert ("/srv/env/shop/tmp", "shop", "shop") in fake.chowns
    pool = (fake.root / "etc/php/8.2/fpm/pool.d/golden-env-shop.conf").read_text()
    for line in ("user = shop", "group = shop", "pm = ondemand", "pm.max_children = 5",
                 "php_admin_value[open_basedir] = /srv/env/shop/",
                 "php_admin_value[session.save_path] = /srv/env/shop/sessions",
                 "php_admin_value[upload_tmp_dir] = /srv/env/shop/tmp", "listen = /run/php/golden-env-shop.sock"):
        assert line in pool.splitlines()
    sshd = (fake.root / "etc/ssh/sshd_config").read_text()
    assert sshd.rstrip().endswith(env_render.SSHD_END)  # a Match block runs to the end: nothing follows it
    for line in ("Match Group golden-env", "    ChrootDirectory /srv/env/%u", "    PasswordAuthentication no",
                 "    ForceCommand internal-sftp -d /htdocs", "    AllowTcpForwarding no"):
        assert line in sshd.splitlines()
    assert (fake.root / "etc/ssh/golden-env-keys/shop").read_text() == KEY + "\n"


def test_sites_redirect_to_https_but_answer_the_acme_challenge(node: tuple[FakeWebNode, Context]) -> None:
    fake, ctx = node
    env.apply_web(ctx, batch(*THREE))
    site = (fake.root / "etc/apache2/sites-available/golden-env-wiki.conf").read_text()
    http, https = site.split("<VirtualHost *:443>")
    assert "ServerName wiki.example.org" in http and "ServerAlias www.wiki.example.org" in http
    assert "RewriteCond %{REQUEST_URI} !^/\\.well-known/acme-challenge/" in http
    assert "RewriteRule ^ https://%{HTTP_HOST}%{REQUEST_URI} [R=301,L]" in http
    assert f"Alias /.well-known/acme-challenge/ {env_render.CHALLENGE_DIR}/" in http
    assert "proxy:unix:/run/php/golden-env-wiki.sock|fcgi://golden-env-wiki" in https
    assert env_render.SNAKEOIL_CERT in https  # until its own certificate is issued
    assert (fake.root / "etc/apache2/sites-enabled/golden-env-wiki.conf").exists()


def test_rerun_changes_nothing_and_reloads_nothing(node: tuple[FakeWebNode, Context]) -> None:
    fake, ctx = node
    env.apply_web(ctx, batch(*THREE))
    fake.commands.clear()
    report = env.apply_web(ctx, batch(*THREE))
    assert report["changed"] == 0, report["changes"]
    assert sorted(report["unchanged"]) == ["blog", "shop", "wiki"]
    assert fake.commands == []


def test_a_changed_domain_changes_only_that_environment(node: tuple[FakeWebNode, Context]) -> None:
    fake, ctx = node
    env.apply_web(ctx, batch(*THREE))
    fake.commands.clear()
    changed = copy.deepcopy(THREE)
    changed[1]["domains"] = ["blog.example.net"]
    report = env.apply_web(ctx, batch(*changed))
    assert sorted(report["unchanged"]) == ["shop", "wiki"]
    assert report["changes"] == ["Apache site golden-env-blog (blog.example.net)"]
    assert [" ".join(c) for c in fake.commands] == ["apache2ctl configtest", "apache2ctl graceful"]


def test_check_lists_the_drift_and_changes_nothing(node: tuple[FakeWebNode, Context]) -> None:
    fake, ctx = node
    env.apply_web(ctx, batch(*THREE[:2]))
    fake.commands.clear()
    before = sorted(str(p) for p in fake.root.rglob("*"))
    changed = copy.deepcopy(THREE)
    changed[0]["php"]["max_children"] = 9
    report = env.apply_web(ctx, batch(*changed), check=True)
    assert "PHP-FPM pool golden-env-shop" in report["changes"]
    assert any("create account wiki" in c for c in report["changes"])
    assert fake.commands == []
    assert sorted(str(p) for p in fake.root.rglob("*")) == before


def test_a_removed_environment_stays_until_prune_then_is_archived_first(node: tuple[FakeWebNode, Context]) -> None:
    fake, ctx = node
    env.apply_web(ctx, batch(*THREE))
    report = env.apply_web(ctx, batch(*THREE[:2]))
    assert report["undeclared"] == ["wiki"] and report["removed"] == []
    assert (fake.root / "srv/env/wiki").is_dir()
    fake.commands.clear()
    report = env.apply_web(ctx, batch(*THREE[:2]), prune_removed=True)
    assert report["removed"] == ["wiki"]
    flat = [" ".join(c) for c in fake.commands]
    tar = next(i for i, c in enumerate(flat) if c.startswith("tar --create"))
    assert tar < flat.index("rm -rf --one-file-system -- /srv/env/wiki")
    assert "userdel wiki" in flat
    assert not (fake.root / "srv/env/wiki").exists()
    assert not (fake.root / "etc/apache2/sites-available/golden-env-wiki.conf").exists()
    assert not (fake.root / "etc/php/8.2/fpm/pool.d/golden-env-wiki.conf").exists()
    assert sorted(env.show(ctx)) == ["blog", "shop"]


def test_one_failing_environment_never_stops_the_others(node: tuple[FakeWebNode, Context]) -> None:
    fake, ctx = node
    with open(fake.root / "etc/passwd", "a") as handle:
        handle.write("blog:x:1000:1000:someone:/home/blog:/bin/bash\n")
    report = env.apply_web(ctx, batch(*THREE))
    assert list(report["failed"]) == ["blog"]
    assert "exists with uid 1000" in report["failed"]["blog"]
    assert sorted(env.show(ctx)) == ["shop", "wiki"]
    assert fake.ran("apache2ctl", "graceful") == 1


def test_list_reads_the_state_back_from_the_host(node: tuple[FakeWebNode, Context]) -> None:
    fake, ctx = node
    env.apply_web(ctx, batch(*THREE))
    shown = env.show(ctx, "wiki")
    assert shown["wiki"]["domains"] == ["wiki.example.org", "www.wiki.example.org"]
    assert shown["wiki"]["account"] and shown["wiki"]["site_enabled"] and not shown["wiki"]["certificate"]


def test_the_agent_refuses_a_batch_off_the_schema(tmp_path: Path) -> None:
    bad = copy.deepcopy(batch(*THREE))
    bad["environments"][0]["name"] = "shop;reboot"
    path = tmp_path / "batch.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(FirstbootError, match=r"environments\[0\]\.name"):
        env.load_batch(str(path))


class FakeWriter(Runner):
    """MariaDB as far as the env role asks: which databases, accounts and grants exist; statements recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.log = self.lines.append
        self.databases: set[str] = set()
        self.accounts: dict[str, str] = {}
        self.grants: set[str] = set()
        self.sessions: list[str] = []

    def execute(self, args: list[str], input: str | None, env: dict[str, str] | None, stdin_path: str | None,
                stdout_path: str | None, timeout: float | None) -> Result:
        sql = input or ""
        if sql.startswith("SELECT 'db'"):
            out = [f"db\t{d}" for d in sorted(self.databases)]
            out += [f"user\t{u}" for u in sorted(self.accounts)]
            out += [f"grant\t{u}" for u in sorted(self.grants)]
            return Result(0, "\n".join(out) + "\n")
        if sql.startswith("SELECT User FROM mysql.user"):
            ok = [m[1] for m in re.finditer(r"User = '(\w+)' .*? PASSWORD\('([^']*)'\)", sql)
                  if self.accounts.get(m[1]) == m[2]]
            return Result(0, "".join(u + "\n" for u in ok))
        self.sessions.append(sql)
        for m in re.finditer(r"CREATE DATABASE IF NOT EXISTS `(\w+)`", sql):
            self.databases.add(m[1])
        for m in re.finditer(r"(?:CREATE USER IF NOT EXISTS|ALTER USER) '(\w+)'@'[^']*' IDENTIFIED BY '([^']*)'", sql):
            self.accounts[m[1]] = m[2]
        for m in re.finditer(r"GRANT ALL PRIVILEGES ON `(\w+)\\_%`\.\* TO '(\w+)'", sql):
            assert m[1] == m[2]
            self.grants.add(m[2])
        return Result(0, "")


def test_the_writer_makes_databases_accounts_and_prefix_grants_in_one_session(tmp_path: Path) -> None:
    fake = FakeWriter()
    ctx = Context({"roles": ["sql-primary"]}, {}, root=str(tmp_path), runner=fake, logger=fake.lines.append)
    envs = [environment("shop", 200001, databases=2), environment("blog", 200002, databases=0)]
    report = env_sql.apply_sql(ctx, batch(*envs))
    assert len(fake.sessions) == 1
    assert fake.databases == {"shop_1", "shop_2"}
    assert set(fake.accounts) == {"shop", "blog"} and fake.grants == {"shop", "blog"}
    assert "GRANT ALL PRIVILEGES ON `shop\\_%`.* TO 'shop'@'10.10.0.0/255.255.255.0';" in fake.sessions[0]
    kept = tmp_path / "var/lib/golden/env/shop.password"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert report["credentials"]["shop"] == kept.read_text().strip() == fake.accounts["shop"]
    assert not any(report["credentials"]["shop"] in line for line in fake.lines)  # never logged
    again = env_sql.apply_sql(ctx, batch(*envs))
    assert again["changed"] == 0 and len(fake.sessions) == 1
    assert again["credentials"] == report["credentials"]


def test_the_writer_resets_a_password_changed_behind_its_back(tmp_path: Path) -> None:
    fake = FakeWriter()
    ctx = Context({"roles": ["sql-primary"]}, {}, root=str(tmp_path), runner=fake, logger=fake.lines.append)
    env_sql.apply_sql(ctx, batch(environment("shop", 200001)))
    fake.accounts["shop"] = "changed-by-hand"
    report = env_sql.apply_sql(ctx, batch(environment("shop", 200001)))
    assert report["changes"] == ["environment shop: alter user"]
    assert fake.accounts["shop"] == report["credentials"]["shop"]


def test_certificates_golden_issued_replace_snakeoil_with_one_reload(node: tuple[FakeWebNode, Context],
                                                                       tmp_path: Path) -> None:
    fake, ctx = node
    env.apply_web(ctx, batch(*THREE))
    incoming = tmp_path / "incoming"
    for name in ("shop", "wiki", "ghost"):
        (incoming / name).mkdir(parents=True)
        (incoming / name / "fullchain.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
        (incoming / name / "privkey.pem").write_text("-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n")
    fake.commands.clear()
    report = env.install_certificates(ctx, str(incoming))
    assert report["installed"] == ["shop", "wiki"] and list(report["failed"]) == ["ghost"]
    assert fake.ran("apache2ctl", "graceful") == 1
    key = fake.root / "etc/golden/env-certs/shop/privkey.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    site = (fake.root / "etc/apache2/sites-available/golden-env-shop.conf").read_text()
    assert "SSLCertificateFile /etc/golden/env-certs/shop/fullchain.pem" in site
    assert sorted(env.certificates(ctx)) == ["shop", "wiki"]
    # an apply after that keeps the site on its own certificate
    fake.commands.clear()
    assert env.apply_web(ctx, batch(*THREE))["changed"] == 0
    assert env.install_certificates(ctx, str(incoming))["installed"] == []
    assert fake.commands == []


def test_reloads_a_failed_batch_owed_are_done_by_the_next(node: tuple[FakeWebNode, Context]) -> None:
    fake, ctx = node
    real = fake.execute

    def sshd_fails(args: list[str], *rest: Any) -> Result:
        if args == ["sshd", "-t"]:
            fake.commands.append(args)
            return Result(255, "", "Missing privilege separation directory: /run/sshd")
        return real(args, *rest)

    fake.execute = sshd_fails  # type: ignore[method-assign,assignment]
    with pytest.raises(FirstbootError):
        env.apply_web(ctx, batch(*THREE))
    assert fake.ran("apache2ctl", "graceful") == 0
    fake.execute = real  # type: ignore[method-assign]
    fake.commands.clear()
    report = env.apply_web(ctx, batch(*THREE))
    assert report["changed"] == 0
    assert fake.ran("systemctl", "reload", "ssh") == 1 and fake.ran("apache2ctl", "graceful") == 1
    assert fake.ran("systemctl", "reload", "php8.2-fpm") == 1
    fake.commands.clear()
    env.apply_web(ctx, batch(*THREE))
    assert fake.commands == []
