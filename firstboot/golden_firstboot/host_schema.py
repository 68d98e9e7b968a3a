"""The contract of /etc/golden/host.json, owned by the agent: the sections `golden` may send, the type of every
key, which keys hold secrets, and the one redaction. `golden` loads this file as it is (it imports nothing
but the standard library, and nothing relative) to check host data before anything is sent; the agent checks
host.json against it at start and refuses what does not match.

A new feature's host data is one more entry in SECTIONS. The notation: a Python type (`str`, `int`, `bool`,
NUMBER) for a scalar, `[spec]` for a list of spec, `{key: spec}` for an object with those keys only, `dict` or
`list` for an object or list whose inside the section's own step checks, ANY for anything."""

from __future__ import annotations

from typing import Any, Iterable

ANY = object()
NUMBER = (int, float)

SECTIONS = {
    "hostname": str,
    "address": str,
    "network": str,
    "mariadb": {
        "server_id": int, "port": int, "binlog_expire_days": int,
        "replication_user": str, "replication_password": str, "replication_host": str,
        "primary": str, "primary_port": int,
        "databases": [str],
        "users": [{"name": str, "database": str, "password": str, "host": str}],
    },
    "galera": {
        "cluster_name": str, "nodes": [str], "arbitrators": [str], "bootstrap": bool, "health_port": int,
        "sst_method": str, "encryption_key": str, "tls": str,
    },
    "web": {
        "document_root": str, "health_path": str,
        "vhosts": [dict],
        "nfs": {"server": str, "export": str, "mount": str, "options": str},
        "lb": {"address": str, "backend": str},
    },
    "lb": {
        "frontends": [dict], "backends": [dict], "max_servers": int, "health_path": str,
        "arbitrator": {"group": str, "nodes": [str], "tls": str},
        "keepalived": {"virtual_address": str, "router_id": int, "priority": int, "password": str,
                       "peers": [str], "interface": str},
    },
    "nfs": {"exports": [{"path": str, "options": str}]},
    "plesk": {"license_key": str, "admin_email": str, "admin_name": str, "admin_password": str},
    "hardened": {"aide_init": bool, "grub_password_pbkdf2": str},
    "monitoring": {"scrapers": [str], "ports": dict},
    # the backup role's repository, key, store credentials and jobs: golden checks it whole (model/backup.py's
    # HostBackup) before sending; roles/backup.py reads its inside
    "backup": dict,
    "firstboot": {"retry_attempts": int, "retry_delay": NUMBER, "retry_max_delay": NUMBER,
                  "service_restarts": int, "service_timeout": NUMBER, "galera_wait_attempts": int},
}

#: Keys whose string values are secrets, wherever they are in host data: never logged, never printed.
SECRET_WORDS = ("password", "secret", "license_key", "licence_key", "token", "encryption_key", "tls")

_NAMES = {str: "a string", int: "an integer", bool: "true or false", NUMBER: "a number", dict: "an object",
          list: "a list"}


def _is(value: Any, kind: Any) -> bool:
    if kind is ANY:
        return True
    if kind in (int, NUMBER) and isinstance(value, bool):
        return False  # JSON's true is no number
    return isinstance(value, kind)


def _check(value: Any, spec: Any, where: str, errors: list[str]) -> None:
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            errors.append(f"{where}: expected an object, got {_show(value)}")
            return
        for key in value:
            if key not in spec:
                errors.append("{}: unknown key (known: {})".format(_join(where, key), ", ".join(sorted(spec))))
            else:
                _check(value[key], spec[key], _join(where, key), errors)
    elif isinstance(spec, list):
        if not isinstance(value, list):
            errors.append(f"{where}: expected a list, got {_show(value)}")
            return
        for index, item in enumerate(value):
            _check(item, spec[0], f"{where}[{index}]", errors)
    elif not _is(value, spec):
        errors.append("{}: expected {}, got {}".format(where, _NAMES.get(spec, "?"), _show(value)))


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def validate(data: Any) -> list[str]:
    """Every way `data` departs from the contract, one message a problem naming the dotted key; [] when it
    matches. Secrets are never quoted: a wrong value under a secret key is named by its key alone."""
    errors = []  # type: list[str]
    _check(data, SECTIONS, "", errors)
    secrets = find_secrets(data)
    return [redact(e, secrets) for e in errors]


def find_secrets(node: Any, key: str = "") -> list[str]:
    """Every string under a key that names a secret (see SECRET_WORDS), at any depth."""
    found = []  # type: list[str]
    if isinstance(node, dict):
        for k, v in node.items():
            found.extend(find_secrets(v, str(k)))
    elif isinstance(node, list):
        for item in node:
            found.extend(find_secrets(item, key))
    elif isinstance(node, str) and node and any(word in key.lower() for word in SECRET_WORDS):
        found.append(node)
    return found


def redact(text: str, secrets: Iterable[str]) -> str:
    """text with every secret replaced by ***; longest first so a secret containing another goes whole."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
