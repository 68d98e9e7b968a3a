"""Each release's support status (security, LTS, none) from the matrix's dates, and its extended-support source.

releases.yaml gives every release `support: {security_until, lts_until}` and may give an `extended` source (Freexian's
ELTS for Debian 10): its apt line and the sha256 of its archive key. The build takes that source when
$GOLDEN_EXTENDED_SUPPORT is set, with the key from the file $GOLDEN_EXTENDED_KEYRING (checked against the sha256:
this project downloads nothing but Debian's mirror).
"""

from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import InputError

EXTENDED_ENV = "GOLDEN_EXTENDED_SUPPORT"
KEYRING_ENV = "GOLDEN_EXTENDED_KEYRING"
STATUSES = ("security", "lts", "none")


@dataclass(frozen=True)
class ExtendedSource:
    """An extended-support archive (ELTS): where, which suite, and the key that signs it."""

    name: str
    url: str
    suite: str
    components: tuple[str, ...]
    keyring_sha256: str
    keyring_fingerprint: str

    def line(self, keyring: str) -> str:
        return f"deb [signed-by={keyring}] {self.url.rstrip('/')} {self.suite} {' '.join(self.components)}"


@dataclass(frozen=True)
class Support:
    """A release's support dates (Debian's security team, then Debian LTS) and its extended source if any."""

    security_until: datetime.date
    lts_until: datetime.date
    extended: ExtendedSource | None = None

    def status(self, today: datetime.date | None = None) -> str:
        today = today or datetime.datetime.now(datetime.UTC).date()
        if today <= self.security_until:
            return "security"
        return "lts" if today <= self.lts_until else "none"

    def manifest(self, today: datetime.date | None = None) -> dict[str, Any]:
        """What the artifact's manifest says of its release's support when it was built."""
        extended = self.extended.name if self.extended and extended_wanted() else None
        return {"status": self.status(today), "security_until": self.security_until.isoformat(),
                "lts_until": self.lts_until.isoformat(), "extended": extended}


def extended_wanted() -> bool:
    return os.environ.get(EXTENDED_ENV, "").strip().lower() not in ("", "0", "no", "false")


def notice(release_name: str, support: Support, today: datetime.date | None = None) -> str | None:
    """The one line a build of a release without security support says; None while it has some."""
    if support.status(today) != "none":
        return None
    if support.extended and extended_wanted():
        return (f"{release_name} has no Debian security support since {support.lts_until.isoformat()}: "
                f"its security updates come from {support.extended.name} ({EXTENDED_ENV})")
    more = f"; {EXTENDED_ENV}=1 takes {support.extended.name}" if support.extended else ""
    return f"{release_name} has no security support since {support.lts_until.isoformat()}: no security updates{more}"


def extended_keyring(release_name: str, support: Support) -> tuple[ExtendedSource, Path] | None:
    """The extended source and its checked key file when $GOLDEN_EXTENDED_SUPPORT asks for it; InputError when
    the release has none or the key file is missing or not the one releases.yaml names."""
    if not extended_wanted():
        return None
    if support.extended is None:
        raise InputError(f"{EXTENDED_ENV} is set but {release_name} has no extended-support source in releases.yaml",
                         hint=f"unset {EXTENDED_ENV}, or add support.extended to the release")
    path = Path(os.environ.get(KEYRING_ENV, ""))
    if not os.environ.get(KEYRING_ENV) or not path.is_file():
        raise InputError(f"{KEYRING_ENV}: {support.extended.name}'s archive key file is required "
                         f"(fingerprint {support.extended.keyring_fingerprint})",
                         hint=f"download it from {support.extended.url.rstrip('/')}/archive-key.gpg and set "
                              f"{KEYRING_ENV} to its path")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != support.extended.keyring_sha256:
        raise InputError(f"{KEYRING_ENV}={path}: sha256 {digest[:16]}… is not the {support.extended.name} key "
                         "releases.yaml names (support.extended.keyring_sha256)",
                         hint="download the key again and compare its fingerprint")
    return support.extended, path
