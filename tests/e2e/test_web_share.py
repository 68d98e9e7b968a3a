"""A web node whose docroot is an NFS share, and the share's server stopped then started again: the health
endpoint answers 503 (quickly, never hanging, even with application workers stuck on the share) while the share
is dead, and 200 again once it returns, with no reboot and no stuck worker left.

Two guests (nfs1, web1) on a private network the test builds. Marked `vm` and `extended`: `make test-extended`
runs it; `make test` does not.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from goldenimage.verify.vm import VM
from tests.e2e.cluster_boot import booted_cluster
from tests.e2e.test_cluster_sql import wait_firstboot

pytestmark = [pytest.mark.vm, pytest.mark.extended]
POLL = 2
#: Every request the test makes is bounded: a hung request shows up as curl's code 000, never as a hung test.
CURL_MAX = 5
CLUSTER = {
    "name": "share",
    "network": "10.10.0.0/24",
    "interface": {"mac_prefix": "52:54:00:10:00", "name": "eth1"},
    "uplink": {"mac_prefix": "52:54:00:20:00", "name": "eth0"},
    "hosts": [
        {"name": "nfs1", "profile": "nfs", "address": "10.10.0.30", "exports": ["/srv/nfs/www"]},
        {"name": "web1", "profile": "web", "address": "10.10.0.21", "nfs": "nfs1"},
    ],
}


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, VM]]:
    with booted_cluster(CLUSTER, tmp_path_factory.mktemp("web-share")) as vms:
        for vm in vms.values():
            wait_firstboot(vm)
        yield vms


def get(web: VM, path: str, max_time: int = CURL_MAX) -> tuple[str, str]:
    """(HTTP code, body) of one request made on the web node; code 000 when it got no answer in max_time."""
    out = web.ssh(f"curl -s -m {max_time} -w '\\n%{{http_code}}' http://127.0.0.1{path}; true",
                  timeout=max_time + 60).stdout
    body, _, code = out.rpartition("\n")
    return code.strip(), body.strip()


def wait_code(web: VM, wanted: str, seconds: float) -> list[str]:
    """Poll /healthz until it answers `wanted` (bounded); every code seen, in order."""
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        code, _ = get(web, "/healthz")
        seen.append(code)
        if code == wanted:
            break
        time.sleep(POLL)
    return seen


def stuck_workers(web: VM) -> list[str]:
    """apache2 and php-fpm processes in an uninterruptible wait (state D)."""
    out = web.ssh("ps -eo stat=,pid=,comm= | awk '$1 ~ /^D/ && $3 ~ /apache2|php-fpm/'").stdout
    return [line for line in out.splitlines() if line.strip()]


def test_health_fails_fast_on_a_dead_share_and_recovers_without_reboot(hosts):
    nfs, web = hosts["nfs1"], hosts["web1"]
    boot_id = web.ssh("cat /proc/sys/kernel/random/boot_id").stdout.strip()
    assert web.ssh("systemctl is-active golden-share-watch.service", check=False).stdout.strip() == "active"
    nfs.ssh("printf 'shared page\\n' | sudo tee /srv/nfs/www/data.txt >/dev/null && "
            "printf '<?php echo file_get_contents(__DIR__ . \"/data.txt\");\\n' "
            "| sudo tee /srv/nfs/www/page.php >/dev/null")
    assert get(web, "/healthz")[0] == "200"
    assert get(web, "/page.php") == ("200", "shared page")

    nfs.ssh("sudo systemctl stop nfs-server")
    try:
        # Application requests that will wait on the dead share: more than the application pool's workers.
        web.ssh("for i in $(seq 8); do setsid -f curl -s -m 30 -o /dev/null http://127.0.0.1/page.php "
                "</dev/null >/dev/null 2>&1; done")
        seen = wait_code(web, "503", 120)
        assert seen[-1] == "503", f"/healthz never answered 503 while the share was dead: {seen}"
        # Every answer came back (no 000: no health request hung), and it stays 503 while the share is dead,
        # with application workers stuck on it.
        assert "000" not in seen, seen
        later = [get(web, "/healthz") for _ in range(3)]
        assert [code for code, _ in later] == ["503"] * 3, later
        assert "share down web1" in later[0][1], later
        down = web.ssh("cat /run/golden-web/share.json").stdout
        assert json.loads(down)["ok"] is False, down
    finally:
        nfs.ssh("sudo systemctl start nfs-server")

    seen = wait_code(web, "200", 300)
    assert seen[-1] == "200", f"/healthz did not come back to 200 after the share returned: {seen[-10:]}"
    assert get(web, "/page.php") == ("200", "shared page")
    assert web.ssh("cat /proc/sys/kernel/random/boot_id").stdout.strip() == boot_id  # no reboot
    deadline = time.monotonic() + 120
    stuck = stuck_workers(web)
    while stuck and time.monotonic() < deadline:
        time.sleep(POLL)
        stuck = stuck_workers(web)
    assert stuck == [], stuck
    journal = web.ssh("sudo journalctl -b -u golden-share-watch --no-pager -o cat", check=False).stdout
    said = [line for line in journal.splitlines() if line.startswith("share ")]
    assert any("DOWN" in line for line in said) and said[-1].endswith("answering"), said
