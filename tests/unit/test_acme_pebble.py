"""Certificates from a real Pebble on loopback: its DNS answers come from pebble-challtestsrv (every name is
127.0.0.1), and its HTTP-01 validation requests reach a loopback server that serves the challenge folder the
same code writes on web nodes (challenge.TreeStore / challenge_file)."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509

from goldenimage.hosting.acme_issue import Issuer, needs_renewal, new_account_key, not_after
from goldenimage.hosting.challenge import CHALLENGE_DIR, TreeStore, challenge_file
from tests.pebble_server import free_port, issuing_root, pebble_server

BROKEN = "broken.golden-test.net"


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
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path, Path]]:
    tmp = tmp_path_factory.mktemp("pebble")
    http = free_port()
    web_root = tmp / "webnode"
    server = challenge_server(web_root, http)
    try:
        with pebble_server(tmp, http) as (directory, ca):
            yield directory, ca, web_root, tmp
    finally:
        server.shutdown()


def test_a_certificate_is_issued_and_renewed_over_http01(pebble: tuple[str, str, Path, Path]) -> None:
    directory, ca, web_root, tmp = pebble
    issuer = Issuer(directory, new_account_key(), TreeStore(web_root), ca_bundle=ca, timeout=60)
    domains = ["shop.golden-test.net", "www.shop.golden-test.net"]
    first = issuer.issue("shop", domains)
    cert = x509.load_pem_x509_certificate(first.fullchain_pem.encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)
    assert sorted(names) == sorted(domains)
    assert first.fullchain_pem.count("BEGIN CERTIFICATE") >= 2  # the chain to Pebble's CA comes with it
    # ... and it leads to the root Pebble issues from (what bench/env's clients trust)
    leaf, _, chain = first.fullchain_pem.partition("-----END CERTIFICATE-----\n")
    (tmp / "root.pem").write_text(issuing_root(tmp))
    (tmp / "chain.pem").write_text(chain)
    (tmp / "leaf.pem").write_text(leaf + "-----END CERTIFICATE-----\n")
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(tmp / "root.pem"), "-untrusted",
                               str(tmp / "chain.pem"), str(tmp / "leaf.pem")], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
    assert "PRIVATE KEY" in first.key_pem
    # the answers are gone once the order is done
    assert list((web_root / CHALLENGE_DIR.lstrip("/")).iterdir()) == []
    # renewal: not due now; due a day before expiry, or once the domains change
    assert not needs_renewal(first.fullchain_pem, domains)
    assert needs_renewal(first.fullchain_pem, domains, now=not_after(first.fullchain_pem) - timedelta(days=1))
    assert needs_renewal(first.fullchain_pem, domains[:1])
    renewed = issuer.issue("shop", domains)
    assert x509.load_pem_x509_certificate(renewed.fullchain_pem.encode()).serial_number != cert.serial_number


def test_one_failing_environment_never_stops_the_others(pebble: tuple[str, str, Path, Path]) -> None:
    directory, ca, web_root, _ = pebble
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
