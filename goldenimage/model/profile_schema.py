"""The schema of profile, role and overlay files (pydantic), and how schema errors read."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, Strict, field_validator, model_validator

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


class Merge(StrEnum):
    """How a key's values from several files (roles, the extends chain, with_roles, overlays) combine."""

    APPEND = "append"  # lists of names: an item already there is not repeated; order kept
    BY_KEY = "by key"  # lists of keyed items: a later item with the same key replaces the earlier one whole
    DEEP = "deep merge"  # maps: keys added or replaced one by one, nested maps likewise
    REPLACE = "replace"  # scalars and the release list: the later file's value
    OWN = "own file"  # read from the file that declares it, never merged (extends, abstract, with_roles...)


def key(default: Any, doc: str, merge: Merge, by: str | None = None) -> Any:
    """A profile key, declared once: its type is the field's, with its merge rule and its documentation (the
    README's profile reference is generated from these; tests/unit/test_profile_reference.py checks it)."""
    extra: dict[str, Any] = {"merge": str(merge)}
    if by is not None:
        extra["by"] = by
    return Field(default, description=doc, json_schema_extra=extra)


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

    description: OneLine | None = key(None, "one line shown by `golden profiles`", Merge.REPLACE)
    packages: list[PackageName] = key(
        [], "Debian packages installed at bake time; `{{ php }}` and other release variables allowed", Merge.APPEND)
    remove_packages: list[PackageName] = key(
        [], "packages that must not be in the image: dropped from `packages` and `services` whoever added them, "
            "and purged at bake time (with what depends on them) if the base or a dependency installed them",
        Merge.APPEND)
    base_packages: list[PackageName] = key(
        [], "installed when the mirror-built base is made (natively, no VM): packages whose maintainer scripts are "
            "slow under emulation; the bake installs them too, a no-op on that base", Merge.APPEND)
    services: list[UnitName] = key([], "systemd units enabled in the image", Merge.APPEND)
    files: list[FileSpec] = key([], "`{path, content, owner, permissions}` written at bake time", Merge.BY_KEY, "path")
    sysctls: dict[SysctlKey, SysctlValue] = key(
        {}, "kernel settings written to `/etc/sysctl.d/60-golden.conf`", Merge.DEEP)
    users: list[UserSpec] = key(
        [], "`{name, groups, shell, sudo, ssh_authorized_keys, system}`; accounts never get passwords",
        Merge.BY_KEY, "name")
    apt: AptSpec = key(
        AptSpec(), "`mirror`, `security_mirror`, `archive_mirror` (Debian 10), extra `sources: {name: {source, key}}`",
        Merge.DEEP)
    system: SystemSpec = key(
        SystemSpec(), "`locale`, `timezone`, `ntp_servers`, `ntp_client` (`chrony`, the default, or `ntp`), "
                      "`keyboard`", Merge.DEEP)
    settings: Settings = key(
        Settings(), "role settings baked into `/etc/golden/image.json`, read by first boot; one schema per role "
                    "section, see [Errors in input](#errors-in-input)", Merge.DEEP)
    bake_commands: list[ShellLine] = key(
        [], "shell commands run at the end of the bake (after packages and files), one line each; the local native "
            "bake runs them chrooted in the tree, with nothing mounted and no service started", Merge.APPEND)
    vm_bake_commands: list[ShellLine] = key(
        [], "bake commands that need a running system (`update-grub`, an installer that talks to systemd): the "
            "local bake runs them in a VM pass on the converged disk (a profile without them boots no VM); "
            "cloud-init runs them right after `bake_commands`", Merge.APPEND)
    instance_unique: list[GlobPath] = key(
        [], "paths removed by the cleanup because each clone must make its own (keys, certificates)", Merge.APPEND)

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

    with_roles: dict[Role, Fragment] = key(
        {}, "extra content added when another role is on the same host (`hardened` + a sql role adds MariaDB "
            "encryption)", Merge.OWN)
    example_settings: dict[str, Any] = key(
        {}, "an example of the first-boot settings the role reads (README, `golden render`)", Merge.DEEP)


class ProfileFile(Fragment):
    """profiles/<name>.yaml: a buildable (or abstract) profile."""

    extends: list[str] | str | None = key(None, "parent profile(s) by name; `base` holds the shared base", Merge.OWN)
    roles: list[Role] = key(
        [], "roles this host runs: one for a plain role, several for a hybrid host", Merge.APPEND)
    debian: list[Annotated[int, Strict()]] | None = key(
        None, "supported releases, e.g. `[11, 12]` (default: every release in the matrix)", Merge.REPLACE)
    abstract: bool = key(False, "`true` for profiles that are only parents (`base`)", Merge.OWN)
    disk_size: str | None = key(
        None, "virtual disk size of the image, e.g. `8G` (default `4G`); at least the layout's size", Merge.REPLACE)
    disk_layout: DiskLayout | None = key(
        None, "`single` (default: one ext4, 3 GiB base, grown to the disk at first boot) or `separate-mounts` "
              "(see below)", Merge.REPLACE)

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
