"""Strict types for every value that lands in a command line, a config file or a path.

One rule for all input files (profiles, role fragments, overlays, cluster files): a value is checked against
the kind of thing it is, over the whole string (`re.fullmatch`: `$` would accept a final newline), before
anything is rendered. A value that passes is one token for a shell and one line for a config parser. Each
type is a pydantic `Annotated[str, ...]`, so that a refusal reads 'FILE: KEY: problem' like any schema error.
"""

from __future__ import annotations

import re
import shlex
from functools import cache
from ipaddress import ip_address
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator

from ..core.inert import CONTROL, excerpt

#: {{ var }} placeholders (from the release matrix); values holding them are checked again once filled in.
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

# Debian policy: lower case letters, digits, + - . ; at least two characters, starting alphanumeric.
PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.\-]+")
# systemd.unit(5): ASCII letters, digits, ':', '-', '_', '.', '\', '@'; never a leading '-' (an option).
UNIT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9@_.:\-]{0,254}")
# useradd(8)'s default NAME_REGEX, the portable subset.
USER_NAME = re.compile(r"[a-z_][a-z0-9_\-]{0,31}")
HOST_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_DNS_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DNS_NAME = re.compile(rf"(?=.{{1,253}}\Z){_DNS_LABEL}(\.{_DNS_LABEL})*")
MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
MAC_PREFIX = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){2,4}")
SYSCTL_KEY = re.compile(r"[a-z0-9_]+(\.[A-Za-z0-9_\-*]+)+")
# A sysctl value: one line of plain characters (port ranges have a space inside, never at the ends).
SYSCTL_VALUE = re.compile(r"[A-Za-z0-9_.:,/+@-]+( [A-Za-z0-9_.:,/+@-]+)*")
# One path component: no space, quote, glob, '$', ';', '|', '&', '\', backquote or control character.
PATH_PART = r"[A-Za-z0-9._+@%,:=~-]+"
ABS_PATH = re.compile(rf"(/{PATH_PART})+|/")
GLOB_PART = r"[A-Za-z0-9._+@%,:=~*?\[\]-]+"
OCTAL_MODE = re.compile(r"0?[0-7]{3,4}")
LOCALE = re.compile(r"(C|POSIX|[a-z]{2,3}_[A-Z]{2})(\.[A-Za-z0-9-]+)?(@[a-z]+)?")
TIME_ZONE = re.compile(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*")
KEYBOARD = re.compile(r"[a-z]{2,8}(\([a-z0-9_-]+\))?")
SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                 "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
SSH_KEY = re.compile(r"(?P<type>[a-z0-9@.-]+) (?P<blob>AAAA[A-Za-z0-9+/]+={0,2})( [ -~]{1,200})?")
URL_SCHEMES = ("http", "https")
URL_TEXT = re.compile(r"[A-Za-z0-9._~:/?#@!&+,;=%\[\]-]+")
#: Where the release's glibc says which locales exist (the host's copy: Debian's list moves slowly).
SUPPORTED_LOCALES = Path("/usr/share/i18n/SUPPORTED")
#: Sizes: at least 1 GiB (a layout may need more), at most 16 TiB.
MAX_DISK_MIB = 16 * 1024 * 1024


def _shown(value: str) -> str:
    return excerpt(value)


def _fullmatch(pattern: re.Pattern[str], value: str, what: str, *, placeholders: bool = False) -> str:
    probe = PLACEHOLDER.sub("x0", value) if placeholders else value
    if not pattern.fullmatch(probe):
        raise ValueError(f"{_shown(value)} is not a valid {what}")
    return value


def check_package(value: str) -> str:
    return _fullmatch(PACKAGE_NAME, value, "Debian package name (a-z, 0-9, '+', '-', '.')", placeholders=True)


def check_unit(value: str) -> str:
    return _fullmatch(UNIT_NAME, value, "systemd unit name", placeholders=True)


def check_user(value: str) -> str:
    return _fullmatch(USER_NAME, value, "user or group name (a-z, 0-9, '_', '-'; at most 32)")


def check_owner(value: str) -> str:
    """'user' or 'user:group', each a valid name."""
    parts = value.split(":")
    if len(parts) > 2 or not all(USER_NAME.fullmatch(p) for p in parts):
        raise ValueError(f"{_shown(value)} is not an owner such as 'root:root' or 'www-data'")
    return value


def check_path(value: str, *, placeholders: bool = False) -> str:
    """An absolute, normalised path without glob, space, quote or shell character."""
    probe = PLACEHOLDER.sub("x0", value) if placeholders else value
    if not ABS_PATH.fullmatch(probe) or any(part in (".", "..") for part in probe.split("/")):
        raise ValueError(f"{_shown(value)} is not an absolute normalised path (no '..', '//', space, glob "
                         "or shell character)")
    return value


def check_templated_path(value: str) -> str:
    """check_path, with {{ var }} placeholders allowed (checked again once the release fills them in)."""
    return check_path(value, placeholders=True)


def check_glob_path(value: str) -> str:
    """An absolute path of two parts or more whose last part may be a glob, then below a directory two levels
    deep (the cleanup removes it with rm -rf: never /etc, never /etc/*)."""
    head, _, last = value.rpartition("/")
    if (not value.startswith("/") or not re.fullmatch(GLOB_PART, last) or re.fullmatch(r"[*?\[\]]+", last)
            or any(c in head for c in "*?[]")):
        raise ValueError(f"{_shown(value)} is not an absolute path (a glob only in its last part, and not '*' "
                         "alone)")
    check_path(head or "/")
    globbed = any(c in last for c in "*?[]")
    if last in (".", "..") or (globbed and last.startswith(".")):
        raise ValueError(f"{_shown(value)} is not a normalised path (no '.' or '..', no glob of dot files)")
    if head.count("/") < (2 if globbed else 1):
        raise ValueError(f"{_shown(value)} is too wide: a glob needs a directory two levels deep, a path two parts")
    return value


def check_host_label(value: str) -> str:
    return _fullmatch(HOST_LABEL, value, "host name (lower-case letters, digits and '-', at most 63)")


def check_dns_name(value: str) -> str:
    return _fullmatch(DNS_NAME, value, "host name (RFC 1123)")


def check_ntp_server(value: str) -> str:
    """A host name or an IP address."""
    try:
        ip_address(value)
        return value
    except ValueError:
        return _fullmatch(DNS_NAME, value, "NTP server (a host name or an IP address)")


def check_url(value: str) -> str:
    """An http(s) URL with a host, in one token."""
    parts = urlsplit(value) if URL_TEXT.fullmatch(value) else None
    if parts is None or parts.scheme not in URL_SCHEMES or not parts.hostname:
        raise ValueError(f"{_shown(value)} is not a URL such as 'http://deb.debian.org/debian' (http or https, "
                         "no space or quote)")
    return value


def check_mac(value: str) -> str:
    return _fullmatch(MAC, value.lower(), "MAC address such as '52:54:00:10:00:0b'")


def check_sysctl_key(value: str) -> str:
    return _fullmatch(SYSCTL_KEY, value, "sysctl key such as 'net.ipv4.ip_forward'")


def check_sysctl_value(value: str | int) -> str | int:
    if isinstance(value, bool):
        raise ValueError(f"{excerpt(value)} is not a sysctl value: write 0 or 1")
    if isinstance(value, int):
        return value
    return _fullmatch(SYSCTL_VALUE, value, "sysctl value (one line of letters, digits and '_.:,/+@-')")


def check_mode(value: str) -> str:
    return _fullmatch(OCTAL_MODE, value, "octal mode such as '0644'")


def check_ssh_public_key(value: str) -> str:
    """One OpenSSH public key line of a known type: no options, no second key, no newline."""
    if "PRIVATE KEY" in value:
        raise ValueError("is a private key: give the public key (the .pub file)")
    m = SSH_KEY.fullmatch(value)
    if m is None or m["type"] not in SSH_KEY_TYPES:
        raise ValueError(f"{_shown(value)} is not one SSH public key line ('ssh-ed25519 AAAA... comment', "
                         f"types: {', '.join(SSH_KEY_TYPES[:3])}...)")
    return value


@cache
def known_locales() -> frozenset[str] | None:
    """Locale names glibc supports (None when the list is not installed: the syntax alone is checked)."""
    try:
        lines = SUPPORTED_LOCALES.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    return frozenset(line.split()[0] for line in lines if line.strip() and not line.startswith("#"))


def check_locale(value: str) -> str:
    _fullmatch(LOCALE, value, "locale such as 'en_US.UTF-8'")
    known = known_locales()
    if known is not None and value not in known and not value.startswith(("C", "POSIX")):
        raise ValueError(f"{_shown(value)} is not a locale glibc supports (see {SUPPORTED_LOCALES})")
    return value


@cache
def known_time_zones() -> frozenset[str]:
    from zoneinfo import available_timezones

    return frozenset(available_timezones())


def check_time_zone(value: str) -> str:
    _fullmatch(TIME_ZONE, value, "time zone such as 'Europe/Paris'")
    if value not in known_time_zones():
        raise ValueError(f"{_shown(value)} is not a time zone of the tz database (such as 'Europe/Paris', 'Etc/UTC')")
    return value


def check_keyboard(value: str) -> str:
    return _fullmatch(KEYBOARD, value, "keyboard layout such as 'us' or 'fr'")


def check_one_line(value: str) -> str:
    """Free text that must stay one line (a command, a description): no line break (Unicode's included: NEL,
    U+2028, U+2029, which YAML and splitlines() break on) and no control character (C0, DEL, C1)."""
    if CONTROL.search(value):
        raise ValueError(f"{_shown(value)} must be one line without control characters")
    return value


def check_shell_line(value: str) -> str:
    """A shell command line (bake_commands): one line whose quotes are balanced, as the rendered checks require."""
    check_one_line(value)
    try:
        shlex.split(value)
    except ValueError as exc:
        raise ValueError(f"{_shown(value)}: unbalanced quoting ({exc})") from None
    return value


def check_ip(value: str) -> str:
    try:
        ip_address(value)
    except ValueError:
        raise ValueError(f"{_shown(value)} is not an IP address") from None
    return value


PackageName = Annotated[str, AfterValidator(check_package)]
UnitName = Annotated[str, AfterValidator(check_unit)]
UserName = Annotated[str, AfterValidator(check_user)]
Owner = Annotated[str, AfterValidator(check_owner)]
AbsPath = Annotated[str, AfterValidator(check_path)]
TemplatedPath = Annotated[str, AfterValidator(check_templated_path)]
GlobPath = Annotated[str, AfterValidator(check_glob_path)]
HostLabel = Annotated[str, AfterValidator(check_host_label)]
DnsName = Annotated[str, AfterValidator(check_dns_name)]
NtpServer = Annotated[str, AfterValidator(check_ntp_server)]
Url = Annotated[str, AfterValidator(check_url)]
SysctlKey = Annotated[str, AfterValidator(check_sysctl_key)]
SysctlValue = Annotated[str | int, AfterValidator(check_sysctl_value)]
Mode = Annotated[str, AfterValidator(check_mode)]
SshPublicKey = Annotated[str, AfterValidator(check_ssh_public_key)]
Locale = Annotated[str, AfterValidator(check_locale)]
TimeZone = Annotated[str, AfterValidator(check_time_zone)]
Keyboard = Annotated[str, AfterValidator(check_keyboard)]
OneLine = Annotated[str, AfterValidator(check_one_line)]
ShellLine = Annotated[str, AfterValidator(check_shell_line)]
