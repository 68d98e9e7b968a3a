"""The schema of profile, role and overlay files (pydantic), and how schema errors read."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Strict, field_validator, model_validator

from ..core.inert import excerpt
from ..core.schema import StrictModel
from .disk_layout import DiskLayout
from .role_settings import Settings
from .values import (
    MAX_DISK_MIB,
    AbsPath,
    GlobPath,
    Keyboard,
    Locale,
    Mode,
    NtpServer,
    OneLine,
    Owner,
    PackageName,
    ShellLine,
    SshPublicKey,
    SysctlKey,
    SysctlValue,
    TemplatedPath,
    TimeZone,
    UnitName,
    Url,
    UserName,
    check_url,
)


class Role(StrEnum):
    """The closed set of server roles. Each has a fragment in profiles/roles/ and a first-boot module."""

    WEB = "web"
    SQL_PRIMARY = "sql-primary"
    SQL_REPLICA = "sql-replica"
    SQL_GALERA = "sql-galera"
    LB = "lb"
    NFS = "nfs"
    PLESK = "plesk"
    HARDENED = "hardened"


SQL_ROLES = frozenset({Role.SQL_PRIMARY, Role.SQL_REPLICA, Role.SQL_GALERA})
#: The roles of asynchronous replication (a replication account, a primary and its replicas).
REPLICATION_ROLES = frozenset({Role.SQL_PRIMARY, Role.SQL_REPLICA})

#: Accounts a profile may not declare: root is never baked, and the build account is the bake's own.
RESERVED_USERS = frozenset({"root", "golden-build"})
# A name for an apt source file (NAME.list) or a profile.
FILE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
SOURCE_OPTION = r"[a-z][a-z-]*=[A-Za-z0-9$_./,:-]+"
SOURCE_TOKEN = r"[A-Za-z0-9$_./-]+"
APT_SOURCE = re.compile(rf"deb(-src)? (\[{SOURCE_OPTION}( {SOURCE_OPTION})*\] )?(?P<url>\S+)( {SOURCE_TOKEN})+")
PGP_KEY = re.compile(r"-----BEGIN PGP PUBLIC KEY BLOCK-----\n[A-Za-z0-9+/=:\s.,()@<>_-]+\n"
                     r"-----END PGP PUBLIC KEY BLOCK-----\n?")


class FileSpec(StrictModel):
    """A file written into the image at bake time."""

    path: TemplatedPath
    content: str
    owner: Owner = "root:root"
    permissions: Mode = "0644"


class UserSpec(StrictModel):
    """A local account baked into the image (no password; keys only)."""

    name: UserName
    groups: list[UserName] = []
    shell: AbsPath = "/bin/bash"
    sudo: bool = False
    ssh_authorized_keys: list[SshPublicKey] = []
    system: bool = False

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v in RESERVED_USERS:
            raise ValueError(f"{excerpt(v)} is reserved (root is never baked; golden-build is the bake's own account)")
        return v


class AptSource(StrictModel):
    """An extra apt repository: a one-line `deb ...` entry and, optionally, its signing key (ASCII armour)."""

    source: str
    key: str | None = None

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        m = APT_SOURCE.fullmatch(v)
        if m is None:
            raise ValueError(f"{excerpt(v)} is not one 'deb URL SUITE COMPONENT...' line")
        if "trusted=" in v:
            raise ValueError("trusted= turns off apt's signature check: give the repository's key instead")
        check_url(m["url"])
        return v

    @field_validator("key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        if v is not None and not PGP_KEY.fullmatch(v):
            raise ValueError("is not one ASCII-armoured PGP public key block")
        return v


def _source_name(value: str) -> str:
    if not FILE_NAME.fullmatch(value):
        raise ValueError(f"{excerpt(value)} is not a source name (a-z, 0-9, '.', '_', '-')")
    return value


class AptSpec(StrictModel):
    """Where packages come from. Mirrors are settings: an internal mirror or a snapshot."""

    mirror: Url | None = None
    security_mirror: Url | None = None
    archive_mirror: Url | None = None
    sources: dict[Annotated[str, AfterValidator(_source_name)], AptSource] = {}


class SystemSpec(StrictModel):
    locale: Locale | None = None
    timezone: TimeZone | None = None
    ntp_servers: list[NtpServer] | None = None
    #: chrony (default) is configured with ntp_servers; ntp (ntpsec on Debian 12+) keeps Debian's pool config.
    ntp_client: Literal["chrony", "ntp"] | None = None
    keyboard: Keyboard | None = None


class Fragment(StrictModel):
    """Content shared by profiles, role fragments and overlays."""

    description: OneLine | None = None
    packages: list[PackageName] = []
    # Purged at bake time if the base or a dependency brought them; also dropped from packages and services.
    remove_packages: list[PackageName] = []
    # Installed when the mirror-built base is made (natively, no VM): for packages whose maintainer scripts
    # are slow under emulation. The bake installs them too, which is a no-op on that base.
    base_packages: list[PackageName] = []
    services: list[UnitName] = []
    files: list[FileSpec] = []
    sysctls: dict[SysctlKey, SysctlValue] = {}
    users: list[UserSpec] = []
    apt: AptSpec = AptSpec()
    system: SystemSpec = SystemSpec()
    settings: Settings = Settings()
    # Shell, one command per item (the profile author's own): one line each.
    bake_commands: list[ShellLine] = []
    # Bake commands that need a running system (update-grub, an installer that talks to systemd): the local
    # native bake runs them in a VM pass after the rest; cloud-init runs them after bake_commands.
    vm_bake_commands: list[ShellLine] = []
    # Paths removed at the end of the bake because every clone must make its own (keys, certificates).
    instance_unique: list[GlobPath] = []

    @model_validator(mode="after")
    def _no_duplicates(self) -> Fragment:
        for key, ident in (("files", "path"), ("users", "name")):
            seen: set[str] = set()
            for item in getattr(self, key):
                name = getattr(item, ident)
                if name in seen:
                    raise ValueError(f"{key}: {excerpt(name)} is given twice in this file (keep one)")
                seen.add(name)
        return self


class RoleFragment(Fragment):
    """profiles/roles/<role>.yaml: what a role adds; `with_roles` adds more when another role is present."""

    with_roles: dict[Role, Fragment] = {}
    # An example of the first-boot cluster settings this role reads (README, `golden render`).
    example_settings: dict[str, Any] = {}


class ProfileFile(Fragment):
    """profiles/<name>.yaml: a buildable (or abstract) profile."""

    extends: list[str] | str | None = None
    roles: list[Role] = []
    debian: list[Annotated[int, Strict()]] | None = None
    abstract: bool = False
    disk_size: str | None = None
    disk_layout: DiskLayout | None = None

    @field_validator("disk_size")
    @classmethod
    def _size(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[1-9][0-9]{0,7}[MG]", v):
            raise ValueError(f"{excerpt(v)} is not a disk size such as '4G' or '6144M'")
        if v is not None and not 1024 <= int(v[:-1]) * (1024 if v.endswith("G") else 1) <= MAX_DISK_MIB:
            raise ValueError(f"{excerpt(v)} is out of bounds: between 1G and {MAX_DISK_MIB // 1024}G")
        return v

    @field_validator("extends")
    @classmethod
    def _extends(cls, v: list[str] | str | None) -> list[str] | str | None:
        for name in [v] if isinstance(v, str) else v or []:
            if not FILE_NAME.fullmatch(name):
                raise ValueError(f"{excerpt(name)} is not a profile name (a-z, 0-9, '.', '_', '-')")
        return v


class OverlayFile(Fragment):
    """A customer overlay: changes a profile without copying it."""
