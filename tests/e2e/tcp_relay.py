"""One guest connection on stdin/stdout relayed to a TCP port on 127.0.0.1: started by QEMU's
`guestfwd=tcp:ADDR:PORT-cmd:python3 tcp_relay.py PORT` for each connection (a chardev guestfwd would carry one
connection only; restic opens several). Bounded: it ends when either side closes, or after an hour."""

from __future__ import annotations

import os
import selectors
import socket
import sys
import time

LIFETIME = 3600
CHUNK = 65536


def relay(port: int) -> int:
    upstream = socket.create_connection(("127.0.0.1", port), timeout=30)
    upstream.settimeout(None)
    stdin, stdout = sys.stdin.buffer.fileno(), sys.stdout.buffer.fileno()
    selector = selectors.DefaultSelector()
    selector.register(stdin, selectors.EVENT_READ, "guest")
    selector.register(upstream, selectors.EVENT_READ, "host")
    deadline = time.monotonic() + LIFETIME
    while time.monotonic() < deadline:
        for key, _ in selector.select(timeout=5):
            if key.data == "guest":
                data = os.read(stdin, CHUNK)
                if not data:
                    upstream.shutdown(socket.SHUT_WR)
                    selector.unregister(stdin)
                    continue
                upstream.sendall(data)
            else:
                data = upstream.recv(CHUNK)
                if not data:
                    return 0
                view = memoryview(data)
                while view:
                    view = view[os.write(stdout, view):]
    return 0


if __name__ == "__main__":
    sys.exit(relay(int(sys.argv[1])))
