"""The environment data `golden env apply` sends to the agent: one schema that both ends check.

golden loads this very module (from the shipped agent sources) and checks what it built before anything is
sent; the agent checks it again on receipt and refuses the whole batch on any problem, so no host acts on data
the other end would not have produced. Standard library only, Python 3.7.

    {"schema": "golden-env/1",
     "root": "/srv/env",                        # where each environment's chroot lives on a web node
     "db_host": "10.10.0.0/255.255.255.0",      # MariaDB host part of every environment's account
     "db_address": "10.10.0.11",                # optional: where the sites reach the writer (database.ini)
     "environments": [
       {"name": "shop", "uid": 1234567, "domains": ["shop.example.com"], "databases": 1,
        "quota_mb": 2048,                       # or null
        "php": {"max_children": 5, "memory_limit_mb": 128, "max_execution_time": 30, "upload_max_mb": 32},
        "ssh_authorized_keys": ["ssh-ed25519 AAAA... who@where"],
        "db_password": "..."}                   # web nodes only, once the writer made it
     ]}
"""

from __future__ import annotations

import re
from typing import Any

SCHEMA = "golden-env/1"
#: An environment's name is its system account, its MariaDB user and its database prefix: a letter, then
#: lower-case letters and digits (no '_' or '-': '_' is a LIKE wildcard in grants, '-' needs quoting in SQL).
NAME = re.compile(r"[a-z][a-z0-9]{1,23}\Z")
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
#: A fully qualified DNS name in lower case, two labels at least, the last one not all digits.
DOMAIN = re.compile(r"(?=.{4,253}\Z)(" + _LABEL + r"\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?\Z")
#: The names nobody's environment may take: system and service accounts of a Debian host and this project's.
RESERVED_NAMES = frozenset("""
    root daemon bin sys sync games man lp mail news uucp proxy backup list irc gnats nobody systemd sshd
    messagebus polkitd mysql mariadb postfix www wwwdata apache apache2 nginx haproxy nfs statd keepalived
    prometheus node golden admin administrator ubuntu debian operator ftp sftp test tmp www1 localhost
""".split())
#: Names under these suffixes never reach a public CA nor resolve to a customer's site.
RESERVED_SUFFIXES = (".localhost", ".local", ".invalid", ".example", ".internal", ".arpa", ".onion")
RESERVED_DOMAINS = frozenset(["localhost"])
PASSWORD = re.compile(r"[A-Za-z0-9_\-]{16,128}\Z")
SSH_KEY = re.compile(r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com"
                     r"|sk-ecdsa-sha2-nistp256@openssh\.com) AAAA[A-Za-z0-9+/]+={0,2}( [ -~]{1,200})?\Z")
GRANT_HOST = re.compile(r"[0-9.]{7,15}(/[0-9.]{7,15})?\Z|localhost\Z|%\Z")
ROOT = re.compile(r"(/[a-z0-9][a-z0-9._-]*)+\Z")
#: PHP policy keys: (lowest, highest, default).
PHP_LIMITS = {
    "max_children": (1, 64, 5),
    "memory_limit_mb": (16, 4096, 128),
    "max_execution_time": (1, 3600, 30),
    "upload_max_mb": (1, 2048, 32),
}
UID_RANGE = (100000, 2 ** 31 - 2)
MAX_ENVIRONMENTS = 100000
MAX_DOMAINS = 100
MAX_DATABASES = 64


def domain_problem(domain: Any) -> str:
    """Why `domain` is no environment's domain ('' when it is one)."""
    if not isinstance(domain, str) or not DOMAIN.match(domain):
        return f"{str(domain)[:80]!r} is not a DNS name in lower case with two labels or more"
    if domain in RESERVED_DOMAINS or domain.endswith(RESERVED_SUFFIXES):
        return f"{domain!r} is a reserved name (never a customer's site)"
    return ""


def name_problem(name: Any) -> str:
    """Why `name` is no environment's name ('' when it is one)."""
    if not isinstance(name, str) or not NAME.match(name):
        return f"{str(name)[:80]!r} is not an environment name (a letter, then lower-case letters and digits; 2 to 24)"
    if name in RESERVED_NAMES:
        return f"{name!r} is a reserved name (a system or service account)"
    return ""


def _int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _environment(env: Any, where: str, web: bool) -> list[str]:
    if not isinstance(env, dict):
        return [where + ": not a mapping"]
    errors = []
    known = {"name", "uid", "domains", "databases", "quota_mb", "php", "ssh_authorized_keys", "db_password"}
    for key in sorted(set(env) - known, key=str):
        errors.append(f"{where}.{str(key)[:40]}: unknown key")
    problem = name_problem(env.get("name"))
    if problem:
        errors.append(where + ".name: " + problem)
    if not _int(env.get("uid"), *UID_RANGE):
        errors.append("{}.uid: not a number from {} to {}".format(where, *UID_RANGE))
    domains = env.get("domains")
    if not isinstance(domains, list) or not 1 <= len(domains) <= MAX_DOMAINS:
        errors.append(f"{where}.domains: not a list of 1 to {MAX_DOMAINS} names")
    else:
        for index, domain in enumerate(domains):
            problem = domain_problem(domain)
            if problem:
                errors.append(f"{where}.domains[{index}]: {problem}")
        if len(set(map(str, domains))) != len(domains):
            errors.append(where + ".domains: a name is given twice")
    if not _int(env.get("databases"), 0, MAX_DATABASES):
        errors.append(f"{where}.databases: not a number from 0 to {MAX_DATABASES}")
    if env.get("quota_mb") is not None and not _int(env.get("quota_mb"), 1, 2 ** 31):
        errors.append(where + ".quota_mb: not a positive number of MiB (or null)")
    php = env.get("php")
    if not isinstance(php, dict):
        errors.append(where + ".php: not a mapping")
    else:
        for key in sorted(set(php) - set(PHP_LIMITS), key=str):
            errors.append(f"{where}.php.{str(key)[:40]}: unknown key")
        for key, (low, high, _) in sorted(PHP_LIMITS.items()):
            if not _int(php.get(key), low, high):
                errors.append(f"{where}.php.{key}: not a number from {low} to {high}")
    keys = env.get("ssh_authorized_keys")
    if not isinstance(keys, list) or not all(isinstance(k, str) and SSH_KEY.match(k) for k in keys):
        errors.append(where + ".ssh_authorized_keys: not a list of one-line SSH public keys")
    password = env.get("db_password")
    if password is not None and (not web or not isinstance(password, str) or not PASSWORD.match(password)):
        errors.append(where + ".db_password: not 16 to 128 letters, digits, '-' or '_'")
    return errors


def check(data: Any, web: bool = True) -> list[str]:
    """Every problem of an environment batch, one 'KEY: problem' line each; [] when it is valid."""
    if not isinstance(data, dict):
        return ["(top level): not a mapping"]
    errors = []
    for key in sorted(set(data) - {"schema", "root", "db_host", "db_address", "environments"}, key=str):
        errors.append(f"{str(key)[:40]}: unknown key")
    if data.get("schema") != SCHEMA:
        errors.append(f"schema: not {SCHEMA!r} (golden and the agent differ in version)")
    if not isinstance(data.get("root"), str) or not ROOT.match(data["root"]) or "/.." in data["root"]:
        errors.append("root: not an absolute path of plain names")
    if not isinstance(data.get("db_host"), str) or not GRANT_HOST.match(data["db_host"]):
        errors.append("db_host: not a MariaDB host part (an address, ADDR/NETMASK, localhost or %)")
    if "db_address" in data and (not isinstance(data["db_address"], str) or not (
            GRANT_HOST.match(data["db_address"]) or DOMAIN.match(data["db_address"]))):
        errors.append("db_address: not an address or a host name")
    envs = data.get("environments")
    if not isinstance(envs, list) or len(envs) > MAX_ENVIRONMENTS:
        errors.append(f"environments: not a list of at most {MAX_ENVIRONMENTS}")
        return errors
    seen_names: dict[str, int] = {}
    seen_domains: dict[str, str] = {}
    seen_uids: dict[int, str] = {}
    for index, env in enumerate(envs):
        where = f"environments[{index}]"
        errors.extend(_environment(env, where, web))
        if not isinstance(env, dict):
            continue
        name = str(env.get("name"))
        if name in seen_names:
            errors.append(f"{where}.name: {name[:80]!r} is given twice")
        seen_names[name] = index
        uid = env.get("uid")
        if isinstance(uid, int):
            if uid in seen_uids:
                errors.append(f"{where}.uid: {uid} is also {seen_uids[uid]!r}'s")
            seen_uids[uid] = name
        domains = env.get("domains")
        for domain in domains if isinstance(domains, list) else []:
            other = seen_domains.get(str(domain))
            if other is not None and other != name:
                errors.append(f"{where}.domains: {str(domain)[:80]!r} is also {other!r}'s")
            seen_domains[str(domain)] = name
    return errors
