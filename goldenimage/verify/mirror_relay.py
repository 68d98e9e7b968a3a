"""An HTTP proxy for one guest connection on stdin/stdout, started by QEMU's `guestfwd=...-cmd:` for each
connection the guest opens to the proxy address: it forwards GET and HEAD for the allowed Debian mirror
hosts only and refuses everything else (403). A guest on a `restrict=on` network then reaches the Debian
mirror and nothing else, with no port listening on the host.

    python -m goldenimage.verify.mirror_relay --allow deb.debian.org

Every loop is bounded: requests per connection, seconds per upstream read, the connection's lifetime."""

from __future__ import annotations

import argparse
import http.client
import re
import sys
import time
from collections.abc import Callable
from typing import BinaryIO
from urllib.parse import urlsplit

MAX_REQUESTS = 5000
MAX_LIFETIME = 2 * 3600
UPSTREAM_TIMEOUT = 60
MAX_LINE = 8192
MAX_HEADERS = 100
CHUNK = 64 * 1024
#: Request headers apt sends that matter to a mirror; the rest (proxy headers included) stay here.
FORWARDED_REQUEST = ("range", "if-modified-since", "if-range", "if-none-match", "user-agent", "accept")
FORWARDED_RESPONSE = ("content-type", "last-modified", "etag", "content-range", "accept-ranges", "location",
                      "cache-control", "expires", "date")


def _respond(out: BinaryIO, status: int, reason: str, headers: list[tuple[str, str]], body: bytes = b"") -> None:
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
    out.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    out.flush()


def _read_request(inp: BinaryIO) -> tuple[str, str, dict[str, str]] | None:
    line = inp.readline(MAX_LINE)
    while line in (b"\r\n", b"\n"):
        line = inp.readline(MAX_LINE)
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3:
        return None
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS):
        header = inp.readline(MAX_LINE)
        if header in (b"\r\n", b"\n", b""):
            break
        key, _, value = header.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    return parts[0], parts[1], headers


def _connect(host: str) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(host, 80, timeout=UPSTREAM_TIMEOUT)


def serve(inp: BinaryIO, out: BinaryIO, allow: set[str],
          connect: Callable[[str], http.client.HTTPConnection] = _connect) -> int:
    """Serve the requests of one connection; the number served."""
    deadline = time.monotonic() + MAX_LIFETIME
    upstream: dict[str, http.client.HTTPConnection] = {}
    served = 0
    try:
        for _ in range(MAX_REQUESTS):
            if time.monotonic() > deadline:
                break
            request = _read_request(inp)
            if request is None:
                break
            method, uri, headers = request
            url = urlsplit(uri)
            if method not in ("GET", "HEAD") or url.scheme != "http" or url.hostname not in allow \
                    or url.port not in (None, 80):
                _respond(out, 403, "Forbidden", [("Content-Length", "0")])
                continue
            host = url.hostname
            conn = upstream.get(host) or connect(host)
            upstream[host] = conn
            path = (url.path or "/") + (f"?{url.query}" if url.query else "")
            fwd = {k: v for k, v in headers.items() if k in FORWARDED_REQUEST}
            try:
                conn.request(method, path, headers=fwd)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                upstream.pop(host, None)
                body = f"mirror unreachable: {exc}\n".encode()
                _respond(out, 502, "Bad Gateway", [("Content-Length", str(len(body)))], body)
                continue
            kept = [(k, v) for k, v in response.getheaders() if k.lower() in FORWARDED_RESPONSE]
            length = response.getheader("content-length")
            if method == "HEAD" or response.status in (204, 304):
                response.read()
                _respond(out, response.status, response.reason,
                         kept + ([("Content-Length", length)] if length else []))
            elif length is not None:
                _respond(out, response.status, response.reason, kept + [("Content-Length", length)])
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                out.flush()
            else:
                body = response.read()
                _respond(out, response.status, response.reason, kept + [("Content-Length", str(len(body)))], body)
            served += 1
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        for conn in upstream.values():
            conn.close()
    return served


#: Where a guest finds the relay: an address of QEMU's user network that nothing else answers.
GUEST_PROXY = ("10.0.2.100", 3128)


def guestfwd(allow: list[str]) -> str:
    """The `-netdev user` option that starts this relay for each guest connection to GUEST_PROXY."""
    for host in allow:
        if not host.replace(".", "").replace("-", "").isalnum():
            raise ValueError(f"{host!r} is not a host name")
    command = " ".join([sys.executable, "-m", __name__] + [f"--allow {h}" for h in allow])
    return f"guestfwd=tcp:{GUEST_PROXY[0]}:{GUEST_PROXY[1]}-cmd:{command}"


def mirror_hosts(release: int) -> list[str]:
    """The host names apt needs for a release (its mirror and security mirror): what a guest's relay allows."""
    from ..model.releases import matrix  # here: the relay itself starts for each connection and needs none of it

    r = matrix().get(release)
    return sorted({re.sub(r"^https?://([^/:]+).*$", r"\1", url) for url in (r.mirror, r.security_mirror)})


def apt_proxy_conf() -> str:
    """apt's setting in the guest that sends its HTTP requests to the relay."""
    return f'Acquire::http::Proxy "http://{GUEST_PROXY[0]}:{GUEST_PROXY[1]}";\n'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allow", action="append", required=True, metavar="HOST", help="a mirror host name")
    args = parser.parse_args(argv)
    serve(sys.stdin.buffer, sys.stdout.buffer, set(args.allow))
    return 0


if __name__ == "__main__":
    sys.exit(main())
