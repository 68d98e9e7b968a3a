"""Certificates from a real Pebble on loopback: its DNS answers come from pebble-challtestsrv (every name is
127.0.0.1), and its HTTP-01 validation requests reach a loopback server that serves the challenge folder the
same code writes on web nodes (challenge.TreeStore / challenge_file)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from goldenimage.hosting.acme_issue import Issuer, needs_renewal, new_account_key, not_after
from goldenimage.hosting.challenge import CHALLENGE_DIR, TreeStore, challenge_file

BROKEN = "broken.golden-test.net"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tls_pair(tmp: Path) -> tuple[Path, Path, Path]:
    """A CA and Pebble's listener certificate for 127.0.0.1 (Pebble's ACME API is HTTPS only)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "golden test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
          .not_valid_after(now + timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def challenge_server(root: Path, port: int) -> ThreadingHTTPServer:
    """A web node's port 80 as far as HTTP-01 goes: /.well-known/acme-challenge/TOKEN from CHALLENGE_DIR."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 -- http.server's name
            prefix = "/.well-known/acme-challenge/"
            host = (self.headers.get("Host") or "").split(":")[0]
            path = root / CHALLENGE_DIR.lstrip("/") / self.path[len(prefix):]
            if host == BROKEN or not self.path.startswith(prefix) or "/" in self.path[len(prefix):] \
                    or not path.is_file():
                self.send_error(404)
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    if shutil.which("pebble") is None or shutil.which("pebble-challtestsrv") is None:
        if os.environ.get("CI"):
            pytest.fail("pebble is required: scripts/install-deps installs it")
        pytest.skip("pebble is not installed (scripts/install-deps installs it)")
    tmp = tmp_path_factory.mktemp("pebble")
    ca, cert, key = tls_pair(tmp)
    api, management, dns, dns_management, http = (free_port() for _ in range(5))
    config = tmp / "pebble.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{api}", "managementListenAddress": f"127.0.0.1:{management}",
        "certificate": str(cert), "privateKey": str(key), "httpPort": http, "tlsPort": free_port(),
        "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
    env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0")
    log = open(tmp / "pebble.log", "wb")  # noqa: SIM115 -- closed below
    dns_server = subprocess.Popen(
        ["pebble-challtestsrv", "-dns01", f"127.0.0.1:{dns}", "-http01", "", "-https01", "", "-tlsalpn01", "",
         "-management", f"127.0.0.1:{dns_management}", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
        stdout=log, stderr=subprocess.STDOUT)
    ca_server = subprocess.Popen(["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{dns}"],
                                 stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    web_root = tmp / "webnode"
    server = challenge_server(web_root, http)
    directory = f"https://127.0.0.1:{api}/dir"
    context = ssl.create_default_context(cafile=str(ca))
    try:
        for _ in range(100):  # at most 10 s
            try:
                with urllib.request.urlopen(directory, context=context, timeout=2):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("pebble did not answer: " + (tmp / "pebble.log").read_text()[-2000:])
        yield directory, str(ca), web_root
    finally:
        server.shutdown()
        for proc in (ca_server, dns_server):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def test_a_certificate_is_issued_and_renewed_over_http01(pebble: tuple[str, str, Path]) -> None:
    directory, ca, web_root = pebble
    issuer = Issuer(directory, new_account_key(), TreeStore(web_root), ca_bundle=ca, timeout=60)
    domains = ["shop.golden-test.net", "www.shop.golden-test.net"]
    first = issuer.issue("shop", domains)
    cert = x509.load_pem_x509_certificate(first.fullchain_pem.encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)
    assert sorted(names) == sorted(domains)
    assert first.fullchain_pem.count("BEGIN CERTIFICATE") >= 2  # the chain to Pebble's CA comes with it
    assert "PRIVATE KEY" in first.key_pem
    # the answers are gone once the order is done
    assert list((web_root / CHALLENGE_DIR.lstrip("/")).iterdir()) == []
    # renewal: not due now; due a day before expiry, or once the domains change
    assert not needs_renewal(first.fullchain_pem, domains)
    assert needs_renewal(first.fullchain_pem, domains, now=not_after(first.fullchain_pem) - timedelta(days=1))
    assert needs_renewal(first.fullchain_pem, domains[:1])
    renewed = issuer.issue("shop", domains)
    assert x509.load_pem_x509_certificate(renewed.fullchain_pem.encode()).serial_number != cert.serial_number


def test_one_failing_environment_never_stops_the_others(pebble: tuple[str, str, Path]) -> None:
    directory, ca, web_root = pebble
    issuer = Issuer(directory, new_account_key(), TreeStore(web_root), ca_bundle=ca, timeout=60)
    report = issuer.issue_many([("blog", ["blog.golden-test.net"]), ("broken", [BROKEN]),
                                ("wiki", ["wiki.golden-test.net"]), ("late", ["late.golden-test.net"])],
                               workers=3, orders_per_run=3)
    assert [i.name for i in report.issued] == ["blog", "wiki"]
    assert list(report.failed) == ["broken"] and report.failed["broken"]
    assert report.deferred == ["late"]


@pytest.mark.parametrize(("token", "answer"), [
    ("../../etc/passwd", "x" * 20), ("a" * 20, "b" * 20 + ".c" * 10), ("a" * 20, "a" * 20 + ".x\n" + "y" * 20),
    ("a" * 20 + "\n", "a" * 20 + "." + "y" * 20)])
def test_a_challenge_off_the_protocol_is_never_written(token: str, answer: str) -> None:
    with pytest.raises(ValueError):
        challenge_file(token, answer)
