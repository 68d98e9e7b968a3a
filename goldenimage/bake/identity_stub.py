"""A loopback stand-in for OpenStack Keystone, for offline `packer validate`.

Packer's openstack builder authenticates while it validates a template. `golden validate` answers that
one request here, on 127.0.0.1, so checking templates needs neither a cloud nor credentials.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        return

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path.rstrip("/") != "/v3/auth/tokens":
            self.send_error(404)
            return
        port = self.server.server_address[1]  # type: ignore[index]
        catalog = [
            {"type": kind, "name": kind, "id": kind,
             "endpoints": [{"id": f"{kind}-public", "interface": "public", "region": region, "region_id": region,
                            "url": f"http://127.0.0.1:{port}/{kind}"} for region in ("GRA11", "RegionOne")]}
            for kind in ("identity", "compute", "image", "network")
        ]
        body = json.dumps({"token": {
            "methods": ["password"], "expires_at": "2099-01-01T00:00:00.000000Z",
            "issued_at": "2026-01-01T00:00:00.000000Z",
            "user": {"id": "validate", "name": "validate", "domain": {"id": "default", "name": "Default"}},
            "project": {"id": "validate", "name": "validate", "domain": {"id": "default", "name": "Default"}},
            "catalog": catalog,
        }}).encode()
        self.send_response(201)
        self.send_header("X-Subject-Token", "golden-validate-token")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def identity_stub() -> Iterator[str]:
    """Serve the stub on a free loopback port; yields its /v3 URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, name="identity-stub", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v3"
    finally:
        server.shutdown()
        server.server_close()
