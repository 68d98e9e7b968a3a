"""How each target hands a booting clone its data, as `golden verify --datasource NAME` reproduces it:

- `nocloud`: the project's own seed (a `cidata` drive, DHCP);
- `configdrive`: Nova's and OVH BYOI's config drive, an ISO labelled `config-2` with `openstack/latest/`
  `meta_data.json` (hostname, SSH key), `user_data` and `network_data.json` (a static address);
- `metadata`: the OpenStack metadata service at 169.254.169.254, served to the guest by `metadata_service`
  through a QEMU guestfwd (no port listens on the host), on a machine whose DMI says OpenStack Nova;
- `proxmox`: the NoCloud drive qemu-server writes (PVE/QemuServer/Cloudinit.pm, generate_nocloud): its own
  user-data (hostname, SSH keys, no package upgrade), `instance-id` meta-data, network-config version 1
  matching the NIC's MAC, and the project's host settings as vendor-data (`cicustom vendor=...`).

With user-mode networking the static address is the one QEMU's DHCP would give (10.0.2.15/24, gateway 10.0.2.2;
for the metadata service 169.254.0.15/16: libslirp forwards only addresses inside its network): what is proven
is that the guest took it from the data, not from DHCP, on the NIC with the MAC the data names.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.ssh_keys import SSHKey

# pycdlib, yaml and the renderers are imported where used: the CLI's parser reads DATASOURCES and must stay light

DATASOURCES = ("nocloud", "configdrive", "metadata", "proxmox")
CONFIG_DRIVE_LABEL = "config-2"


@dataclass(frozen=True)
class UserNet:
    """QEMU's user network as a clone sees it: its own static address is the one DHCP would give."""

    network: str
    prefix: int
    netmask: str
    address: str
    gateway: str
    dns: str

    def netdev_options(self) -> tuple[str, ...]:
        """The -netdev user options for this network; none for QEMU's default 10.0.2.0/24."""
        if self == DEFAULT_NET:
            return ()
        return (f"net={self.network}/{self.prefix}", f"host={self.gateway}", f"dhcpstart={self.address}",
                f"dns={self.dns}")


DEFAULT_NET = UserNet("10.0.2.0", 24, "255.255.255.0", "10.0.2.15", "10.0.2.2", "10.0.2.3")
#: libslirp forwards only addresses inside the user network ("Conflicting/invalid host:port in guest forwarding
#: rule" otherwise): the metadata service's clone lives on 169.254.0.0/16, as 169.254.169.254 is link-local.
METADATA_NET = UserNet("169.254.0.0", 16, "255.255.0.0", "169.254.0.15", "169.254.0.2", "169.254.0.3")
GUEST_ADDRESS, GUEST_GATEWAY = DEFAULT_NET.address, DEFAULT_NET.gateway
#: What cloud-init's status.json names as the datasource of each (`DataSourceX [...]`).
CLOUD_INIT_NAMES = {"nocloud": "DataSourceNoCloud", "configdrive": "DataSourceConfigDrive",
                    "metadata": "DataSourceOpenStack", "proxmox": "DataSourceNoCloud"}
#: The MAC prefixes of each platform's NICs: Nova's fa:16:3e, Proxmox's bc:24:11, QEMU's 52:54:00.
MAC_PREFIX = {"configdrive": "fa:16:3e", "metadata": "fa:16:3e", "proxmox": "bc:24:11", "nocloud": "52:54:00"}


@dataclass(frozen=True)
class CloneData:
    """What a clone is booted with for one datasource, and what the datasource suite then expects."""

    datasource: str
    hostname: str
    mac: str
    seed: Path | None  # the drive to attach (seed, config drive, Proxmox's drive), or none
    netdev_options: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()
    static: bool = True  # the address comes from the data (else DHCP)
    files: dict[str, str] = field(default_factory=dict)  # what the drive or service holds, by path
    net: UserNet = DEFAULT_NET
    settings: dict[str, Any] = field(default_factory=dict)  # the first-boot host settings it carries

    def expectations(self) -> dict[str, Any]:
        """The JSON the datasource suite reads ($GOLDEN_DATASOURCE)."""
        return {"datasource": self.datasource, "cloud_init_name": CLOUD_INIT_NAMES[self.datasource],
                "hostname": self.hostname, "mac": self.mac, "static": self.static,
                "address": f"{self.net.address}/{self.net.prefix}", "gateway": self.net.gateway}


def random_mac(datasource: str) -> str:
    return MAC_PREFIX[datasource] + "".join(f":{b:02x}" for b in secrets.token_bytes(3))


def clone_data(datasource: str, directory: Path, name: str, key: SSHKey, settings: dict[str, Any]) -> CloneData:
    """The data of `datasource` for the clone `name`: its drive written in `directory`, its key, its settings
    (their address and network made those of the clone's user network)."""
    from ..render.seed import write_seed_iso
    from ..render.userdata import render_host_user_data, render_meta_data

    mac = random_mac(datasource)
    net = METADATA_NET if datasource == "metadata" else DEFAULT_NET
    if "address" in settings:
        settings = {**settings, "address": net.address, "network": f"{net.network}/{net.prefix}"}
    if datasource == "nocloud":
        user_data = render_host_user_data(name, settings, ssh_authorized_keys=[key.public])
        meta = render_meta_data(f"verify-{uuid.uuid4().hex[:12]}", name)
        seed = write_seed_iso(directory / f"{name}-seed.iso", user_data, meta)
        return CloneData(datasource, name, mac, seed, static=False,
                         files={"user-data": user_data, "meta-data": meta}, settings=settings)
    if datasource in ("configdrive", "metadata"):
        files = openstack_files(name, key, settings, mac, net)
        if datasource == "configdrive":
            drive = write_config_drive(directory / f"{name}-config-drive.iso", files)
            return CloneData(datasource, name, mac, drive, files=files, settings=settings)
        root = directory / f"{name}-metadata"
        for path, text in files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(text)
        # the service's directory listings (GET /openstack lists the versions)
        (root / "openstack" / "index").write_text("latest\n")
        from .metadata_service import guestfwd

        return CloneData(datasource, name, mac, None, netdev_options=(*net.netdev_options(), guestfwd(root)),
                         extra_args=("-smbios", "type=1,manufacturer=OpenStack Foundation,product=OpenStack Nova"),
                         files=files, net=net, settings=settings)
    if datasource == "proxmox":
        files = proxmox_files(name, key, settings, mac, net)
        seed = write_seed_iso(directory / f"{name}-cloudinit.iso", files["user-data"], files["meta-data"],
                              files["network-config"], vendor_data=files["vendor-data"])
        return CloneData(datasource, name, mac, seed, files=files, settings=settings)
    raise ValueError(f"unknown datasource {datasource!r}")


def openstack_files(name: str, key: SSHKey, settings: dict[str, Any], mac: str,
                    net: UserNet = DEFAULT_NET) -> dict[str, str]:
    """openstack/latest/* as Nova writes them: the hostname and key in meta_data.json, the address in
    network_data.json, only the project's host settings in user_data."""
    from ..render.userdata import render_host_user_data

    meta = {
        "uuid": str(uuid.uuid4()), "name": name, "hostname": name, "launch_index": 0,
        "availability_zone": "nova", "project_id": uuid.uuid4().hex,
        "public_keys": {"verify": key.public}, "keys": [{"name": "verify", "type": "ssh", "data": key.public}],
        "meta": {},
    }
    network = {
        "links": [{"id": "tap0", "type": "phy", "ethernet_mac_address": mac, "mtu": 1500, "vif_id": str(uuid.uuid4())}],
        "networks": [{"id": "network0", "type": "ipv4", "link": "tap0", "ip_address": net.address,
                      "netmask": net.netmask, "network_id": str(uuid.uuid4()),
                      "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": net.gateway}]}],
        "services": [{"type": "dns", "address": net.dns}],
    }
    return {
        "openstack/latest/meta_data.json": json.dumps(meta, indent=2),
        "openstack/latest/user_data": render_host_user_data(None, settings),
        "openstack/latest/network_data.json": json.dumps(network, indent=2),
        "openstack/latest/vendor_data.json": "{}",
    }


def proxmox_files(name: str, key: SSHKey, settings: dict[str, Any], mac: str,
                  net: UserNet = DEFAULT_NET, *, ciuser: str | None = None) -> dict[str, str]:
    """The files of qemu-server's NoCloud drive for a VM named `name` with `sshkeys`, `ciupgrade 0` and
    `ipconfig0 ip=10.0.2.15/24,gw=10.0.2.2` (and `ciuser`, which renames the image's default user, as a
    Packer bake's clone has it); vendor-data the project's host settings."""
    import yaml

    from ..render.userdata import dump_cloud_config, render_host_user_data

    user_cfg: dict[str, Any] = {"hostname": name, "manage_etc_hosts": True, "fqdn": name}
    if ciuser:
        user_cfg["user"] = ciuser
    user = dump_cloud_config({**user_cfg, "ssh_authorized_keys": [key.public], "chpasswd": {"expire": False},
                              "users": ["default"]})
    network = yaml.safe_dump({"version": 1, "config": [
        {"type": "physical", "name": "eth0", "mac_address": mac.lower(), "subnets": [
            {"type": "static", "address": net.address, "netmask": net.netmask, "gateway": net.gateway}]},
        {"type": "nameserver", "address": [net.dns]},
    ]}, sort_keys=False)
    meta = f"instance-id: {hashlib.sha1((user + network).encode()).hexdigest()}\n"  # noqa: S324 - as PVE does
    vendor = render_host_user_data(None, settings) if settings else ""
    return {"user-data": user, "meta-data": meta, "network-config": network, "vendor-data": vendor}


def write_config_drive(path: Path, files: dict[str, str]) -> Path:
    """An ISO 9660 config drive labelled config-2 holding `files` (paths under its root), written atomically."""
    import pycdlib

    from ..render.seed import write_iso

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=CONFIG_DRIVE_LABEL)
    try:
        made: set[str] = set()
        for rel, text in sorted(files.items()):
            parts = rel.split("/")
            for depth in range(1, len(parts)):
                directory = "/".join(parts[:depth])
                if directory not in made:
                    iso.add_directory(_iso_path(directory), rr_name=parts[depth - 1], joliet_path="/" + directory)
                    made.add(directory)
            data = text.encode()
            iso_name = _iso_path(rel)
            iso_name += ("" if "." in parts[-1] else ".") + ";1"
            iso.add_fp(io.BytesIO(data), len(data), iso_name, rr_name=parts[-1], joliet_path="/" + rel)
        write_iso(iso, path)
    finally:
        iso.close()
    return path


def _iso_path(rel: str) -> str:
    """The ISO 9660 name of a path (upper case, no dashes or dots but the extension's); Rock Ridge and Joliet
    carry the real names."""
    return "/" + "/".join(part.upper().replace("-", "_").replace(".", "_", part.count(".") - 1)
                          for part in rel.split("/"))

