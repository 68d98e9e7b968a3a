"""The mirror relay QEMU starts per guest connection: allowed mirror hosts only, GET and HEAD only,
several requests on one connection, and the option string QEMU gets."""

from __future__ import annotations

import http.client
import http.server
import io
import threading
from collections.abc import Iterator

import pytest

from goldenimage.verify.mirror_relay import GUEST_PROXY, guestfwd, serve


class _Mirror(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = f"file {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Last-Modified", "Mon, 30 Nov 2026 00:00:00 GMT")
        self.send_header("Set-Cookie", "dropped=1")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def mirror() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Mirror)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_relay_forwards_get_for_allowed_hosts_only_on_one_connection(mirror):
    requests = (
        b"GET http://deb.debian.org/debian/dists/bookworm/InRelease HTTP/1.1\r\nHost: deb.debian.org\r\n\r\n"
        b"GET http://example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n"
        b"POST http://deb.debian.org/debian/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
        b"GET http://deb.debian.org:8080/debian/ HTTP/1.1\r\n\r\n"
        b"GET http://deb.debian.org/debian/pool/a.deb HTTP/1.1\r\n\r\n"
    )
    out = io.BytesIO()
    asked: list[str] = []

    def connect(host: str) -> http.client.HTTPConnection:
        asked.append(host)
        return http.client.HTTPConnection("127.0.0.1", mirror, timeout=5)

    served = serve(io.BytesIO(requests), out, {"deb.debian.org"}, connect=connect)
    text = out.getvalue().decode()
    assert served == 2 and asked == ["deb.debian.org"]  # one upstream connection, reused
    assert text.count("HTTP/1.1 200 OK") == 2 and text.count("HTTP/1.1 403 Forbidden") == 3
    assert "file /debian/dists/bookworm/InRelease" in text and "file /debian/pool/a.deb" in text
    assert "Last-Modified" in text and "Set-Cookie" not in text


def test_guestfwd_option_runs_the_relay_for_the_proxy_address():
    option = guestfwd(["deb.debian.org"])
    assert option.startswith(f"guestfwd=tcp:{GUEST_PROXY[0]}:{GUEST_PROXY[1]}-cmd:")
    assert "," not in option and option.endswith("-m goldenimage.verify.mirror_relay --allow deb.debian.org")
    with pytest.raises(ValueError):
        guestfwd(["deb.debian.org,hostfwd=tcp::22-:22"])
