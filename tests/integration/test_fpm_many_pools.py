"""A thousand environments on one web node: PHP-FPM's master opens a listening socket per pool, and at systemd's
soft limit of 1024 open files it stops at about a thousand pools and refuses to start at all (every site down).
Tried with Debian's php-fpm on this host (no network: unix sockets in a temporary folder), with the pools and the
[global] file the env role renders."""

from __future__ import annotations

import glob
import resource
import subprocess
import time
from pathlib import Path

import pytest

from tests.unit import firstboot_fake  # noqa: F401  (puts firstboot/ on sys.path)

from golden_firstboot.roles import env_render  # isort: skip

POOLS = 1100
PHP = {"max_children": 3, "memory_limit_mb": 128, "max_execution_time": 30, "upload_max_mb": 32}


def fpm_binary() -> str:
    found = sorted(glob.glob("/usr/sbin/php-fpm*"))
    if not found:
        pytest.fail("php-fpm is missing: scripts/install-deps installs php-fpm")
    return found[-1]


def pool_tree(tmp: Path, with_limits: bool) -> Path:
    """php-fpm.conf and pool.d as the env role writes them, each pool's account and paths moved into tmp (the
    test cannot make 1,100 accounts)."""
    pool_d = tmp / "pool.d"
    pool_d.mkdir()
    (tmp / "php-fpm.conf").write_text(f"[global]\npid = {tmp}/fpm.pid\nerror_log = {tmp}/error.log\n"
                                      f"daemonize = no\ninclude = {pool_d}/*.conf\n")
    if with_limits:
        (pool_d / env_render.FPM_LIMITS).write_text(env_render.render_fpm_limits())
    for number in range(POOLS):
        name = f"e{number:04d}"
        text = env_render.render_pool({"name": name, "php": PHP}, "/srv/env")
        text = (text.replace(f"user = {name}", "user = nobody").replace(f"group = {name}", "group = nogroup")
                .replace("listen.owner = www-data\n", "").replace("listen.group = www-data\n", "")
                .replace(env_render.socket_path(name), f"{tmp}/{name}.sock")
                .replace(f"chdir = /srv/env/{name}/htdocs", f"chdir = {tmp}"))
        (pool_d / f"{env_render.pool_name(name)}.conf").write_text(text)
    return tmp


def start(tmp: Path) -> tuple[int, str, str]:
    """FPM started under systemd's default soft limit (1024; the hard limit as it is): the sockets it listens
    on once settled, its error log, and the master's open-files line."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < env_render.FPM_MAX_FILES:
        pytest.fail(f"this host's hard limit of open files ({hard}) is below the master's "
                    f"{env_render.FPM_MAX_FILES}: the test cannot show the limit raised")

    def systemd_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))

    proc = subprocess.Popen([fpm_binary(), "--fpm-config", str(tmp / "php-fpm.conf"), "--allow-to-run-as-root"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=systemd_soft_limit)
    limits = ""
    try:
        deadline = time.monotonic() + 60
        sockets = 0
        while time.monotonic() < deadline and proc.poll() is None:
            now = len(list(tmp.glob("*.sock")))
            if now == sockets and now and (tmp / "fpm.pid").exists():
                break
            sockets = now
            time.sleep(1)
        if proc.poll() is None and (tmp / "fpm.pid").exists():
            limits = next((line for line in Path(f"/proc/{proc.pid}/limits").read_text().splitlines()
                           if line.startswith("Max open files")), "")
        sockets = len(list(tmp.glob("*.sock")))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    log = (tmp / "error.log").read_text() if (tmp / "error.log").exists() else ""
    return sockets, log, limits


def test_without_the_limit_fpm_refuses_to_start_with_a_thousand_pools(tmp_path: Path) -> None:
    sockets, log, _ = start(pool_tree(tmp_path, with_limits=False))
    assert "Too many open files" in log and "FPM initialization failed" in log, log[-2000:]


def test_the_env_roles_global_file_lets_the_master_hold_every_pool(tmp_path: Path) -> None:
    sockets, log, limits = start(pool_tree(tmp_path, with_limits=True))
    assert "ERROR" not in log, log[-2000:]
    assert sockets == POOLS, (sockets, log[-2000:])
    assert limits.split()[3:5] == [str(env_render.FPM_MAX_FILES)] * 2, limits
