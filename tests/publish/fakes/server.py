"""A small HTTP(S) server on 127.0.0.1 (or ::1) in a thread, recording every request, for the publish fakes."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: A fake answers at most this many requests: a client stuck in a loop fails the test instead of spinning.
MAX_REQUESTS = 500


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    raw_query: str = ""

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Response:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    drop: bool = False  # close the connection without answering: an interrupted transfer
    reason: str | None = None  # the status line's text (PVE puts its error message there)


class FakeServer:
    """Subclasses implement handle(request) -> Response; `requests` keeps what clients sent."""

    def __init__(self, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> None:
        self.requests: list[Request] = []
        self.errors: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                pass

            def _serve(self) -> None:
                if len(fake.requests) >= MAX_REQUESTS:
                    fake.errors.append("too many requests")
                    self.send_error(429)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                response = fake.before_body(self.command, self.path, dict(self.headers))
                if response is not None and response.drop:
                    self.rfile.read(min(length, 65536))  # part of the body arrived, then the line broke
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                request = Request(self.command, split.path, parse_qs(split.query), dict(self.headers), body,
                                  split.query)
                fake.requests.append(request)
                try:
                    response = fake.handle(request)
                except AssertionError as exc:  # what the client sent is wrong: fail the test, answer 400
                    fake.errors.append(f"{request.method} {request.path}: {exc}")
                    response = Response(400, {"error": str(exc)})
                payload = response.raw if response.raw is not None else (
                    b"" if response.body is None else json.dumps(response.body).encode())
                self.send_response(response.status, response.reason)
                headers = {"Content-Type": "application/json", **response.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        self.httpd = Server((host, 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.scheme = "https" if tls else "http"
        self.url = f"{self.scheme}://{f'[{host}]' if ':' in host else host}:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def before_body(self, method: str, path: str, headers: dict[str, str]) -> Response | None:
        """A chance to break the connection before the body is read (interrupted uploads)."""
        return None

    def handle(self, request: Request) -> Response:
        raise NotImplementedError

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

    def sent(self, method: str, path_prefix: str = "") -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]
