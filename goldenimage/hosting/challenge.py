"""Where an HTTP-01 challenge answer lives: one file per token in CHALLENGE_DIR, on every web node.

TLS ends on the web nodes (README, "Environments"): the load balancer passes ports 80 and 443 through, so the
CA's validation request for http://DOMAIN/.well-known/acme-challenge/TOKEN lands on whichever web node the load
balancer picks. Every web node's vhost maps that path to CHALLENGE_DIR (roles/env_render.py), and the answer
is written to every web node before the CA is asked to validate: any node answers. The same functions write
the answer into a tree on this machine (the fast test serves it on loopback) and on the web nodes over SSH."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from ..apply.transport import Transport

#: The agent's folder (firstboot/golden_firstboot/roles/env_render.py CHALLENGE_DIR): Apache's Alias target.
CHALLENGE_DIR = "/var/lib/golden/acme-challenge"
#: RFC 8555 section 8.3: a token is base64url (no padding); the key authorization is token '.' thumbprint.
TOKEN = re.compile(r"[A-Za-z0-9_-]{16,256}")
KEY_AUTHORIZATION = re.compile(r"[A-Za-z0-9_-]{16,256}\.[A-Za-z0-9_-]{16,128}")


def challenge_file(token: str, key_authorization: str) -> tuple[str, str]:
    """The absolute path on a web node and the content of one challenge answer; ValueError for anything that is
    not a token and its key authorization (a CA's answer never reaches a path or a command unchecked)."""
    if not TOKEN.fullmatch(token) or not KEY_AUTHORIZATION.fullmatch(key_authorization):
        raise ValueError("not an ACME HTTP-01 token and key authorization")
    if not key_authorization.startswith(token + "."):
        raise ValueError("the key authorization is not this token's")
    return f"{CHALLENGE_DIR}/{token}", key_authorization


class ChallengeStore(Protocol):
    """Publishes challenge answers where the CA's validation request lands."""

    def put(self, token: str, key_authorization: str) -> None: ...

    def remove(self, token: str) -> None: ...


class TreeStore:
    """Answers in a tree on this machine (ROOT/var/lib/golden/acme-challenge/TOKEN)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, token: str, key_authorization: str = "") -> tuple[Path, str]:
        path, content = challenge_file(token, key_authorization or token + "." + "x" * 16)
        return self.root / path.lstrip("/"), content

    def put(self, token: str, key_authorization: str) -> None:
        path, content = self._path(token, key_authorization)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)

    def remove(self, token: str) -> None:
        path, _ = self._path(token)
        path.unlink(missing_ok=True)


#: Writes $2 into the file $1 atomically (the folder is the env role's, 0755 root).
_PUT = 'umask 022; printf %s "$2" > "$1.tmp" && mv -f -- "$1.tmp" "$1"'


class WebNodesStore:
    """Answers on every web node, over the SSH transports `golden env apply` holds: put returns once every node
    has it, so the CA may hit any of them."""

    def __init__(self, transports: Sequence[Transport]) -> None:
        self.transports = list(transports)

    def put(self, token: str, key_authorization: str) -> None:
        path, content = challenge_file(token, key_authorization)
        for transport in self.transports:
            transport.run(["sh", "-c", _PUT, "sh", path, content])

    def remove(self, token: str) -> None:
        path, _ = challenge_file(token, token + "." + "x" * 16)
        for transport in self.transports:
            transport.run(["rm", "-f", "--", path], check=False)
