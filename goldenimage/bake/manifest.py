"""An artifact's manifest, typed: what was baked, from which base, by which route and tools, and what the image
holds. The store writes `Manifest.to_json()` (with the image's file, checksum and size) as NAME.manifest.json;
verify, audit, publish, channels, stable pins and the shared store read it back as a `StoredManifest`."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..core.run import run
from ..model.profiles import ResolvedProfile
from .base_image import BaseImage
from .packer_cli import packer_version

FORMAT = 1


@dataclass(frozen=True)
class Guest:
    """What the baked system holds, as the VM's collect-manifest.sh or the native bake's tree reading records it."""

    packages: Mapping[str, str] = field(default_factory=dict)
    cloud_init: str | None = None
    kernels: tuple[str, ...] = ()
    #: dpkg's install and upgrade actions during the VM pass, from the guest's /var/log/dpkg.log
    vm_pass_dpkg: tuple[str, ...] = ()
    #: dpkg's actions after the package layer (the native converge's), read from the tree
    after_layer_dpkg: tuple[str, ...] = ()
    #: the runcmd lines cloud-init held in the VM pass
    runcmd: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Guest:
        """A guest manifest as collect-manifest.sh writes it (or native.tree_manifest returns it)."""
        return cls(
            packages={str(k): str(v) for k, v in dict(data.get("packages") or {}).items()},
            cloud_init=data.get("cloud_init"),
            kernels=tuple(str(k) for k in data.get("kernels", [])),
            vm_pass_dpkg=tuple(str(a) for a in data.get("vm_pass_dpkg", [])),
            after_layer_dpkg=tuple(str(a) for a in data.get("after_layer_dpkg", [])),
            runcmd=tuple(str(line) for line in data.get("runcmd", [])),
        )

    def after_vm_pass(self, vm: Guest) -> Guest:
        """The tree's reading with what the VM pass changed: its packages and kernels, its dpkg actions."""
        return replace(self, packages=vm.packages or self.packages, kernels=vm.kernels or self.kernels,
                       vm_pass_dpkg=vm.vm_pass_dpkg, runcmd=vm.runcmd)


@dataclass(frozen=True)
class Route:
    """How the artifact was baked: `native` (package layer, converge, hygiene, disk natively; a VM pass only for
    vm_bake_commands) or `vm` (cloud-init in a Packer VM); the native route also records its stages' seconds."""

    name: str
    native: tuple[str, ...]
    vm: tuple[str, ...]
    vm_pass_runcmd: tuple[str, ...] | None = None
    seconds: Mapping[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "native": list(self.native), "vm": list(self.vm)}
        if self.vm_pass_runcmd is not None:
            # what cloud-init's runcmd script held in the VM pass (it stops at the first failing line)
            data["vm_pass_runcmd"] = list(self.vm_pass_runcmd)
        if self.seconds is not None:
            data["seconds"] = {k: round(v, 1) for k, v in self.seconds.items()}
        return data


@dataclass(frozen=True)
class Build:
    """When, where and with which tools the artifact was built; `packer` is None when no Packer ran."""

    started: float
    finished: float
    accelerator: str
    host: str
    packer: str | None
    qemu: str

    @classmethod
    def now(cls, started: float, accelerator: str, *, packer_ran: bool) -> Build:
        """The build record of a bake that started at `started` and ends now, with this host's tools."""
        return cls(started=started, finished=time.time(), accelerator=accelerator, host=platform.node(),
                   packer=".".join(str(n) for n in packer_version()) if packer_ran else None,
                   qemu=qemu_version())

    def to_json(self) -> dict[str, Any]:
        return {
            "started": _utc(self.started),
            "finished": _utc(self.finished),
            "seconds": round(self.finished - self.started, 1),
            "accelerator": self.accelerator,
            "host": self.host,
            "packer": self.packer,
            "qemu": self.qemu,
        }


@dataclass(frozen=True)
class Converge:
    """The native converge's report: one line per change, then its summary."""

    summary: str
    changes: tuple[str, ...]

    @classmethod
    def from_report(cls, lines: Sequence[str]) -> Converge:
        return cls(summary=lines[-1] if lines else "", changes=tuple(lines[:-1]))


@dataclass(frozen=True)
class Manifest:
    """One artifact's manifest; the store adds `image` (file, sha256, size) when it commits the qcow2."""

    content_key: str
    kind: str
    profile: ResolvedProfile
    base: BaseImage
    build: Build
    guest: Guest
    route: Route
    converge: Converge | None = None  # the native route's

    def to_json(self) -> dict[str, Any]:
        release = self.profile.release
        data: dict[str, Any] = {
            "format": FORMAT,
            "content_key": self.content_key,
            # what the image is for: cloud (virtual machines) or metal (dedicated servers); verify and publish read it
            "kind": self.kind,
            "profile": self.profile.to_dict(),
            "release": {"number": release.number, "codename": release.codename},
            # security, lts or none when it was built; the extended-support source it took (ELTS), if any
            "support": release.support.manifest() if release.support else None,
            "base": {"source": self.base.source, "sha256": self.base.sha256, "key": self.base.key,
                     "file": self.base.path.name},
            # the firmware the artifact boots: "bios", "uefi", "uefi-secureboot" (publish and verify read it)
            "firmware": list(self.base.firmware),
            "build": self.build.to_json(),
            "cloud_init": self.guest.cloud_init,
            "kernels": list(self.guest.kernels),
            "packages": dict(self.guest.packages),
            "vm_pass_dpkg": list(self.guest.vm_pass_dpkg),
            "route": self.route.to_json(),
        }
        if self.converge is not None:
            data["converge"] = {"summary": self.converge.summary, "changes": list(self.converge.changes)}
            data["after_layer_dpkg"] = list(self.guest.after_layer_dpkg)
        return data


@dataclass(frozen=True)
class ImageFile:
    """The qcow2 a stored manifest names, as the store committed it."""

    file: str
    sha256: str
    size_bytes: int | None = None


@dataclass(frozen=True)
class StoredManifest:
    """A manifest file read back, typed: what its readers use of it. An older manifest lacks `kind` and
    `firmware` (a cloud image that boots BIOS); `data` is the JSON whole, for a store that copies it on."""

    content_key: str
    kind: str
    profile: str  # the profile's name; "" when the manifest does not say
    roles: tuple[str, ...]
    debian: int  # 0 when the manifest does not say
    codename: str
    disk_size: str
    firmware: tuple[str, ...]
    packages: Mapping[str, str]
    finished: str | None  # build.finished, ISO 8601 UTC
    image: ImageFile | None  # None until the store commits the qcow2
    store_object: str | None  # the shared store's object holding the qcow2
    data: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Any) -> StoredManifest:
        """The typed reading of a manifest's JSON; ValueError when it is not a JSON object."""
        if not isinstance(data, Mapping):
            raise ValueError("a manifest is a JSON object")
        profile, release = _object(data, "profile"), _object(data, "release")
        image, build, shared = _object(data, "image"), _object(data, "build"), _object(data, "store")
        size = image.get("size_bytes")
        return cls(
            content_key=str(data.get("content_key", "")),
            kind=str(data.get("kind") or "cloud"),
            profile=str(profile.get("profile") or ""),
            roles=tuple(str(r) for r in profile.get("roles") or ()),
            debian=int(release.get("number", profile.get("debian", 0)) or 0),
            codename=str(release.get("codename", profile.get("codename", ""))),
            disk_size=str(profile.get("disk_size") or ""),
            firmware=tuple(str(f) for f in data.get("firmware") or ("bios",)),
            packages={str(k): str(v) for k, v in _object(data, "packages").items()},
            finished=str(build["finished"]) if build.get("finished") else None,
            image=ImageFile(str(image["file"]), str(image["sha256"]), int(size) if size else None)
            if "file" in image and "sha256" in image else None,
            store_object=str(shared["object"]) if shared.get("object") else None,
            data=data,
        )

    @classmethod
    def read(cls, path: Path) -> StoredManifest:
        """The manifest file at `path`; OSError or ValueError when it cannot be read as one."""
        return cls.from_json(json.loads(path.read_text()))

    def to_json(self, store_object: str | None = None) -> dict[str, Any]:
        """The JSON to write again: as read, less the shared store's entry, or with `store_object` as it."""
        data = {k: v for k, v in self.data.items() if k != "store"}
        if store_object is not None:
            data["store"] = {"object": store_object}
        return data


def _object(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    found = data.get(key)
    return found if isinstance(found, Mapping) else {}


def qemu_version() -> str:
    """The first line of `qemu-system-x86_64 --version`."""
    out = run(["qemu-system-x86_64", "--version"]).stdout
    return out.splitlines()[0] if out else "unknown"


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
