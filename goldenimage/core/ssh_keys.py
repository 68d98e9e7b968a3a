"""Ephemeral SSH key pairs: the bake's build account and the guests verify, audit and the tests boot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .run import require, run


@dataclass(frozen=True)
class SSHKey:
    """An ephemeral key pair: the private key file and the public key line."""

    private: Path
    public: str


def ephemeral_keypair(directory: Path, name: str = "id_ed25519", comment: str = "goldenimage-verify") -> SSHKey:
    """Generate an ed25519 key pair without a passphrase in `directory` (a temp dir the caller owns)."""
    require("ssh-keygen", purpose="to make an ephemeral SSH key")
    private = Path(directory) / name
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", private])
    return SSHKey(private=private, public=private.with_name(name + ".pub").read_text().strip())
