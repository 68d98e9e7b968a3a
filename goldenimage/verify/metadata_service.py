"""The OpenStack metadata service for one guest connection on stdin/stdout, started by QEMU's
`guestfwd=tcp:169.254.169.254:80-cmd:...` for each connection the guest opens there: GET and HEAD of the files
under a folder (`openstack/latest/meta_data.json`, ...; a folder's `index` file is its listing, as
`GET /openstack` lists the versions), 404 for anything else. No port listens on the host.

    python -m goldenimage.verify.metadata_service ROOT

Every loop is bounded: requests per connection and the connection's lifetime."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import BinaryIO

from .mirror_relay import _read_request, _respond

MAX_REQUESTS = 1000
MAX_LIFETIME = 600
METADATA_HOST, METADATA_PORT = "169.254.169.254", 80


def lookup(root: Path, uri: str) -> bytes | None:
    """The body for a request path: a file under root, a folder's index, or None (404)."""
    path = uri.split("?", 1)[0].strip("/")
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") or p.startswith(".") for p in parts):
        return None
    target = root.joinpath(*parts)
    if target.is_dir():
        target = target / "index"
    try:
        if target.resolve().is_relative_to(root.resolve()) and target.is_file():
            return target.read_bytes()
    except OSError:
        return None
    return None


def serve(inp: BinaryIO, out: BinaryIO, root: Path) -> int:
    """Serve the requests of one connection; the number served."""
    deadline = time.monotonic() + MAX_LIFETIME
    served = 0
    try:
        for _ in range(MAX_REQUESTS):
            if time.monotonic() > deadline:
                break
            request = _read_request(inp)
            if request is None:
                break
            method, uri, headers = request
            body = lookup(root, uri) if method in ("GET", "HEAD") else None
            closing = headers.get("connection", "").lower() == "close"
            extra = [("Connection", "close")] if closing else []
            if body is None:
                _respond(out, 404, "Not Found", [("Content-Length", "0"), *extra])
            else:
                _respond(out, 200, "OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body))), *extra],
                         b"" if method == "HEAD" else body)
            served += 1
            if closing:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    return served


def guestfwd(root: Path) -> str:
    """The `-netdev user` option that starts this service for each guest connection to 169.254.169.254:80."""
    text = str(Path(root).resolve())
    if any(c in text for c in ", '\"\\"):
        raise ValueError(f"{text!r}: a metadata folder for QEMU's guestfwd cannot hold commas, spaces or quotes")
    return f"guestfwd=tcp:{METADATA_HOST}:{METADATA_PORT}-cmd:{sys.executable} -m {__name__} {text}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("root", type=Path, help="the folder whose files are served")
    args = parser.parse_args(argv)
    serve(sys.stdin.buffer, sys.stdout.buffer, args.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
