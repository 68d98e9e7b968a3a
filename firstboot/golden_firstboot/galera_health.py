"""`golden-firstboot galera-health`: HTTP for the load balancers' checks, like clustercheck. GET / is 200 while
the node may take SQL, GET /primary while it is in a primary component (firstboot/README.md)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

CONF = "/etc/golden/galera-health.json"
QUERY = ("SHOW GLOBAL STATUS WHERE Variable_name IN "
         "('wsrep_ready', 'wsrep_local_state', 'wsrep_cluster_status', 'wsrep_local_state_comment');\n")
MYSQL = ["mysql", "--protocol=socket", "--user=root", "--batch", "--skip-column-names", "--connect-timeout=3"]
POLL_SECONDS = 1.0
STALE_SECONDS = 10.0
DONOR = "2"
SYNCED = "4"


def read_status() -> dict[str, str]:
    """The node's wsrep status; {} when MariaDB does not answer (a service: mysql is called directly)."""
    try:
        done = subprocess.run(MYSQL, input=QUERY, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if done.returncode != 0:
        return {}
    out = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition("\t")
        out[key.lower()] = value
    return out


def verdict(status: dict[str, str], donor_ok: bool) -> tuple[bool, bool]:
    """(may take SQL, is in a primary component) from the wsrep status."""
    primary = status.get("wsrep_cluster_status") == "Primary" and status.get("wsrep_ready") == "ON"
    state = status.get("wsrep_local_state")
    return primary and (state == SYNCED or (donor_ok and state == DONOR)), primary


class Checker:
    """The status as a poller last read it. A check is answered at once from that reading and never waits for
    MariaDB: a donor starved by a state transfer answered its checks in more than HAProxy's 2 s, was marked
    down and left the SQL pool without a server (HA drill 3). A reading older than STALE_SECONDS counts as
    down, so a poller that is stuck is not mistaken for a healthy node."""

    def __init__(self, donor_ok: bool, read: Callable[[], dict[str, str]] = read_status,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.donor_ok = donor_ok
        self.read = read
        self.clock = clock
        self.lock = threading.Lock()
        self.at = -1e9
        self.status: dict[str, str] = {}

    def refresh(self) -> None:
        """One reading (the poller's: it may take seconds on a busy node)."""
        status = self.read()
        with self.lock:
            self.status = status
            self.at = self.clock()

    def poll(self, stop: threading.Event, interval: float = POLL_SECONDS) -> None:
        """Read the status every `interval` seconds until `stop` is set."""
        while not stop.is_set():
            self.refresh()
            stop.wait(interval)

    def current(self) -> dict[str, str]:
        with self.lock:
            if self.clock() - self.at > STALE_SECONDS:
                return {}
            return dict(self.status)

    def answer(self, path: str) -> tuple[int, str]:
        status = self.current()
        ok, primary = verdict(status, self.donor_ok)
        passed = primary if path.rstrip("/") == "/primary" else ok
        text = "{} {}\n".format(status.get("wsrep_local_state_comment") or "down",
                                status.get("wsrep_cluster_status") or "-")
        return (200 if passed else 503), text


def serve(conf_path: str = CONF) -> int:
    with open(conf_path) as handle:
        conf = json.load(handle)
    checker = Checker(bool(conf.get("donor_ok")))
    threading.Thread(target=checker.poll, args=(threading.Event(),), daemon=True).start()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 -- http.server's name
            code, text = checker.answer(self.path)
            body = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 -- http.server's signature
            pass  # one line per check would flood the journal

    server = ThreadingHTTPServer((str(conf.get("address", "0.0.0.0")), int(conf.get("port", 9200))), Handler)
    server.daemon_threads = True
    server.serve_forever()
    return 0
