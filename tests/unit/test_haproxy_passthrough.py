"""HTTPS through the load balancer: a real haproxy on 127.0.0.1 runs the frontend and backends the lb role renders
for the cluster's port 443 (TCP pass-through to the web nodes), in front of two "web nodes" on 127.0.0.2 and
127.0.0.3 (loopback), each with a health endpoint over HTTP and a TLS server holding two sites' certificates,
chosen by SNI as Apache does. A client through haproxy gets the site's own certificate from the node (TLS is not
ended on the balancer); a node out of the HTTP pool, or whose TLS port refuses, receives no HTTPS request; a drain
waits for an HTTPS connection in flight."""

from __future__ import annotations

import datetime
import errno
import http.server
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from goldenimage.apply import haproxy_runtime as runtime
from goldenimage.render.cluster import FRONTENDS, TLS_BACKEND
from tests.unit import firstboot_fake  # noqa: F401 -- puts the agent on sys.path

from golden_firstboot.roles import lb  # isort: skip  (on sys.path through firstboot_fake)

pytestmark = pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy is needed (scripts/install-deps)")

SITES = ("a.golden-test.net", "b.golden-test.net")
NODES = {"web1": "127.0.0.2", "web2": "127.0.0.3"}


def self_signed(name: str, directory: Path) -> tuple[Path, Path]:
    """A site's certificate and key, as files (the node's), for one name."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class Node:
    """A web node on its own loopback address: HTTP health on `http_port`, TLS on `tls_port` (both sites)."""

    name: str
    address: str
    certs: dict[str, tuple[Path, Path]]
    healthy: bool = True
    #: HTTPS requests answered: (site from SNI) per request
    served: list[str] = field(default_factory=list)
    #: a request held open until this event is set (a connection in flight)
    hold: threading.Event | None = None
    http: http.server.ThreadingHTTPServer | None = None
    tls: socket.socket | None = None

    def start_http(self, port: int) -> None:
        node = self

        class Health(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 -- http.server's name
                self.send_response(200 if node.healthy and self.path == "/healthz" else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.http = http.server.ThreadingHTTPServer((self.address, port), Health)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def start_tls(self, port: int) -> None:
        contexts = {}
        for site, (cert, key) in self.certs.items():
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            contexts[site] = context
        default = contexts[SITES[0]]

        def by_sni(sock: ssl.SSLSocket, name: str | None, _: ssl.SSLContext) -> None:
            if name in contexts:
                sock.context = contexts[name]
            sock.sni = name  # type: ignore[attr-defined]  # what this connection asked for

        default.sni_callback = by_sni  # type: ignore[assignment]
        self.tls = socket.create_server((self.address, port))
        self.tls.settimeout(0.2)
        listener = self.tls

        def serve(conn: socket.socket) -> None:
            try:
                conn.settimeout(10)
                with default.wrap_socket(conn, server_side=True) as tls:  # health checks close here: no handshake
                    tls.recv(4096)
                    site = str(getattr(tls, "sni", None))
                    self.served.append(site)
                    if self.hold is not None:
                        self.hold.wait(10)
                    tls.sendall(f"HTTP/1.0 200 OK\r\n\r\n{self.name} {site}".encode())
            except (OSError, ssl.SSLError):
                pass

        def accept() -> None:
            while listener.fileno() != -1:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                threading.Thread(target=serve, args=(conn,), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()

    def close_tls(self) -> None:
        if self.tls is not None:
            self.tls.close()

    def stop(self) -> None:
        self.close_tls()
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()


def ports_free_on_every_node() -> tuple[int, int]:
    """Two port numbers free on both node addresses (the health check asks each node on the same port)."""
    for _ in range(50):
        found = []
        for _ in range(2):
            with socket.socket() as probe:
                probe.bind((NODES["web1"], 0))
                port = int(probe.getsockname()[1])
            try:
                with socket.socket() as other:
                    other.bind((NODES["web2"], port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                break
            found.append(port)
        if len(found) == 2 and found[0] != found[1]:
            return found[0], found[1]
    raise RuntimeError("no port free on both 127.0.0.2 and 127.0.0.3")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lb_settings(http_port: int, tls_port: int, front_http: int, front_tls: int) -> dict[str, object]:
    """The lb settings the cluster renders (frontends and both backends), on these loopback ports."""
    servers = [{"name": name, "address": address, "port": http_port} for name, address in NODES.items()]
    frontends = [dict(f) for f in FRONTENDS]
    frontends[0]["bind"], frontends[1]["bind"] = f"127.0.0.1:{front_http}", f"127.0.0.1:{front_tls}"
    return {"health_path": "/healthz", "max_servers": 3, "frontends": frontends, "backends": [
        {"name": "web", "port": http_port, "servers": servers},
        {"name": TLS_BACKEND, "mode": "tcp", "port": tls_port, "follows": "web",
         "servers": [dict(s, port=tls_port) for s in servers]}]}


@dataclass
class Balancer:
    port: int
    send: runtime.Send
    nodes: dict[str, Node]
    certs: dict[str, tuple[Path, Path]]
    config: str


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[Balancer]:
    certs = {site: self_signed(site, tmp_path) for site in SITES}
    http_port, tls_port = ports_free_on_every_node()
    nodes = {name: Node(name, address, certs) for name, address in NODES.items()}
    for node in nodes.values():
        node.start_http(http_port)
        node.start_tls(tls_port)
    front_http, front_tls, admin = free_port(), free_port(), tmp_path / "admin.sock"
    rendered = lb.render_haproxy(lb_settings(http_port, tls_port, front_http, front_tls), {})
    # Debian's haproxy.cfg as far as these sections go (its defaults are HTTP), then the role's cluster section.
    config = f"""global
    stats socket {admin} mode 600 level admin
    log stderr format raw local0
defaults
    log global
    mode http
    option httplog
    timeout connect 5s
    timeout client 50s
    timeout server 50s
{rendered}
"""
    (tmp_path / "haproxy.cfg").write_text(config)
    check = subprocess.run(["haproxy", "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "WARNING" not in check.stdout + check.stderr, check.stdout + check.stderr
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(tmp_path / "haproxy.cfg")], stdout=subprocess.DEVNULL,
                            stderr=(tmp_path / "haproxy.log").open("wb"))
    try:
        send = runtime.unix_socket(str(admin))
        wait_for(lambda: admin.exists() and all(
            s.status.startswith("UP") for b in ("web", TLS_BACKEND) for n, s in runtime.servers(send, b).items()
            if n in NODES), "both nodes UP", tmp_path)
        yield Balancer(front_tls, send, nodes, certs, rendered)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for node in nodes.values():
            node.stop()


def wait_for(ready: object, what: str, tmp_path: Path | None = None, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if ready():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.1)
    log = (tmp_path / "haproxy.log").read_text()[-1000:] if tmp_path else ""
    raise AssertionError(f"not after {seconds:.0f}s: {what} {log}")


def https(balancer: Balancer, site: str) -> tuple[str, bytes]:
    """One HTTPS request through the balancer with SNI `site`, trusting that site's certificate only: (the answer,
    the certificate the client was shown, DER)."""
    context = ssl.create_default_context(cafile=str(balancer.certs[site][0]))
    with socket.create_connection(("127.0.0.1", balancer.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=site) as tls:
        der = tls.getpeercert(binary_form=True)
        tls.sendall(f"GET / HTTP/1.0\r\nHost: {site}\r\n\r\n".encode())
        answer = b""
        while chunk := tls.recv(4096):
            answer += chunk
    assert der is not None
    return answer.decode().split("\r\n\r\n", 1)[1], der


def der_of(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def status(balancer: Balancer, backend: str, server: str) -> str:
    return runtime.state(balancer.send, backend, server).status


def test_the_rendered_443_frontend_passes_tls_through_with_sni_to_every_node(balancer: Balancer) -> None:
    assert "frontend www-tls\n    bind 127.0.0.1:" in balancer.config
    answers = []
    for site in (SITES[0], SITES[0], SITES[1], SITES[1]):  # round robin: each site on each node
        answer, der = https(balancer, site)
        assert der == der_of(balancer.certs[site][0])  # the node's certificate for that name, not the balancer's
        answers.append(answer)
    # each site's name reached the node (SNI intact), on both nodes
    assert sorted(answers) == sorted(f"{n} {s}" for n in NODES for s in SITES)


def test_a_node_out_of_the_http_pool_receives_no_https_request(balancer: Balancer) -> None:
    balancer.nodes["web2"].healthy = False  # its health endpoint answers 503
    wait_for(lambda: all(status(balancer, b, "web2").startswith("DOWN") for b in ("web", TLS_BACKEND)),
             "web2 DOWN in both pools")
    before = len(balancer.nodes["web2"].served)
    assert {https(balancer, site)[0] for site in SITES * 3} == {f"web1 {s}" for s in SITES}
    assert len(balancer.nodes["web2"].served) == before
    balancer.nodes["web2"].healthy = True
    wait_for(lambda: status(balancer, TLS_BACKEND, "web2").startswith("UP"), "web-tls/web2 UP again")


def test_a_node_whose_tls_port_refuses_is_out_of_the_https_pool_only(balancer: Balancer) -> None:
    balancer.nodes["web2"].close_tls()
    wait_for(lambda: status(balancer, TLS_BACKEND, "web2").startswith("DOWN"), "web-tls/web2 DOWN")
    assert status(balancer, "web", "web2").startswith("UP")  # its HTTP check still passes
    assert {https(balancer, site)[0] for site in SITES * 3} == {f"web1 {s}" for s in SITES}  # no request fails


def test_a_drain_of_the_https_pool_waits_for_the_connection_in_flight(balancer: Balancer) -> None:
    node = balancer.nodes["web1"]
    node.hold = threading.Event()
    answers: list[str] = []
    clients = [threading.Thread(target=lambda: answers.append(https(balancer, SITES[0])[0])) for _ in range(2)]
    for client in clients:  # round robin: one held connection on each node
        client.start()
    wait_for(lambda: runtime.state(balancer.send, TLS_BACKEND, "web1").sessions == 1, "web1's session")
    threading.Timer(1.0, node.hold.set).start()
    took = runtime.drain(balancer.send, TLS_BACKEND, "web1", timeout=15)
    for client in clients:
        client.join(timeout=15)
    assert took >= 0.9 and f"web1 {SITES[0]}" in answers  # it waited, and the request ended with its answer
    assert status(balancer, TLS_BACKEND, "web1") == "MAINT"
    assert {https(balancer, site)[0] for site in SITES * 2} == {f"web2 {s}" for s in SITES}
    runtime.enable(balancer.send, TLS_BACKEND, "web1", timeout=15)
