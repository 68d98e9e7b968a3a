"""A resolved profile's content, typed: what the renderers, the bake and the agent's bundle read. Built from the
merged, substituted files (the schema checked them); `as_json()` gives the same content as JSON data, for the
manifest, the content key and the image's description of itself."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

#: JSON data handed on as it is: the role settings baked into image.json (their schema is role_settings.Settings,
#: their reader the agent).
JsonObject = Mapping[str, object]


@dataclass(frozen=True)
class FileEntry:
    path: str
    content: str
    owner: str = "root:root"
    permissions: str = "0644"


@dataclass(frozen=True)
class UserEntry:
    name: str
    groups: tuple[str, ...] = ()
    shell: str = "/bin/bash"
    sudo: bool = False
    ssh_authorized_keys: tuple[str, ...] = ()
    system: bool = False


@dataclass(frozen=True)
class AptSourceEntry:
    source: str
    key: str | None = None


@dataclass(frozen=True)
class AptConfig:
    mirror: str | None = None
    security_mirror: str | None = None
    archive_mirror: str | None = None
    sources: Mapping[str, AptSourceEntry] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class SystemConfig:
    locale: str | None = None
    timezone: str | None = None
    ntp_servers: tuple[str, ...] = ()
    ntp_client: str | None = None
    keyboard: str | None = None


@dataclass(frozen=True)
class ProfileContent:
    """Every content key of profile_schema.Fragment, merged."""

    packages: tuple[str, ...] = ()
    remove_packages: tuple[str, ...] = ()
    base_packages: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    files: tuple[FileEntry, ...] = ()
    sysctls: Mapping[str, str | int] = field(default_factory=lambda: MappingProxyType({}))
    users: tuple[UserEntry, ...] = ()
    apt: AptConfig = field(default_factory=AptConfig)
    system: SystemConfig = field(default_factory=SystemConfig)
    settings: JsonObject = field(default_factory=lambda: MappingProxyType({}))
    bake_commands: tuple[str, ...] = ()
    vm_bake_commands: tuple[str, ...] = ()
    instance_unique: tuple[str, ...] = ()
    #: The same content as JSON data (as merged: only the keys some file set).
    json: JsonObject = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProfileContent:
        """The typed content of merged profile data (the schema has checked every value)."""
        apt = data.get("apt") or {}
        system = data.get("system") or {}
        return cls(
            packages=tuple(data.get("packages", ())),
            remove_packages=tuple(data.get("remove_packages", ())),
            base_packages=tuple(data.get("base_packages", ())),
            services=tuple(data.get("services", ())),
            files=tuple(FileEntry(**f) for f in data.get("files", ())),
            sysctls=MappingProxyType(dict(data.get("sysctls") or {})),
            users=tuple(UserEntry(**{**u, "groups": tuple(u.get("groups", ())),
                                     "ssh_authorized_keys": tuple(u.get("ssh_authorized_keys", ()))})
                        for u in data.get("users", ())),
            apt=AptConfig(mirror=apt.get("mirror"), security_mirror=apt.get("security_mirror"),
                          archive_mirror=apt.get("archive_mirror"),
                          sources=MappingProxyType({name: AptSourceEntry(**src)
                                                    for name, src in (apt.get("sources") or {}).items()})),
            system=SystemConfig(locale=system.get("locale"), timezone=system.get("timezone"),
                                ntp_servers=tuple(system.get("ntp_servers") or ()),
                                ntp_client=system.get("ntp_client"), keyboard=system.get("keyboard")),
            settings=MappingProxyType(dict(data.get("settings") or {})),
            bake_commands=tuple(data.get("bake_commands", ())),
            vm_bake_commands=tuple(data.get("vm_bake_commands", ())),
            instance_unique=tuple(data.get("instance_unique", ())),
            json=MappingProxyType(dict(data)),
        )

    def as_json(self) -> dict[str, Any]:
        """The content as JSON data (a copy), for manifests, content keys and image.json."""
        import copy

        return copy.deepcopy(dict(self.json))
