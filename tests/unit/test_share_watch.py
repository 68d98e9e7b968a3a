"""The web node's share watcher: a probe that does not answer is killed and reported down, no second child while
a killed one lingers, an unmounted share is mounted again (bounded, not more often than allowed), and recovery
needs nothing but the share answering again. Plus the step that installs it, and the health endpoint's pieces."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import yaml

from tests.unit.firstboot_fake import FakeHost, make_root

from golden_firstboot import share_watch  # isort: skip  (on sys.path through firstboot_fake)
from golden_firstboot.roles import web  # isort: skip

MOUNT, SOURCE = "/var/www/html", "10.10.0.30:/srv/nfs/www"
MOUNTED = f"/dev/vda1 / ext4 rw 0 0\n{SOURCE} {MOUNT} nfs4 rw,hard 0 0\n"
PROFILES = Path(__file__).resolve().parents[2] / "profiles"


class Child:
    """A child process whose exit the test decides; kill() only takes effect when `killable`."""

    def __init__(self, argv: list[str], code: int | None, killable: bool) -> None:
        self.argv, self.code, self.killable, self.killed = argv, code, killable, False

    def poll(self) -> int | None:
        return self.code

    def kill(self) -> None:
        self.killed = True
        if self.killable:
            self.code = -9


class World:
    """The clock, the mount table and the children the watcher starts."""

    def __init__(self, mounts: str = MOUNTED) -> None:
        self.now = 100.0
        self.mounts = mounts
        self.children: list[Child] = []
        self.next_code: int | None = 0
        self.killable = True

    def spawn(self, argv: list[str], **_: Any) -> Child:
        child = Child(argv, self.next_code, self.killable)
        self.children.append(child)
        return child

    def watcher(self) -> share_watch.Watcher:
        return share_watch.Watcher(MOUNT, SOURCE, spawn=self.spawn, clock=lambda: self.now,
                                   mounts=lambda: self.mounts, probe_timeout=3, mount_timeout=30, mount_every=15)

    def ticks(self, watcher: share_watch.Watcher, seconds: int) -> dict[str, Any]:
        status: dict[str, Any] = {}
        for _ in range(seconds):
            status = watcher.tick()
            self.now += 1
        return status


def test_an_answering_share_is_up_and_probed_by_statfs_in_a_child():
    world = World()
    watcher = world.watcher()
    status = world.ticks(watcher, 3)
    assert status["ok"] is True and status["detail"] == "answering"
    assert world.children[0].argv == ["stat", "--file-system", "--format=%i", MOUNT]
    assert all(not c.killed for c in world.children)


def test_a_probe_that_hangs_is_killed_and_the_share_reported_down_then_up_when_it_answers_again():
    world = World()
    watcher = world.watcher()
    assert world.ticks(watcher, 2)["ok"] is True
    world.next_code = None  # the server stops answering: the next probe waits
    status = world.ticks(watcher, 2)
    assert status["ok"] is True  # within the probe's deadline nothing is decided yet
    status = world.ticks(watcher, 3)
    assert [c.killed for c in world.children].count(True) == 1
    assert status["ok"] is True and "down if the next probe" in status["detail"]  # one miss is not an outage
    # the killed probe exited (the NFS wait is killable): a new probe, which hangs as well
    status = world.ticks(watcher, 4)
    assert [c.killed for c in world.children].count(True) == 2
    assert status["ok"] is False and "no answer" in status["detail"] and "2 probes in a row" in status["detail"]
    world.next_code = 0  # the server is back
    world.children[-1].code = 0
    status = world.ticks(watcher, 3)
    assert status["ok"] is True and status["detail"] == "answering"


def test_one_late_answer_on_a_starved_host_is_not_an_outage():
    world = World()
    watcher = world.watcher()
    world.ticks(watcher, 2)
    world.next_code = None
    world.ticks(watcher, 5)  # one probe killed at its deadline
    assert [c.killed for c in world.children].count(True) == 1
    world.next_code = 0  # the next one answers
    world.children[-1].code = 0
    seen = [watcher.tick()["ok"] for _ in range(3)]
    assert all(seen) and watcher.detail == "answering"


def test_no_second_child_while_a_killed_probe_lingers():
    world = World()
    watcher = world.watcher()
    world.next_code, world.killable = None, False
    status = world.ticks(watcher, 60)
    assert len(world.children) == 1 and world.children[0].killed
    assert status["ok"] is False and "has not exited" in status["detail"]


def test_an_unmounted_share_is_down_and_mounted_again_at_a_bounded_pace():
    world = World(mounts="/dev/vda1 / ext4 rw 0 0\n")
    watcher = world.watcher()
    world.next_code = 32  # mount fails: the server is still down
    status = world.ticks(watcher, 31)
    mounts = [c for c in world.children if c.argv == ["mount", MOUNT]]
    assert status["ok"] is False and status["detail"].startswith("not mounted")
    assert len(mounts) == 3  # at 0, 15 and 30 s: not one per tick
    assert not any(c.argv[0] == "stat" for c in world.children)  # the empty local directory is never probed
    world.next_code = 0
    world.mounts = MOUNTED  # the server came back and the last mount worked
    status = world.ticks(watcher, 20)
    assert status["ok"] is True


def test_a_mount_that_hangs_is_killed():
    world = World(mounts="")
    watcher = world.watcher()
    world.next_code = None
    status = world.ticks(watcher, 32)
    assert world.children[0].argv[0] == "mount" and world.children[0].killed
    assert status["ok"] is False


def test_another_filesystem_on_the_mount_point_is_not_the_share():
    assert share_watch.mounted_source(MOUNTED, MOUNT) == SOURCE
    assert share_watch.mounted_source(f"{SOURCE} {MOUNT} nfs4 rw 0 0\ntmpfs {MOUNT} tmpfs rw 0 0\n", MOUNT) == ""
    assert share_watch.mounted_source("/dev/vda1 / ext4 rw 0 0\n", MOUNT) == ""


def test_status_is_written_whole_and_readable_by_the_web_server(tmp_path):
    path = tmp_path / "share.json"
    share_watch.write_status({"ok": False, "at": 5, "detail": "x"}, str(path))
    assert json.loads(path.read_text())["ok"] is False
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert not (tmp_path / "share.json.new").exists()


IMAGE = {"roles": ["web"], "settings": {"web": {"document_root": "/var/www/html"}},
         "release_vars": {"php": "8.2"}}


def test_the_step_configures_and_starts_the_watcher_for_a_host_with_a_share(tmp_path):
    host = {"address": "10.10.0.21", "web": {"nfs": {"server": "10.10.0.30", "export": "/srv/nfs/www"}}}
    make_root(str(tmp_path), {"image": IMAGE, "host": host, "files": {}})
    fake = FakeHost(str(tmp_path), {"active": []})
    ctx = fake.context(IMAGE, host)
    assert web.share_watch_service.applies(ctx)
    assert web.share_watch_service.apply(ctx)
    conf = json.loads((tmp_path / share_watch.CONF[1:]).read_text())
    assert conf == {"mount": MOUNT, "source": SOURCE}
    unit = (tmp_path / web.SHARE_UNIT_PATH[1:]).read_text()
    assert "ExecStart=/usr/local/sbin/golden-firstboot share-watch" in unit and "Restart=always" in unit
    assert "RuntimeDirectory=golden-web" in unit
    assert "systemctl start golden-share-watch.service" in fake.commands
    fake.commands = []
    assert not web.share_watch_service.apply(fake.context(IMAGE, host))  # a second run changes nothing


def test_a_host_without_a_share_keeps_todays_health_endpoint(tmp_path):
    host = {"address": "10.10.0.21", "web": {"vhosts": [{"server_name": "www.example.com"}]}}
    make_root(str(tmp_path), {"image": IMAGE, "host": host, "files": {}})
    ctx = FakeHost(str(tmp_path), {"active": []}).context(IMAGE, host)
    assert not web.share_watch_service.applies(ctx)
    # health.php only looks at the watcher's status when the share's configuration exists
    files = {f["path"]: f["content"] for f in yaml.safe_load((PROFILES / "roles" / "web.yaml").read_text())["files"]}
    php = files["/usr/share/golden/health/health.php"]
    assert f"file_exists('{share_watch.CONF}')" in php and share_watch.STATUS in php
    assert "http_response_code(503)" in php


def test_the_health_endpoint_has_its_own_pool_and_application_requests_are_bounded():
    files = {f["path"]: f["content"] for f in yaml.safe_load((PROFILES / "roles" / "web.yaml").read_text())["files"]}
    apache = files["/etc/apache2/conf-available/golden-health.conf"]
    pool = files["/etc/php/{{ php }}/fpm/pool.d/golden-health.conf"]
    assert "<Location /healthz>" in apache and "golden-health.sock" in apache
    assert "listen = /run/php/golden-health.sock" in pool and "request_terminate_timeout = 5s" in pool
    assert "[www]\nrequest_terminate_timeout = 60s" in files["/etc/php/{{ php }}/fpm/pool.d/zz-golden-www.conf"]
    assert "hard" in web.NFS_OPTIONS.split(",") and "soft" not in web.NFS_OPTIONS
