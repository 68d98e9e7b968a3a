"""Hosting environments as data: one YAML file per environment, a file listing many, or a CSV import.

    # shop.yaml: one environment
    name: shop                       # its system account, MariaDB user and database prefix (a-z then a-z0-9)
    domains: [shop.example.com, www.shop.example.com]   # the first is the site's name, the others aliases
    databases: 1                     # optional (default 1): shop_1 ... created; shop_% may be created by shop
    quota: 5G                        # optional: disk quota (M or G)
    php: {max_children: 5, memory_limit_mb: 128, max_execution_time: 30, upload_max_mb: 32}   # optional
    ssh_authorized_keys: ["ssh-ed25519 AAAA... customer@laptop"]   # optional: SFTP into its chroot, key only
    uid: 1234567                     # optional: the account's uid on every web node (default: from the name)

    # many.yaml: many environments
    environments: [{name: shop, domains: [shop.example.com]}, {name: blog, domains: [blog.example.org]}]

    # bulk.csv: a header line, then one environment a line; several domains or keys separated by spaces
    name,domains,databases,quota,php_max_children,php_memory_limit_mb,ssh_authorized_keys

Every name and domain is checked over the whole string; names, domains and uids are unique across all the
files given and the cluster; reserved names are refused. Every problem of every file is reported at once,
one line naming the file and the key; nothing is sent to any host while one remains.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, Strict, ValidationError, field_validator

from ..core.errors import InputError
from ..core.inert import excerpt, inert
from ..core.paths import shipped
from ..core.schema import SchemaErrors, StrictModel, schema_error_lines
from ..core.yamlfile import display_path, read_input_text, read_yaml_mapping
from .values import SshPublicKey

#: The largest CSV import read (a million environments' worth of short lines).
MAX_CSV_BYTES = 64 * 1024 * 1024
CSV_COLUMNS = ("name", "domains", "databases", "quota", "uid", "ssh_authorized_keys",
               "php_max_children", "php_memory_limit_mb", "php_max_execution_time", "php_upload_max_mb")
QUOTA_UNITS = {"M": 1, "G": 1024, "T": 1024 * 1024}

#: Where each environment's chroot lives on a web node (the agent's batch `root`; backed up with the files).
ENV_HOMES = "/srv/env"


def env_schema() -> ModuleType:
    """The agent's own schema module (firstboot/golden_firstboot/env_schema.py): the one both ends check."""
    path = shipped("firstboot") / "golden_firstboot" / "env_schema.py"
    spec = importlib.util.spec_from_file_location("golden_env_schema", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCHEMA = env_schema()
UID_LOW, UID_HIGH = SCHEMA.UID_RANGE


class EnvironmentErrors(SchemaErrors):
    """Every problem of the environment files, one line each ('FILE: KEY: problem')."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines, hint="fix the environment data; README, \"Environments\", shows every key")


def _name(value: str) -> str:
    problem = SCHEMA.name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _domain(value: str) -> str:
    problem = SCHEMA.domain_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _quota(value: Any) -> Any:
    """'5G', '500M', '1T' or a number of MiB, as MiB."""
    if isinstance(value, str) and len(value) >= 2 and value[:-1].isdigit() and value[-1] in QUOTA_UNITS:
        return int(value[:-1]) * QUOTA_UNITS[value[-1]]
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"{excerpt(value)} is not a size such as 500M, 5G or 1T")


def _lower_domain(value: Any) -> Any:
    # DNS is case-insensitive and certificates carry lower case: 'Shop.Example.COM' is shop.example.com.
    return value.lower() if isinstance(value, str) and value.isascii() else value


class PhpPolicy(StrictModel):
    """The environment's PHP-FPM pool: bounded children (ondemand), and the limits of each request."""

    max_children: Annotated[int, Strict()] = Field(default=5, ge=1, le=64)
    memory_limit_mb: Annotated[int, Strict()] = Field(default=128, ge=16, le=4096)
    max_execution_time: Annotated[int, Strict()] = Field(default=30, ge=1, le=3600)
    upload_max_mb: Annotated[int, Strict()] = Field(default=32, ge=1, le=2048)


class Environment(StrictModel):
    name: Annotated[str, Strict()]
    domains: list[Annotated[str, BeforeValidator(_lower_domain), AfterValidator(_domain)]] = Field(
        min_length=1, max_length=100)
    databases: Annotated[int, Strict()] = Field(default=1, ge=0, le=64)
    quota: Annotated[int | None, BeforeValidator(lambda v: None if v is None else _quota(v))] = Field(
        default=None, ge=1, le=2**31)
    php: PhpPolicy = PhpPolicy()
    ssh_authorized_keys: list[SshPublicKey] = []
    uid: Annotated[int, Strict()] | None = Field(default=None, ge=UID_LOW, le=UID_HIGH)

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        return _name(v)

    @field_validator("domains")
    @classmethod
    def _check_domains(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a name is given twice")
        return v

    def account_uid(self) -> int:
        """The account's uid on every web node: its own, else one derived from the name (the same everywhere,
        with no state to keep; a collision between two names is refused, and `uid:` settles it)."""
        if self.uid is not None:
            return self.uid
        digest = int.from_bytes(hashlib.sha256(self.name.encode()).digest()[:8], "big")
        return UID_LOW + digest % (UID_HIGH - UID_LOW + 1)

    def agent_data(self) -> dict[str, Any]:
        """This environment as the agent's schema has it (env_schema.py)."""
        return {"name": self.name, "uid": self.account_uid(), "domains": list(self.domains),
                "databases": self.databases, "quota_mb": self.quota, "php": self.php.model_dump(),
                "ssh_authorized_keys": list(self.ssh_authorized_keys)}


@dataclass(frozen=True)
class Declared:
    """One environment and where it was declared (file, and the key or line in it)."""

    env: Environment
    source: str


def _yaml_file(path: Path, errors: list[str]) -> list[Declared]:
    where = display_path(path)
    raw = read_yaml_mapping(path)
    if "environments" not in raw:
        try:
            return [Declared(Environment.model_validate(raw), where)]
        except ValidationError as exc:
            errors.extend(schema_error_lines(where, exc, Environment))
            return []
    items = raw["environments"]
    extra = sorted(str(k)[:40] for k in raw if k != "environments")
    errors.extend(f"{where}: {inert(k)}: unknown key (a file listing environments has only `environments`)"
                  for k in extra)
    if not isinstance(items, list) or len(items) > SCHEMA.MAX_ENVIRONMENTS:
        errors.append(f"{where}: environments: not a list of at most {SCHEMA.MAX_ENVIRONMENTS} environments")
        return []
    found = []
    # Each item on its own: the valid ones still take part in the checks across files.
    for index, item in enumerate(items):
        source = f"{where}: environments[{index}]"
        try:
            found.append(Declared(Environment.model_validate(item), source))
        except ValidationError as exc:
            errors.extend(schema_error_lines(source, exc, Environment))
    return found


def _csv_row(row: dict[str, str]) -> dict[str, Any]:
    """A CSV line as the YAML form: lists split on spaces, numbers as numbers, empty cells left out."""
    out: dict[str, Any] = {}
    php: dict[str, Any] = {}
    for key, value in row.items():
        value = (value or "").strip()
        if not value:
            continue
        if key in ("domains",):
            out[key] = value.split()
        elif key == "ssh_authorized_keys":
            # keys are "type blob [comment]": a new key starts at each type word
            keys: list[str] = []
            for word in value.split():
                if word.startswith(("ssh-", "ecdsa-", "sk-")) or not keys:
                    keys.append(word)
                else:
                    keys[-1] += " " + word
            out[key] = keys
        elif key.startswith("php_"):
            php[key[4:]] = int(value) if value.isdigit() else value
        elif key in ("databases", "uid"):
            out[key] = int(value) if value.isdigit() else value
        else:
            out[key] = value
    if php:
        out["php"] = php
    return out


def _csv_file(path: Path, errors: list[str]) -> list[Declared]:
    where = display_path(path)
    text = read_input_text(path, MAX_CSV_BYTES)
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        header = reader.fieldnames or []
    except csv.Error as exc:
        errors.append(f"{where}: line 1: not CSV: {exc}")
        return []
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if not header or "name" not in header or "domains" not in header or unknown:
        shown = ", ".join(inert(c)[:40] for c in unknown)
        errors.append(f"{where}: line 1: the header needs name and domains, and knows only "
                      + ", ".join(CSV_COLUMNS) + (f" (not {shown})" if unknown else ""))
        return []
    found = []
    try:
        for row in reader:
            line = f"{where}: line {reader.line_num}"
            if None in row:
                errors.append(f"{line}: more cells than the header has columns")
                continue
            try:
                found.append(Declared(Environment.model_validate(_csv_row(row)), line))
            except ValidationError as exc:
                errors.extend(schema_error_lines(line, exc, Environment))
    except csv.Error as exc:
        errors.append(f"{where}: line {reader.line_num}: not CSV: {exc}")
    return found


def environment_files(paths: Iterable[Path]) -> list[Path]:
    """The files given, a folder standing for its *.yaml, *.yml and *.csv files (sorted)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".csv") and p.is_file()))
        else:
            files.append(path)
    return files


def load_environments(paths: Sequence[Path], reserved_domains: Iterable[str] = (),
                      reserved_names: Iterable[str] = ()) -> list[Declared]:
    """Every environment declared in `paths`; EnvironmentErrors with every problem of every file at once.

    `reserved_domains` and `reserved_names` are the infrastructure's own (the cluster's hosts and vhosts):
    no environment may take one."""
    errors: list[str] = []
    declared: list[Declared] = []
    files = environment_files(paths)
    if not files:
        raise InputError("no environment files given (YAML or CSV files, or a folder holding them)")
    for path in files:
        try:
            if path.suffix == ".csv":
                declared.extend(_csv_file(path, errors))
            else:
                declared.extend(_yaml_file(path, errors))
        except InputError as exc:
            errors.extend(exc.lines)
    errors.extend(_unique(declared, set(reserved_domains), set(reserved_names)))
    if errors:
        raise EnvironmentErrors(errors)
    return declared


def _unique(declared: Sequence[Declared], reserved_domains: set[str], reserved_names: set[str]) -> list[str]:
    """Names, domains and uids unique across every file and the infrastructure."""
    errors = []
    names: dict[str, str] = {}
    domains: dict[str, str] = {}
    uids: dict[int, str] = {}
    for item in declared:
        env = item.env
        if env.name in names:
            errors.append(f"{item.source}: name: {env.name!r} is also declared at {names[env.name]}")
        elif env.name in reserved_names:
            errors.append(f"{item.source}: name: {env.name!r} is a host of the cluster")
        names.setdefault(env.name, item.source)
        for index, domain in enumerate(env.domains):
            if domain in reserved_domains:
                errors.append(f"{item.source}: domains[{index}]: {domain!r} is the cluster's own (a host or vhost)")
            elif domain in domains and domains[domain] != env.name:
                errors.append(f"{item.source}: domains[{index}]: {domain!r} is also environment "
                              f"{domains[domain]!r}'s")
            domains.setdefault(domain, env.name)
        uid = env.account_uid()
        if uid in uids and uids[uid] != env.name:
            errors.append(f"{item.source}: uid: {uid} is also environment {uids[uid]!r}'s: give one of them "
                          "its own `uid:`")
        uids.setdefault(uid, env.name)
    return errors


def agent_batch(envs: Sequence[Environment], root: str, db_host: str) -> dict[str, Any]:
    """The data sent to the agent, checked against the agent's own schema before anything is sent."""
    data = {"schema": SCHEMA.SCHEMA, "root": root, "db_host": db_host,
            "environments": [env.agent_data() for env in envs]}
    problems = SCHEMA.check(data, web=False)
    if problems:  # a model that lets through what the agent refuses is a bug here, never the user's
        raise AssertionError("environment data the agent would refuse: " + "; ".join(problems[:5]))
    return data
