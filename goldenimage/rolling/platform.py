"""Where the hosts of a rolling `--image` upgrade run, and the platform's step that boots one on another image.

The inventory says it, beside the hosts' addresses (credentials stay in the environment, as `golden publish`
takes them):

    platform:
      openstack: {cloud: ovh-gra}         # a clouds.yaml entry (or OS_CLOUD / the OS_* variables); uefi: true
      servers: {lb1: 6f1c0b0e-...}        # host -> its Nova server id
    # or
    platform:
      proxmox: {node: pve1}               # PROXMOX_URL, PROXMOX_TOKEN_ID, PROXMOX_TOKEN_SECRET; storage, uefi
      servers: {lb1: 101}                 # host -> its VMID

OpenStack: the artifact is published to Glance (reused when its content key is there), then the server is
rebuilt on it: Nova keeps its id, ports, addresses, flavor and user data; putting it back is a rebuild on the
image it booted before. Proxmox VE: the artifact is published as a template (reused likewise), the VM is shut
down and its boot disk replaced by a copy of the template's (`scsiN: STORAGE:0,import-from=TEMPLATE-DISK`, on
the old disk's storage, grown to its size); PVE keeps the old disk as `unusedN`, so putting it back is one
config change, and the VM keeps its VMID, NICs and cloud-init drive. A clone-and-swap would give the host a new
VMID (its backups, HA group, firewall and permissions are keyed by it) and a swap back to roll back."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..apply.inventory import Inventory
from ..bake import store
from ..core.errors import GoldenError, InputError
from ..publish.openstack import OpenStackPublisher, OpenStackSettings
from ..publish.proxmox import ProxmoxPublisher, ProxmoxSettings
from ..publish.publisher import publish
from ..render.proxmox_hardware import HARDWARE

PLATFORMS = ("openstack", "proxmox")
SETTINGS: dict[str, dict[str, type]] = {"openstack": {"cloud": str, "uefi": bool},
                                        "proxmox": {"node": str, "storage": str, "uefi": bool}}
PROXMOX_ENV = ("PROXMOX_URL", "PROXMOX_TOKEN_ID", "PROXMOX_TOKEN_SECRET")
SERVER_ID = {"openstack": re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
             "proxmox": re.compile(r"[1-9][0-9]{2,8}")}
WHAT_ID = {"openstack": "a Nova server id (openstack server list)", "proxmox": "a VMID, 100 to 999999999"}
EXAMPLE = "platform: {openstack: {cloud: NAME} | proxmox: {node: NODE}, servers: {HOST: ID}}"


class PlatformErrors(InputError):
    """Every problem of the inventory's platform section or of the images, one line each."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines), lines=lines, hint=f"--image needs in the inventory: {EXAMPLE}")


@dataclass(frozen=True)
class Platform:
    kind: str
    settings: dict[str, Any]
    #: host name -> server id (OpenStack) or VMID (Proxmox), as text
    servers: dict[str, str]
    where: str = field(default="inventory")


def profile_name(profile: str) -> str:
    """A cluster host's profile as an artifact's manifest names it (a path in the cluster file: its stem)."""
    return Path(profile).name.removesuffix(".yaml").removesuffix(".yml")


def load_images(paths: Sequence[Path], host_profiles: Mapping[str, str]) -> dict[str, store.Artifact]:
    """Profile name -> the `--image` artifact for it; PlatformErrors naming each image that is not a complete
    artifact, a second one for a profile, or one no host of the cluster runs."""
    errors: list[str] = []
    found: dict[str, store.Artifact] = {}
    wanted = sorted({profile_name(p) for p in host_profiles.values()})
    for path in paths:
        artifact = store.from_path(path)
        if artifact is None:
            errors.append(f"--image {path}: not a complete goldenimage artifact (QCOW2 with NAME.manifest.json "
                          "and NAME.sha256 beside it): golden images list shows them")
            continue
        profile = artifact.manifest().profile
        if profile in found:
            errors.append(f"--image {path}: a second image for profile {profile} (first: {found[profile].name})")
        elif profile not in wanted:
            errors.append(f"--image {path}: profile {profile or '?'}: no host of the cluster runs it "
                          f"(their profiles: {', '.join(wanted)})")
        else:
            found[profile] = artifact
    if errors:
        raise PlatformErrors(errors)
    return found


def parse_platform(inventory: Inventory, needed: Iterable[str], env: Mapping[str, str] | None = None) -> Platform:
    """The inventory's platform section, with a server id for every host in `needed`; PlatformErrors listing
    every problem (before anything is asked of the platform)."""
    where, data = str(inventory.path), inventory.platform
    env = os.environ if env is None else env
    if data is None:
        raise PlatformErrors([f"{where}: platform: missing: --image boots each host on the new image through its "
                              "platform: say which (openstack or proxmox) and each host's server id"])
    if not isinstance(data, dict):
        raise PlatformErrors([f"{where}: platform: must be a mapping ({EXAMPLE})"])
    errors = [f"{where}: platform.{key}: unknown key (expected: {', '.join(PLATFORMS)}, servers)"
              for key in data if key not in (*PLATFORMS, "servers")]
    kinds = [k for k in PLATFORMS if k in data]
    if len(kinds) != 1:
        errors.append(f"{where}: platform: name exactly one of {' or '.join(PLATFORMS)} (found: "
                      f"{', '.join(kinds) or 'none'})")
        raise PlatformErrors(errors)
    kind = kinds[0]
    settings = data[kind] if data[kind] is not None else {}
    if not isinstance(settings, dict):
        errors.append(f"{where}: platform.{kind}: must be a mapping of {', '.join(SETTINGS[kind])}")
        settings = {}
    for key, value in settings.items():
        expected = SETTINGS[kind].get(key)
        if expected is None:
            errors.append(f"{where}: platform.{kind}.{key}: unknown key (expected: {', '.join(SETTINGS[kind])}; "
                          "credentials come from the environment, never the inventory)")
        elif not isinstance(value, expected) or (isinstance(value, str) and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}",
                                                                                                  value)):
            errors.append(f"{where}: platform.{kind}.{key}: {value!r} is not a {expected.__name__}"
                          + (" of letters, digits, '.', '_' or '-'" if expected is str else ""))
    if kind == "proxmox":
        missing = [n for n in PROXMOX_ENV if not env.get(n)]
        if not settings.get("node") and not env.get("PROXMOX_NODE"):
            errors.append(f"{where}: platform.proxmox.node: missing: the PVE node that answers the API "
                          "(or PROXMOX_NODE)")
        if missing:
            errors.append(f"{where}: platform.proxmox: {', '.join(missing)} not set: export the API's address and "
                          "token (USER@REALM!TOKENID and its secret)")
    servers_raw = data.get("servers")
    servers: dict[str, str] = {}
    if not isinstance(servers_raw, dict):
        errors.append(f"{where}: platform.servers: missing or not a mapping: give each host its "
                      f"{WHAT_ID[kind].split(' (')[0]} (servers: {{HOST: ID}})")
        servers_raw = {}
    for name, value in servers_raw.items():
        text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
        if str(name) not in inventory.hosts:
            errors.append(f"{where}: platform.servers.{name}: not a host of the inventory")
        elif not SERVER_ID[kind].fullmatch(text):
            errors.append(f"{where}: platform.servers.{name}: {value!r} is not {WHAT_ID[kind]}")
        else:
            servers[str(name)] = text
    for name in needed:
        if name not in servers_raw:
            errors.append(f"{where}: platform.servers.{name}: missing: the {kind} id of host {name} "
                          f"({WHAT_ID[kind]})")
    seen: dict[str, str] = {}
    for name, server in servers.items():
        other = seen.setdefault(server, name)
        if other != name:
            errors.append(f"{where}: platform.servers.{name}: the same server as {other} ({server})")
    if errors:
        raise PlatformErrors(errors)
    return Platform(kind, dict(settings), servers, where)


class OpenStackReplacer:
    """A Nova server rebuilt on the artifact's Glance image (published first when it is not there)."""

    def __init__(self, platform: Platform, publisher: OpenStackPublisher | None = None, *, timeout: float = 900.0,
                 interval: float = 5.0) -> None:
        self.platform = platform
        self.publisher = publisher or OpenStackPublisher(OpenStackSettings(
            cloud=platform.settings.get("cloud"), uefi=bool(platform.settings.get("uefi"))))
        self.timeout, self.interval = timeout, interval
        #: host -> the image it booted before this run replaced it
        self.previous: dict[str, str] = {}

    def check(self) -> None:
        missing = [f"{self.platform.where}: platform.servers.{name}: no server {sid} in this OpenStack project "
                   "(openstack server list shows the ids)"
                   for name, sid in self.platform.servers.items() if self.publisher.server_image(sid) is None]
        if missing:
            raise PlatformErrors(missing)

    def running(self, name: str) -> str | None:
        found = self.publisher.server_image(self.platform.servers[name])
        return found[1] or None if found else None

    def replace(self, name: str, artifact: store.Artifact) -> None:
        sid = self.platform.servers[name]
        image = publish(self.publisher, artifact).image
        found = self.publisher.server_image(sid)
        if found is None:
            raise GoldenError(f"{name}: server {sid} is gone")
        self.previous.setdefault(name, found[0])
        self.publisher.rebuild(sid, image.id, self.timeout, self.interval)

    def restore(self, name: str) -> None:
        self.publisher.rebuild(self.platform.servers[name], self.previous[name], self.timeout, self.interval)


@dataclass(frozen=True)
class _Disk:
    """A VM's boot disk before the replace: the drive as PVE printed it, and the VM's tags."""

    key: str
    drive: str
    tags: str


def _size_gib(drive: str) -> float:
    """A drive's size= option in GiB (0 when it has none)."""
    match = re.search(r"(?:^|,)size=([0-9.]+)([KMGT]?)", drive)
    if not match:
        return 0.0
    return float(match[1]) * {"K": 1 / 1024 ** 2, "M": 1 / 1024, "G": 1.0, "T": 1024.0, "": 1 / 1024 ** 3}[match[2]]


def _golden_tags(tags: str, key: str) -> str:
    kept = [t for t in tags.split(";") if t and not t.startswith("golden-key-")]
    return ";".join([*kept, f"golden-key-{key}"])


class ProxmoxReplacer:
    """A VM's boot disk replaced by a copy of the artifact's template disk (published first when it is not
    there); the old disk stays as unusedN until it is put back."""

    def __init__(self, platform: Platform, publisher: ProxmoxPublisher | None = None) -> None:
        self.platform = platform
        if publisher is None:
            settings = ProxmoxSettings.from_env(node=platform.settings.get("node"), **{
                k: v for k, v in platform.settings.items() if k in ("storage", "uefi")})
            publisher = ProxmoxPublisher(settings)
        self.publisher = publisher
        self.previous: dict[str, _Disk] = {}

    def _vm(self, name: str) -> tuple[str, int, dict[str, Any]]:
        vmid = int(self.platform.servers[name])
        found = self.publisher.find_vm(vmid)
        if found is None:
            raise GoldenError(f"{name}: Proxmox VM {vmid} is gone")
        return found[0], vmid, found[1]

    def check(self) -> None:
        problems = []
        for name, vmid in self.platform.servers.items():
            found = self.publisher.find_vm(int(vmid))
            if found is None:
                problems.append(f"{self.platform.where}: platform.servers.{name}: no VM {vmid} in the Proxmox "
                                "cluster (qm list shows the VMIDs)")
            elif str(found[1].get("template", "0")) == "1" or HARDWARE.boot_disk not in found[1]:
                problems.append(f"{self.platform.where}: platform.servers.{name}: VM {vmid} is a template or has "
                                f"no {HARDWARE.boot_disk} boot disk")
        if problems:
            raise PlatformErrors(problems)

    def running(self, name: str) -> str | None:
        tags = str(self._vm(name)[2].get("tags", ""))
        return next((t.removeprefix("golden-key-") for t in tags.split(";") if t.startswith("golden-key-")), None)

    def replace(self, name: str, artifact: store.Artifact) -> None:
        template = publish(self.publisher, artifact).image
        source = self.publisher.template_disk(template)
        node, vmid, config = self._vm(name)
        key = HARDWARE.boot_disk
        old = str(config[key])
        self.previous.setdefault(name, _Disk(key, old, str(config.get("tags", ""))))
        volume, _, options = old.partition(",")
        kept = ",".join(o for o in options.split(",") if o and not o.startswith("size="))
        storage = volume.split(":")[0]
        self.publisher.power(node, vmid, "shutdown")
        self.publisher.set_config(node, vmid, f"copying template {template.id}'s disk into VM {vmid}",
                                  **{key: f"{storage}:0,import-from={source}" + (f",{kept}" if kept else ""),
                                     "tags": _golden_tags(str(config.get("tags", "")), artifact.key)})
        found = self.publisher.find_vm(vmid)
        after = str(found[1].get(key, "")) if found else ""
        if _size_gib(old) > _size_gib(after):
            self.publisher.resize(node, vmid, key, f"{_size_gib(old):g}G")
        self.publisher.power(node, vmid, "start")

    def restore(self, name: str) -> None:
        node, vmid, _ = self._vm(name)
        disk = self.previous[name]
        self.publisher.power(node, vmid, "shutdown")
        # the old volume leaves unusedN as it becomes the boot disk again; the new one becomes unusedN (kept
        # for a look at what failed)
        tags = {"tags": disk.tags} if disk.tags else {"delete": "tags"}
        self.publisher.set_config(node, vmid, f"putting VM {vmid}'s previous disk back", **{
            disk.key: disk.drive, **tags})
        self.publisher.power(node, vmid, "start")


def replacer_for(platform: Platform, boot_timeout: float, poll: float) -> OpenStackReplacer | ProxmoxReplacer:
    """The platform's replace step (its client made now: credentials are read, nothing is changed)."""
    if platform.kind == "openstack":
        return OpenStackReplacer(platform, timeout=boot_timeout, interval=poll)
    return ProxmoxReplacer(platform)
