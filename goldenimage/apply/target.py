"""Where `golden apply` goes: `[USER@]HOST[:PORT]` parsed and checked, because it ends up in ssh's argv."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ..model.values import DNS_NAME, USER_NAME

DEFAULT_USER = "root"
DEFAULT_PORT = 22
_BRACKETED = re.compile(r"\[(?P<host>[0-9A-Fa-f:.]+)\](:(?P<port>[0-9]{1,5}))?")
_PLAIN = re.compile(r"(?P<host>[^:@\[\]]+)(:(?P<port>[0-9]{1,5}))?")


class TargetError(ValueError):
    """A host address that is not [USER@]HOST[:PORT]; the message is one line saying why."""


@dataclass(frozen=True)
class SSHTarget:
    """One host reached over SSH: login user, host name or address, port."""

    host: str
    user: str = DEFAULT_USER
    port: int = DEFAULT_PORT

    @property
    def needs_sudo(self) -> bool:
        """Whether commands go through `sudo -n`: every user but root."""
        return self.user != "root"

    @property
    def destination(self) -> str:
        """USER@HOST as ssh takes it (an IPv6 address without brackets; the port goes apart, with -p)."""
        return f"{self.user}@{self.host}"

    @property
    def scp_host(self) -> str:
        """USER@HOST as scp takes it before `:PATH` (an IPv6 address in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port != DEFAULT_PORT else ""
        return f"{self.user}@{host}{port}"


def parse_target(text: str, default_user: str = DEFAULT_USER) -> SSHTarget:
    """`[USER@]HOST[:PORT]` (HOST a DNS name, an IPv4 address or an IPv6 address in brackets); TargetError."""
    if not isinstance(text, str) or not text:
        raise TargetError("empty host address: write [USER@]HOST[:PORT]")
    user = default_user
    rest = text
    if "@" in text:
        user, rest = text.split("@", 1)
        if not USER_NAME.fullmatch(user):
            raise TargetError(f"{text!r}: {user!r} is not a user name")
    match = _BRACKETED.fullmatch(rest) or _PLAIN.fullmatch(rest)
    if match is None:
        raise TargetError(f"{text!r} is not [USER@]HOST[:PORT] (an IPv6 address goes in brackets: [2001:db8::1]:22)")
    host = match.group("host")
    if rest.startswith("["):
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise TargetError(f"{text!r}: {host!r} is not an IPv6 address") from None
    elif not DNS_NAME.fullmatch(host):
        try:
            host = str(ipaddress.IPv4Address(host))
        except ValueError:
            raise TargetError(f"{text!r}: {host!r} is not a host name or an IPv4 address") from None
    port = DEFAULT_PORT
    if match.group("port") is not None:
        port = int(match.group("port"))
        if not 1 <= port <= 65535:
            raise TargetError(f"{text!r}: port {port} is not between 1 and 65535")
    return SSHTarget(host=host, user=user, port=port)
