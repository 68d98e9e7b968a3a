"""The schema of profile, role and overlay files (pydantic), and how schema errors read."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .builders.disk import DiskLayout


class Role(StrEnum):
    """The closed set of server roles. Each has a fragment in profiles/roles/ and a first-boot module."""

    WEB = "web"
    SQL_PRIMARY = "sql-primary"
    SQL_REPLICA = "sql-replica"
    LB = "lb"
    NFS = "nfs"
    PLESK = "plesk"
    HARDENED = "hardened"


SQL_ROLES = frozenset({Role.SQL_PRIMARY, Role.SQL_REPLICA})

# Debian policy: lower case letters, digits, + - . ; at least two characters, starting alphanumeric.
# {{ var }} placeholders (from the release matrix) are allowed and checked after substitution.
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.\-]+$")
SERVICE_NAME = re.compile(r"^[A-Za-z0-9@_.:\-]+$")
USER_NAME = re.compile(r"^[a-z_][a-z0-9_\-]{0,31}$")
SYSCTL_KEY = re.compile(r"^[a-z0-9_]+(\.[A-Za-z0-9_\-*]+)+$")


def _check_pattern(value: str, pattern: re.Pattern[str], what: str) -> str:
    probe = PLACEHOLDER.sub("x0", value)
    if not pattern.match(probe):
        raise ValueError(f"{value!r} is not a valid {what}")
    return value


PackageName = Annotated[str, Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileSpec(_Strict):
    """A file written into the image at bake time."""

    path: str
    content: str
    owner: str = "root:root"
    permissions: str = "0644"

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/") or "/../" in v + "/":
            raise ValueError(f"{v!r} must be an absolute path without '..'")
        return v

    @field_validator("permissions")
    @classmethod
    def _octal(cls, v: str) -> str:
        if not re.fullmatch(r"0?[0-7]{3,4}", v):
            raise ValueError(f"{v!r} is not an octal mode such as '0644'")
        return v


class UserSpec(_Strict):
    """A local account baked into the image (no password; keys only)."""

    name: str
    groups: list[str] = []
    shell: str = "/bin/bash"
    sudo: bool = False
    ssh_authorized_keys: list[str] = []
    system: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_pattern(v, USER_NAME, "user name")


class AptSource(_Strict):
    """An extra apt repository: a one-line `deb ...` entry and, optionally, its signing key (ASCII armour)."""

    source: str
    key: str | None = None


class AptSpec(_Strict):
    """Where packages come from. Mirrors are settings: an internal mirror or a snapshot."""

    mirror: str | None = None
    security_mirror: str | None = None
    archive_mirror: str | None = None
    sources: dict[str, AptSource] = {}


class SystemSpec(_Strict):
    locale: str | None = None
    timezone: str | None = None
    ntp_servers: list[str] | None = None
    #: chrony (default) is configured with ntp_servers; ntp (ntpsec on Debian 12+) keeps Debian's pool config.
    ntp_client: Literal["chrony", "ntp"] | None = None
    keyboard: str | None = None


class Fragment(_Strict):
    """Content shared by profiles, role fragments and overlays."""

    description: str | None = None
    packages: list[str] = []
    # Purged at bake time if the base or a dependency brought them; also dropped from packages and services.
    remove_packages: list[str] = []
    # Installed when the mirror-built base is made (natively, no VM): for packages whose maintainer scripts
    # are slow under emulation. The bake installs them too, which is a no-op on that base.
    base_packages: list[str] = []
    services: list[str] = []
    files: list[FileSpec] = []
    sysctls: dict[str, str | int] = {}
    users: list[UserSpec] = []
    apt: AptSpec = AptSpec()
    system: SystemSpec = SystemSpec()
    settings: dict[str, Any] = {}
    bake_commands: list[str] = []
    # Paths removed at the end of the bake because every clone must make its own (keys, certificates).
    instance_unique: list[str] = []

    @field_validator("packages", "remove_packages", "base_packages")
    @classmethod
    def _packages(cls, v: list[str]) -> list[str]:
        errors = []
        for i, name in enumerate(v):
            try:
                _check_pattern(name, PACKAGE_NAME, "Debian package name")
            except ValueError as exc:
                errors.append(f"[{i}] {exc}")
        if errors:
            raise ValueError("; ".join(errors))
        return v

    @field_validator("services")
    @classmethod
    def _services(cls, v: list[str]) -> list[str]:
        for name in v:
            _check_pattern(name, SERVICE_NAME, "systemd unit name")
        return v

    @field_validator("sysctls")
    @classmethod
    def _sysctls(cls, v: dict[str, str | int]) -> dict[str, str | int]:
        for key in v:
            _check_pattern(key, SYSCTL_KEY, "sysctl key")
        return v


class RoleFragment(Fragment):
    """profiles/roles/<role>.yaml: what a role adds; `with_roles` adds more when another role is present."""

    with_roles: dict[Role, Fragment] = {}
    # An example of the first-boot cluster settings this role reads (README, `golden render`).
    example_settings: dict[str, Any] = {}


class ProfileFile(Fragment):
    """profiles/<name>.yaml: a buildable (or abstract) profile."""

    extends: list[str] | str | None = None
    roles: list[Role] = []
    debian: list[int] | None = None
    abstract: bool = False
    disk_size: str | None = None
    disk_layout: DiskLayout | None = None

    @field_validator("disk_size")
    @classmethod
    def _size(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[1-9][0-9]*[MG]", v):
            raise ValueError(f"{v!r} is not a disk size such as '4G' or '6144M'")
        return v


class OverlayFile(Fragment):
    """A customer overlay: changes a profile without copying it."""


def schema_error_lines(path: str, exc: ValidationError) -> list[str]:
    """One line per schema error: 'FILE: KEY: problem', as cloud-init reports all errors at once."""
    lines = []
    for err in exc.errors():
        loc = []
        for part in err["loc"]:
            if isinstance(part, int):
                loc.append(f"[{part}]")
            else:
                loc.append(("." if loc else "") + str(part))
        key = "".join(loc) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (misspelt?)"
        elif err["type"] == "enum":
            msg = f"unknown value {err.get('input')!r}: {err['msg'].lower()}"
        lines.append(f"{path}: {key}: {msg}")
    return lines
