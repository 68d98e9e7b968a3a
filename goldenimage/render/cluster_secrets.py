"""Cluster secrets: generated once and kept in DIR/secrets.json (mode 0600) so that the next render reuses
them, or read from the environment or a file at every render. No message or log line carries a value."""

from __future__ import annotations

import json
import os
import secrets
import string
from collections.abc import Mapping
from pathlib import Path

from ..core.errors import InputError
from ..model.cluster import Cluster, SecretSource
from ..model.cluster_check import Roles
from ..model.profile_schema import SQL_ROLES, Role

SECRETS_FILE = "secrets.json"
#: Letters and digits only: safe unquoted in SQL literals, option files, keepalived.conf and shell words.
ALPHABET = string.ascii_letters + string.digits
LENGTH = 32  # about 190 bits; keepalived's VRRP PASS reads the first 8 characters
GENERATE = SecretSource(generate=True)


def generate_secret(length: int = LENGTH) -> str:
    """A new random secret from the system's CSPRNG."""
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def wanted(cluster: Cluster, roles: Roles) -> dict[str, tuple[str, SecretSource]]:
    """Every secret of the cluster: {name in secrets.json: (its key in the cluster file, its source)}.

    Declared secrets are all resolved; the replication and keepalived passwords default to `generate` when a
    host needs them and the file does not say otherwise."""
    everyone = {r for rs in roles.values() for r in rs}
    declared = cluster.secrets
    needs = {
        "replication_password": bool(everyone & SQL_ROLES),
        "keepalived_password": any(h.virtual_address is not None and Role.LB in roles.get(h.name, ())
                                   for h in cluster.hosts),
        "plesk_license": False,  # never generated: check.py reports a plesk host without one
    }
    out: dict[str, tuple[str, SecretSource]] = {}
    for name, needed in needs.items():
        source = getattr(declared, name)
        if source is not None or needed:
            out[name] = (f"secrets.{name}", source or GENERATE)
    for index, user in enumerate(cluster.db_users):
        out[f"db_users.{user.name}"] = (f"db_users[{index}].password", user.password)
    return out


def read_store(directory: Path) -> dict[str, str]:
    """The generated secrets of an earlier render into `directory` ({} when there is none)."""
    path = directory / SECRETS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the stored secrets ({type(exc).__name__})",
                         hint="restore it from a backup: the hosts already use these secrets") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise InputError(f"{path}: not a JSON object of names to strings",
                         hint="restore it from a backup: the hosts already use these secrets")
    return data


def write_store(directory: Path, store: Mapping[str, str]) -> Path:
    """DIR/secrets.json, readable by its owner only from the moment it exists."""
    path = directory / SECRETS_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(dict(sorted(store.items())), indent=2) + "\n")
    os.chmod(path, 0o600)
    return path


def resolve_secrets(
    needed: Mapping[str, tuple[str, SecretSource]],
    store: Mapping[str, str],
    base_dir: Path,
    where: str,
    environ: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """(values by name, the store to write back, one line per secret that cannot be had).

    A generated secret already in the store is reused; one that is not is made now. Stored secrets the
    cluster no longer uses stay in the store: a host may still hold them."""
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    new_store = dict(store)
    errors: list[str] = []
    for name, (key, source) in needed.items():
        if source.generate:
            if not new_store.get(name):
                new_store[name] = generate_secret()
            values[name] = new_store[name]
        elif source.env is not None:
            value = environ.get(source.env, "")
            if not value:
                errors.append(f"{where}: {key}.env: environment variable {source.env} is not set (or empty)")
            values[name] = value
        elif source.file is not None:
            path = Path(source.file).expanduser()
            path = path if path.is_absolute() else base_dir / path
            try:
                value = path.read_text().strip()
            except OSError as exc:
                errors.append(f"{where}: {key}.file: cannot read {path}: {exc.strerror}")
                continue
            except UnicodeDecodeError:
                errors.append(f"{where}: {key}.file: {path} is not UTF-8 text")
                continue
            if not value:
                errors.append(f"{where}: {key}.file: {path} is empty")
            values[name] = value
        if any(ord(c) < 32 or ord(c) == 127 for c in values.get(name, "")):
            # Secrets land in config lines on the hosts ([client] password=...): one line, never shown.
            errors.append(f"{where}: {key}: the secret holds a newline or control character (one line only)")
    return values, new_store, errors
