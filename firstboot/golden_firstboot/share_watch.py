"""`golden-firstboot share-watch`: is this web node's shared docroot (NFS) answering? A service writes the answer
to a local status file every second or two; the health endpoint (health.php) reads that file, so neither a
PHP-FPM worker nor HAProxy's check ever touches the share itself (README: High availability).

Why a child process with a deadline: on a `hard` NFS mount (kept for data integrity, nfs(5)) every operation
on a dead server waits until it returns. Those waits are killable (TASK_KILLABLE since Linux 2.6.25): the probe,
`stat --file-system` (statfs is an RPC to the server every time, never answered from a cache), runs as a child
that is SIGKILLed past its deadline. The watcher itself never touches the mount, so it never hangs; at most one
child exists at a time, so a probe stuck in a wait that is not killable cannot pile up more of them. When the
share is not mounted at all (its server was down at boot: the fstab entry is `nofail`), the watcher mounts it,
in a child with a deadline too, so the node comes back by itself when the server does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, Callable

CONF = "/etc/golden/web-share.json"
STATUS_DIR = "/run/golden-web"
STATUS = STATUS_DIR + "/share.json"
UNIT = "golden-share-watch.service"
INTERVAL = 1.0
PROBE_TIMEOUT = 3.0
MOUNT_TIMEOUT = 30.0
MOUNT_EVERY = 15.0
FAILURES_BEFORE_DOWN = 2


def mounted_source(mounts: str, mount: str) -> str:
    """The NFS source mounted on `mount` in /proc/mounts' text ('' when none is): the last mount wins."""
    found = ""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] == mount:
            found = fields[0] if fields[2].startswith("nfs") else ""
    return found


def read_mounts(path: str = "/proc/mounts") -> str:
    # /proc/mounts is the kernel's table: reading it never touches an NFS server.
    with open(path) as handle:
        return handle.read()


class Watcher:
    """One tick at a time: reap or kill the child, start the next probe (or mount), say what is known."""

    def __init__(self, mount: str, source: str, spawn: Callable[..., Any] = subprocess.Popen,
                 clock: Callable[[], float] = time.monotonic, mounts: Callable[[], str] = read_mounts,
                 probe_timeout: float = PROBE_TIMEOUT, mount_timeout: float = MOUNT_TIMEOUT,
                 mount_every: float = MOUNT_EVERY) -> None:
        self.mount, self.source = mount, source
        self.spawn, self.clock, self.mounts = spawn, clock, mounts
        self.probe_timeout, self.mount_timeout, self.mount_every = probe_timeout, mount_timeout, mount_every
        self.child: Any = None
        self.kind = ""
        self.started = 0.0
        self.killed = False
        self.last_mount = -1e9
        self.ok = False
        self.failures = 0
        self.detail = "not probed yet"

    def _start(self, kind: str, argv: list[str]) -> None:
        try:
            self.child = self.spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        except OSError as exc:
            self.ok, self.detail = False, f"cannot run {argv[0]}: {exc.strerror}"
            return
        self.kind, self.started, self.killed = kind, self.clock(), False

    def _failed(self, why: str) -> None:
        """A probe got no answer: down at the second one in a row (a starved host can miss one deadline)."""
        self.failures += 1
        if self.failures >= FAILURES_BEFORE_DOWN or not self.ok:
            self.ok = False
            self.detail = why + ("" if self.failures == 1 else f" ({self.failures} probes in a row)")
        else:
            self.detail = why + ": down if the next probe gets no answer either"

    def _reap(self) -> bool:
        """Handle the running child; True while it still runs (nothing new may start)."""
        code = self.child.poll()
        elapsed = self.clock() - self.started
        if code is not None:
            if self.kind == "probe" and not self.killed:
                if code == 0:
                    self.ok, self.failures, self.detail = True, 0, "answering"
                else:
                    self._failed(f"statfs failed (exit status {code})")
            elif self.kind == "mount" and not self.killed and code != 0:
                self.detail = f"not mounted: mount exited with status {code}"
            self.child = None
            return False
        limit = self.probe_timeout if self.kind == "probe" else self.mount_timeout
        if not self.killed and elapsed >= limit:
            self.child.kill()  # SIGKILL: interrupts the NFS client's killable waits
            self.killed = True
            if self.kind == "probe":
                self._failed(f"no answer from the server within {limit:g} s (probe killed)")
            else:
                self.ok, self.detail = False, f"mount did not finish within {limit:g} s (killed)"
        elif self.killed and elapsed >= 2 * limit:
            # no new probe can start while this one lingers: that is a second failure
            self.ok = False
            self.detail = f"a killed {self.kind} has not exited yet ({elapsed:.0f} s): the share is not answering"
        return True

    def tick(self) -> dict[str, Any]:
        if self.child is not None and self._reap():
            return self.status()
        if mounted_source(self.mounts(), self.mount) != self.source:
            self.ok = False
            if not self.detail.startswith("not mounted"):
                self.detail = f"not mounted: {self.source} on {self.mount}"
            if self.clock() - self.last_mount >= self.mount_every:
                self.last_mount = self.clock()
                self._start("mount", ["mount", self.mount])
            return self.status()
        self._start("probe", ["stat", "--file-system", "--format=%i", self.mount])
        return self.status()

    def status(self) -> dict[str, Any]:
        return {"ok": self.ok, "at": int(time.time()), "mount": self.mount, "source": self.source,
                "detail": self.detail}


def write_status(status: dict[str, Any], path: str = STATUS) -> None:
    """Atomically, readable by the web server (the health endpoint runs as www-data)."""
    tmp = path + ".new"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), "w") as handle:
        handle.write(json.dumps(status, sort_keys=True) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def serve(conf_path: str = CONF, status_path: str = STATUS, interval: float = INTERVAL) -> int:
    with open(conf_path) as handle:
        conf = json.load(handle)
    watcher = Watcher(str(conf["mount"]), str(conf["source"]),
                      probe_timeout=float(conf.get("probe_timeout", PROBE_TIMEOUT)),
                      mount_timeout=float(conf.get("mount_timeout", MOUNT_TIMEOUT)))
    os.makedirs(os.path.dirname(status_path), 0o755, exist_ok=True)
    said = None
    while True:
        status = watcher.tick()
        write_status(status, status_path)
        if status["ok"] != said and status["detail"] != "not probed yet":  # a journal line per change, not per tick
            verdict = "answering" if status["ok"] else "DOWN: " + status["detail"]
            sys.stdout.write("share {} on {}: {}\n".format(status["source"], status["mount"], verdict))
            sys.stdout.flush()
            said = status["ok"]
        time.sleep(interval)
