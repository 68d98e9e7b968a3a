"""Draining a server and putting it back through HAProxy's runtime API, against a real haproxy on 127.0.0.1 with
its admin socket, in front of two small HTTP servers: a request in flight on the drained server ends with its
answer, no new one goes there, and after `enable` it serves again. A rolling reboot's plan for one node runs
against it too (its other hosts the fake transport of tests/unit/rolling_fake.py)."""

from __future__ import annotations

import http.server
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from goldenimage.apply import haproxy_runtime as runtime

pytestmark = pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy is needed (scripts/install-deps)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Named(http.server.BaseHTTPRequestHandler):
    """Answers its server's name; /slow?S waits S seconds first."""

    def do_GET(self) -> None:  # noqa: N802 -- http.server's name
        if self.path.startswith("/slow"):
            time.sleep(float(self.path.partition("?")[2] or 2))
        body = self.server.name.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Balancer:
    url: str
    send: runtime.Send
    admin: Path
    #: the same two servers as a TCP pool the way the lb role writes the SQL one: web1 active, web2 its backup
    sql_url: str


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[Balancer]:
    backends = []
    for name in ("web1", "web2"):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Named)
        server.name = name  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        backends.append(server)
    port, sql_port, admin = free_port(), free_port(), tmp_path / "admin.sock"
    (tmp_path / "haproxy.cfg").write_text(f"""global
    stats socket {admin} mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend web
    bind 127.0.0.1:{port}
    default_backend web
backend web
    balance roundrobin
    server web1 127.0.0.1:{backends[0].server_address[1]} check inter 500ms
    server web2 127.0.0.1:{backends[1].server_address[1]} check inter 500ms
frontend sql
    bind 127.0.0.1:{sql_port}
    mode tcp
    default_backend sql
backend sql
    mode tcp
    default-server inter 500ms fall 2 rise 3 on-marked-down shutdown-sessions
    server web1 127.0.0.1:{backends[0].server_address[1]} check
    server web2 127.0.0.1:{backends[1].server_address[1]} check backup
""")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(tmp_path / "haproxy.cfg")], stdout=subprocess.DEVNULL,
                            stderr=(tmp_path / "haproxy.log").open("wb"))
    try:
        send = runtime.unix_socket(str(admin))
        for _ in range(100):  # at most 10 s until both servers are UP
            if admin.exists():
                try:
                    states = [s.status for b in ("web", "sql") for s in runtime.servers(send, b).values()]
                    if all(status.startswith("UP") for status in states):
                        break
                except OSError:
                    pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"haproxy did not come up: {(tmp_path / 'haproxy.log').read_text()[-1000:]}")
        yield Balancer(f"http://127.0.0.1:{port}", send, admin, f"http://127.0.0.1:{sql_port}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for server in backends:
            server.shutdown()
            server.server_close()


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 (127.0.0.1)
        return str(answer.read().decode())


def test_drain_waits_for_the_request_in_flight_and_sends_no_new_one(balancer: Balancer) -> None:
    answers: list[str] = []
    slow = [threading.Thread(target=lambda: answers.append(get(balancer.url + "/slow?2"))) for _ in range(2)]
    for thread in slow:  # round robin: one slow request on each server
        thread.start()
    time.sleep(0.5)
    assert runtime.state(balancer.send, "web", "web1").sessions == 1
    took = runtime.drain(balancer.send, "web", "web1")
    assert took >= 1.0  # it waited for web1's slow request
    for thread in slow:
        thread.join(timeout=10)
    assert sorted(answers) == ["web1", "web2"]  # the drained server's request ended with its answer
    assert runtime.state(balancer.send, "web", "web1").status == "MAINT"
    assert {get(balancer.url) for _ in range(10)} == {"web2"}
    runtime.enable(balancer.send, "web", "web1")
    assert runtime.state(balancer.send, "web", "web1").status.startswith("UP")
    assert {get(balancer.url) for _ in range(10)} == {"web1", "web2"}


def test_a_drain_that_does_not_finish_puts_the_server_back(balancer: Balancer) -> None:
    slow = [threading.Thread(target=lambda: get(balancer.url + "/slow?3")) for _ in range(2)]
    for thread in slow:
        thread.start()
    time.sleep(0.5)
    with pytest.raises(runtime.RuntimeApiError, match="still had 1 sessions after 1s"):
        runtime.drain(balancer.send, "web", "web1", timeout=1.0)
    assert runtime.state(balancer.send, "web", "web1").status.startswith("UP")
    for thread in slow:
        thread.join(timeout=10)


def test_an_unknown_server_is_refused_before_anything_changes(balancer: Balancer) -> None:
    with pytest.raises(runtime.RuntimeApiError, match="no server web/web9"):
        runtime.drain(balancer.send, "web", "web9")


@dataclass
class OnePlan:
    """What one node's rolling reboot did, against the real haproxy as load balancer lb1."""

    outcome: str
    drain_seconds: float
    events: list[str]
    at_change: list[runtime.ServerState]
    served_meanwhile: set[str]
    progress: list[str]


def reboot_one_node(balancer: Balancer, monkeypatch: pytest.MonkeyPatch, backend: str, name: str,
                    url: str) -> OnePlan:
    """The rolling reboot's plan for node `name` of `backend` (the other hosts: tests/unit/rolling_fake.py); as it
    changes, its state on the balancer and who answers through `url` are recorded."""
    from goldenimage.apply.inventory import Inventory
    from goldenimage.apply.target import parse_target
    from goldenimage.apply.transport import SSHOptions
    from goldenimage.rolling.changes import RebootChange
    from goldenimage.rolling.hosts import Hosts, Waits
    from goldenimage.rolling.order import Kind, Node, Pool
    from goldenimage.rolling.upgrade import Rolling
    from tests.unit.rolling_fake import World, factory, ha_plan

    monkeypatch.setattr("goldenimage.apply.remote_agent.shipped_agent", lambda: b"agent")
    at_change: list[runtime.ServerState] = []
    served: set[str] = set()

    def on_change(changing: str) -> None:  # the node reboots now: it must be out of the pool, its requests done
        at_change.append(runtime.state(balancer.send, backend, changing))
        served.update(get(url) for _ in range(6))

    world = World(real={"lb1": str(balancer.admin)}, on_change=on_change)
    world.hosts[name] = world.hosts["web1"]  # the fake world's web1 stands for whichever node this is
    for host in world.hosts.values():
        host.needs_reboot = host is world.hosts[name]
    inventory = Inventory(Path("inventory.yaml"), {h.name: parse_target(h.address) for h in ha_plan()})
    waits = Waits(drain=20, up=20, health=5, boot=5, address=5, poll=0.05, runtime_poll=0.2)
    hosts = Hosts(inventory, SSHOptions(), factory(world), {h.name: h.profile for h in ha_plan()})
    node = Node(name, "web", Kind.WEB, pools=(Pool("lb1", backend, name),), standin=True)
    progress: list[str] = []
    results = Rolling(hosts, [node], RebootChange(hosts, waits), waits=waits, progress=progress.append).run()
    return OnePlan(results[0].outcome, results[0].seconds.get("drain", 0.0), [e.split(" [")[0] for e in world.events],
                   at_change, served, progress)


def test_a_rolling_reboot_drains_the_node_on_a_real_haproxy_before_it_changes_and_puts_it_back(
        balancer: Balancer, monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[str] = []
    slow = [threading.Thread(target=lambda: answers.append(get(balancer.url + "/slow?4"))) for _ in range(2)]
    for thread in slow:  # round robin: one slow request on each server, in flight as the plan starts
        thread.start()
    time.sleep(0.5)
    done = reboot_one_node(balancer, monkeypatch, "web", "web1", balancer.url)
    for thread in slow:
        thread.join(timeout=10)
    assert done.outcome == "changed"
    assert done.events == ["lb1: web/web1 drain", "lb1: web/web1 maint", "web1 reboot", "lb1: web/web1 ready"]
    assert done.drain_seconds >= 1.0  # it waited for web1's slow request
    assert sorted(answers) == ["web1", "web2"]  # which ended with its answer
    assert [(s.status, s.sessions) for s in done.at_change] == [("MAINT", 0)]
    assert done.served_meanwhile == {"web2"}
    assert runtime.state(balancer.send, "web", "web1").status.startswith("UP")
    assert {get(balancer.url) for _ in range(10)} == {"web1", "web2"}
    assert "web1: back in service" in done.progress


def test_the_active_server_of_a_pool_with_a_backup_hands_new_connections_to_it_while_it_changes(
        balancer: Balancer, monkeypatch: pytest.MonkeyPatch) -> None:
    assert {get(balancer.sql_url) for _ in range(4)} == {"web1"}  # the active one takes every connection
    done = reboot_one_node(balancer, monkeypatch, "sql", "web1", balancer.sql_url)
    assert done.events == ["lb1: sql/web1 drain", "lb1: sql/web1 maint", "web1 reboot", "lb1: sql/web1 ready"]
    assert [(s.status, s.sessions) for s in done.at_change] == [("MAINT", 0)]
    assert done.served_meanwhile == {"web2"}  # the backup, while the active server was out
    assert {get(balancer.sql_url) for _ in range(4)} == {"web1"}  # and the active one again once it is UP
