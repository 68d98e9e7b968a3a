"""Cluster secrets: generated once and kept in DIR/secrets.json (mode 0600) so that the next render reuses
them, or read from the environment or a file at every render. No message or log line carries a value."""

from __future__ import annotations

import json
import os
import re
import secrets
import string
from collections.abc import Callable, Mapping
from pathlib import Path

from ..core.errors import InputError
from ..core.fs import scratch
from ..core.inert import CONTROL
from ..core.run import require, run
from ..core.yamlfile import display_path, read_input_text
from ..model.cluster import Cluster, SecretSource
from ..model.cluster_check import Roles
from ..model.profile_schema import REPLICATION_ROLES, Role

SECRETS_FILE = "secrets.json"
#: Letters and digits only: safe unquoted in SQL literals, option files, keepalived.conf and shell words.
ALPHABET = string.ascii_letters + string.digits
LENGTH = 32  # about 190 bits; keepalived's VRRP PASS reads the first 8 characters
GENERATE = SecretSource(generate=True)


#: MariaDB file_key_management: a key is 32, 48 or 64 hex digits (AES-128, -192, -256).
HEX_KEY = re.compile(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{48}|[0-9a-fA-F]{64}")
PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\n[A-Za-z0-9+/=\n]+-----END \1-----")
TLS_DAYS = 3650
#: A secret file is a password, a key or a PEM bundle: 64 KiB is far more than any.
MAX_SECRET_BYTES = 64 * 1024


def generate_secret(length: int = LENGTH) -> str:
    """A new random secret from the system's CSPRNG."""
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def generate_encryption_key() -> str:
    """A 256-bit key for MariaDB's file_key_management, in hex."""
    return secrets.token_hex(32)


def generate_tls_bundle(subject: str = "galera") -> str:
    """A PEM private key (ECDSA P-256) followed by its self-signed certificate: the pair every member of one
    Galera cluster presents and trusts (its own CA). Made in a private temporary directory; nothing logged."""
    require("openssl", purpose="to make the Galera cluster's TLS certificate")
    with scratch("golden-tls") as tmp:
        key, cert = Path(tmp) / "key.pem", Path(tmp) / "cert.pem"
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-sha256", "-days", str(TLS_DAYS), "-subj", f"/CN={subject}", "-keyout", key, "-out", cert])
        return key.read_text().strip() + "\n" + cert.read_text().strip() + "\n"


def secret_problem(name: str, value: str) -> str | None:
    """What makes `value` unusable as the secret `name` (never quoting it), or None."""
    if name == "galera_encryption_key":
        return None if HEX_KEY.fullmatch(value) else "not a key of 32, 48 or 64 hex digits (64: AES-256)"
    if name == "galera_tls":
        kinds = [m.group(1) for m in PEM_BLOCK.finditer(value.replace("\r\n", "\n"))]
        if not any(k.endswith("PRIVATE KEY") for k in kinds) or "CERTIFICATE" not in kinds:
            return "not PEM text with a private key and a certificate"
        if any(ord(c) < 32 and c not in "\r\n" or ord(c) == 127 for c in value):
            return "the PEM text holds a control character"
        return None
    if CONTROL.search(value):  # C0, DEL, C1 and Unicode line breaks
        # Secrets land in config lines on the hosts ([client] password=...): one line, never shown.
        return "the secret holds a newline or control character (one line only)"
    return None


def galera_hardened(cluster: Cluster, roles: Roles) -> bool:
    """Whether the cluster's Galera nodes are hardened: they then share a key at rest and speak TLS."""
    return any(Role.SQL_GALERA in roles.get(h.name, ()) and Role.HARDENED in roles.get(h.name, ())
               for h in cluster.hosts)


def wanted(cluster: Cluster, roles: Roles) -> dict[str, tuple[str, SecretSource]]:
    """Every secret of the cluster: {name in secrets.json: (its key in the cluster file, its source)}.

    Declared secrets are all resolved; the replication and keepalived passwords default to `generate` when a
    host needs them and the file does not say otherwise."""
    everyone = {r for rs in roles.values() for r in rs}
    declared = cluster.secrets
    needs = {
        "replication_password": bool(everyone & REPLICATION_ROLES),
        "keepalived_password": any(h.virtual_address is not None and Role.LB in roles.get(h.name, ())
                                   for h in cluster.hosts),
        "plesk_license": False,  # never generated: check.py reports a plesk host without one
        "galera_encryption_key": galera_hardened(cluster, roles),
        "galera_tls": galera_hardened(cluster, roles),
        "backup_password": cluster.backup is not None,
        "backup_access_key": False,  # never generated: check_backup reports a store without credentials
        "backup_secret_key": False,
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
    if not path.exists() and not path.is_symlink():
        return {}
    try:
        data = json.loads(read_input_text(path, MAX_SECRET_BYTES * 16))
    except InputError as exc:
        raise InputError(f"{exc.message} (the stored secrets)",
                         hint="restore it from a backup: the hosts already use these secrets") from None
    except ValueError as exc:
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


#: Secrets that are not passwords: how each is made when the file says `generate`.
GENERATORS: dict[str, Callable[[], str]] = {
    "galera_encryption_key": generate_encryption_key,
    "galera_tls": generate_tls_bundle,
}


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
                new_store[name] = GENERATORS.get(name, generate_secret)()
            values[name] = new_store[name]
        elif source.env is not None:
            value = environ.get(source.env, "")
            if not value:
                errors.append(f"{where}: {key}.env: environment variable {source.env} is not set (or empty)")
            values[name] = value
        elif source.file is not None:
            path = Path(source.file).expanduser()
            path = path if path.is_absolute() else base_dir / path
            try:  # bounded: a secret is never a device, a FIFO or a huge file
                text = read_input_text(path, MAX_SECRET_BYTES, f"{where}: {key}.file: {display_path(path)}")
            except InputError as exc:
                errors.append(exc.message)
                continue
            value = text.strip() + ("\n" if name == "galera_tls" else "")
            if not value.strip():
                errors.append(f"{where}: {key}.file: {path} is empty")
            values[name] = value
        problem = secret_problem(name, values[name]) if values.get(name, "").strip() else None
        if problem:
            errors.append(f"{where}: {key}: {problem}")
    return values, new_store, errors
