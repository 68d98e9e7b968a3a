"""Proxmox VE target: the qcow2 becomes a VM template, through proxmoxer with an API token.

The qcow2 is uploaded to a storage with content type `import` (Proxmox VE 8.4 and later take disk images
there; PVE checks the sha256 itself), a VM is created with `scsi0: STORAGE:0,import-from=VOLUME`, a
cloud-init drive, the guest agent, a serial console and no package upgrade at first boot, then converted
to a template. The uploaded file is removed once the template holds its own copy.

Older PVE versions have no API to bring a disk image onto a VM (`qm importdisk` and `import-from` a path
are root-on-the-node only): publish says so and prints the commands to run on the node.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..bake.store import Artifact
from ..core.log import info, log
from ..render.proxmox_hardware import HARDWARE, TASK_TIMEOUT_S, VM_STORAGE
from .publisher import (
    ChecksumMismatch,
    CredentialsError,
    HashingReader,
    ImageFacts,
    PublishedImage,
    PublishError,
    UploadProgress,
    cleanup_on_failure,
    retry,
    wait_until,
)

#: The first release whose `import` content type takes qcow2/raw/vmdk uploads usable by import-from.
IMPORT_MIN_VERSION = (8, 4)
TASK_POLL_S = 1.0
MAX_VMS_INSPECTED = 2000  # in_use() reads each VM's config: bounded on huge clusters


@dataclass(frozen=True)
class ProxmoxSettings:
    url: str  # https://pve.example:8006
    token_id: str  # USER@REALM!TOKENID
    token_secret: str
    node: str
    storage: str = "local"  # where the qcow2 is uploaded (content type import)
    vm_storage: str = VM_STORAGE  # where the template's disks live
    bridge: str = "vmbr0"
    memory_mb: int = HARDWARE.memory_mb
    cores: int = HARDWARE.cores
    uefi: bool = False  # OVMF on q35 with an EFI disk holding Microsoft's keys (Secure Boot); default SeaBIOS
    verify: bool | str = True  # False, True, or a CA bundle path

    @classmethod
    def from_env(cls, node: str | None = None, **overrides: Any) -> ProxmoxSettings:
        """PROXMOX_URL, PROXMOX_TOKEN_ID, PROXMOX_TOKEN_SECRET (and PROXMOX_NODE, PROXMOX_CA_BUNDLE)."""
        missing = [n for n in ("PROXMOX_URL", "PROXMOX_TOKEN_ID", "PROXMOX_TOKEN_SECRET") if not os.environ.get(n)]
        node = node or os.environ.get("PROXMOX_NODE")
        if missing or not node:
            raise CredentialsError(f"Proxmox settings missing: {', '.join(missing or ['--node'])}",
                                   hint="export PROXMOX_URL=https://HOST:8006 PROXMOX_TOKEN_ID=USER@REALM!TOKENID "
                                        "PROXMOX_TOKEN_SECRET=... and pass --node NODE")
        verify: bool | str = os.environ.get("PROXMOX_CA_BUNDLE") or True
        if os.environ.get("PROXMOX_VERIFY_SSL", "1").lower() in ("0", "false", "no"):
            verify = False
        return cls(url=os.environ["PROXMOX_URL"], token_id=os.environ["PROXMOX_TOKEN_ID"],
                   token_secret=os.environ["PROXMOX_TOKEN_SECRET"], node=node, verify=verify,
                   **{k: v for k, v in overrides.items() if v is not None})


class ProxmoxPublisher:
    """A PVE node's templates as a publish target."""

    target = "proxmox"

    def __init__(self, settings: ProxmoxSettings) -> None:
        from proxmoxer import ProxmoxAPI

        self.settings = settings
        host, port = api_host(settings.url)
        user, _, token_name = settings.token_id.partition("!")
        if not token_name:
            raise CredentialsError(f"PROXMOX_TOKEN_ID {settings.token_id!r} is not USER@REALM!TOKENID",
                                   hint="create a token under Datacenter > Permissions > API Tokens")
        self.api = ProxmoxAPI(host, port=port, user=user, token_name=token_name,
                              token_value=settings.token_secret, verify_ssl=settings.verify, timeout=120)
        self.node = self.api.nodes(settings.node)

    # --- Publisher ---------------------------------------------------------------------------------

    def find(self, content_key: str) -> PublishedImage | None:
        boot = "uefi" if self.settings.uefi else "bios"
        for image in self._templates(f"golden-key-{content_key}"):
            if image.content_key == content_key and image.boot == boot:
                return image
        return None

    def upload(self, artifact: Artifact, facts: ImageFacts, progress: UploadProgress) -> PublishedImage:
        if self.settings.uefi:
            facts.require("uefi-secureboot", "Proxmox (OVMF with pre-enrolled keys)")
        self._check_import_support(facts)
        volume = f"{self.settings.storage}:import/{facts.name}.qcow2"
        with cleanup_on_failure(lambda: self._remove_volume(volume), f"upload {volume}"):
            retry(lambda: self._upload_file(artifact, facts, progress), what="the Proxmox upload",
                  transient=_transient(), on_retry=lambda: progress.reset())
            vmid = int(self._call(self.api.cluster.nextid.get))
            with cleanup_on_failure(lambda: self._destroy(vmid), f"VM {vmid}"):
                self._wait(self._call(self.node.qemu.post, **self._vm_config(vmid, facts, volume)),
                           f"creating VM {vmid}")
                upid = self._call(self.node.qemu(vmid).template.post)
                if isinstance(upid, str):  # older releases convert synchronously and return null
                    self._wait(upid, f"converting VM {vmid} to a template")
        self._remove_volume(volume)  # the template has its own copy now
        image = self._describe(vmid, self.settings.node)
        if image is None:
            raise PublishError(f"Proxmox template {vmid} is not visible after its creation",
                               hint="look at the node's task log, then publish again")
        return image

    def verify(self, image: PublishedImage, facts: ImageFacts) -> None:
        config = self._call(self.api.nodes(image.extra["node"]).qemu(image.id).config.get)
        # The bytes were checked by PVE (upload checksum); here: the template is what was registered.
        if str(config.get("template")) != "1" or "scsi0" not in config or \
                _description(config).get("sha256") != facts.sha256:
            raise ChecksumMismatch(f"Proxmox VM {image.id} is not a template of {facts.name} (sha256 or disk differ)",
                                   hint="the VM was removed; publish again")

    def list_images(self, profile: str) -> list[PublishedImage]:
        return [i for i in self._templates(f"golden-profile-{profile}") if i.profile == profile]

    def delete(self, image: PublishedImage) -> None:
        self._destroy(int(image.id), image.extra.get("node"))

    def in_use(self, image: PublishedImage) -> bool:
        """A linked clone's disks name the template's base volume (base-VMID-disk-N)."""
        base = f"base-{image.id}-disk"
        for vm in self._resources()[:MAX_VMS_INSPECTED]:
            if vm.get("template") or str(vm["vmid"]) == image.id:
                continue
            config = self._call(self.api.nodes(vm["node"]).qemu(vm["vmid"]).config.get)
            if any(base in str(value) for value in config.values()):
                return True
        return False

    # --- VMs booted from these templates (rolling `--image` upgrades) -------------------------------

    def find_vm(self, vmid: int) -> tuple[str, dict[str, Any]] | None:
        """(its node, its config) of VM vmid anywhere in the cluster; None when there is none."""
        for vm in self._resources():
            if int(vm["vmid"]) == vmid:
                return str(vm["node"]), self._call(self.api.nodes(vm["node"]).qemu(vmid).config.get)
        return None

    def template_disk(self, image: PublishedImage) -> str:
        """The volume of a published template's boot disk (what import-from copies)."""
        config = self._call(self.api.nodes(image.extra["node"]).qemu(image.id).config.get)
        return str(config[HARDWARE.boot_disk]).split(",")[0]

    def power(self, node: str, vmid: int, action: str) -> None:
        """`shutdown` (ACPI, then stopped after 120 s) or `start` the VM, waiting for the task; a shutdown of a
        stopped VM does nothing."""
        vm = self.api.nodes(node).qemu(vmid)
        if action == "shutdown":
            if self._call(vm.status.current.get).get("status") == "stopped":
                return
            upid = self._call(vm.status.shutdown.post, forceStop=1, timeout=120)
        else:
            upid = self._call(vm.status.start.post)
        self._wait(upid, f"{action} of VM {vmid}", node=node)

    def set_config(self, node: str, vmid: int, what: str, **settings: Any) -> None:
        """POST the VM's config (a stopped VM takes it at once; an import-from runs as a task)."""
        upid = self._call(self.api.nodes(node).qemu(vmid).config.post, **settings)
        if isinstance(upid, str) and upid.startswith("UPID:"):
            self._wait(upid, what, node=node)

    def resize(self, node: str, vmid: int, disk: str, size: str) -> None:
        """Grow a disk to `size` (PVE never shrinks one)."""
        upid = self._call(self.api.nodes(node).qemu(vmid).resize.put, disk=disk, size=size)
        if isinstance(upid, str) and upid.startswith("UPID:"):
            self._wait(upid, f"resizing {disk} of VM {vmid}", node=node)

    # --- PVE specifics -----------------------------------------------------------------------------

    def _check_import_support(self, facts: ImageFacts) -> None:
        version = str(self._call(self.api.version.get).get("version", "0"))
        major_minor = tuple(int(p) for p in (version.split(".") + ["0"])[:2] if p.isdigit())
        if major_minor < IMPORT_MIN_VERSION:
            raise PublishError(
                f"Proxmox VE {version} cannot receive disk images through its API (needs 8.4 for content type import)",
                hint=f"upgrade the node, or copy {facts.name}.qcow2 to it and run as root: qm create VMID "
                     f"--ostype {HARDWARE.ostype} --cpu {HARDWARE.cpu} --scsihw {HARDWARE.scsihw} "
                     f"--{HARDWARE.boot_disk} {self.settings.vm_storage}:0,import-from=/PATH/{facts.name}.qcow2 "
                     f"--{HARDWARE.cloud_init_drive} {self.settings.vm_storage}:cloudinit "
                     f"--agent {int(HARDWARE.agent)} --serial0 {HARDWARE.serial} "
                     f"--ciupgrade {int(HARDWARE.ciupgrade)} && qm template VMID")
        status = self._call(self.node.storage(self.settings.storage).status.get)
        if "import" not in str(status.get("content", "")).split(","):
            raise PublishError(f"Proxmox storage {self.settings.storage} does not hold content type import",
                               hint=f"pvesm set {self.settings.storage} --content {status.get('content')},import "
                                    "(or pass --storage with one that does)")

    def _upload_file(self, artifact: Artifact, facts: ImageFacts, progress: UploadProgress) -> None:
        reader = HashingReader(artifact.qcow2, progress)
        try:
            upid = self._call(self.node.storage(self.settings.storage).upload.post, content="import",
                              filename=reader, checksum=facts.sha256, **{"checksum-algorithm": "sha256"})
        finally:
            reader.close()
        self._wait(upid, "storing the upload", mismatch=True)

    def _vm_config(self, vmid: int, facts: ImageFacts, volume: str) -> dict[str, Any]:
        storage = self.settings.vm_storage
        description = json.dumps({"goldenimage": facts.name, "profile": facts.profile, "content_key": facts.content_key,
                                  "sha256": facts.sha256, "published": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                     time.gmtime())})
        hw = HARDWARE
        config: dict[str, Any] = {
            "vmid": vmid, "name": facts.name, "memory": self.settings.memory_mb, "cores": self.settings.cores,
            "ostype": hw.ostype, "cpu": hw.cpu, "scsihw": hw.scsihw, "vga": hw.vga,
            hw.boot_disk: f"{storage}:0,import-from={volume},discard=on,iothread=1",
            hw.cloud_init_drive: f"{storage}:cloudinit", "boot": f"order={hw.boot_disk}",
            "agent": f"enabled={int(hw.agent)}", "serial0": hw.serial, "ciupgrade": int(hw.ciupgrade),
            "net0": f"{hw.nic_model},bridge={self.settings.bridge}",
            "tags": f"golden;golden-profile-{facts.profile};golden-key-{facts.content_key}",
            "description": description,
        }
        if self.settings.uefi:
            # pre-enrolled-keys=1: the EFI vars carry Microsoft's keys, so Secure Boot is on and Debian's
            # signed shim boots (a 4m EFI disk: the firmware build that can do Secure Boot)
            config.update(bios="ovmf", machine="q35", efidisk0=f"{storage}:1,efitype=4m,pre-enrolled-keys=1")
        return config

    def _templates(self, tag: str) -> list[PublishedImage]:
        found = []
        for vm in self._resources():
            if vm.get("template") and tag in str(vm.get("tags", "")).split(";"):
                image = self._describe(int(vm["vmid"]), vm["node"])
                if image is not None:
                    found.append(image)
        return found

    def _resources(self) -> list[dict[str, Any]]:
        vms: list[dict[str, Any]] = self._call(self.api.cluster.resources.get, type="vm")
        return [vm for vm in vms if vm.get("type", "qemu") == "qemu"]

    def _describe(self, vmid: int, node: str) -> PublishedImage | None:
        config = self._call(self.api.nodes(node).qemu(vmid).config.get)
        meta = _description(config)
        if "content_key" not in meta:
            return None
        return PublishedImage(id=str(vmid), name=str(config.get("name", "")), profile=meta.get("profile", ""),
                              content_key=meta["content_key"], created=meta.get("published", ""),
                              boot="uefi" if config.get("bios") == "ovmf" else "bios", extra={"node": node})

    def _wait(self, upid: str, what: str, mismatch: bool = False, node: str | None = None) -> None:
        tasks = self.api.nodes(node).tasks if node else self.node.tasks

        def finished() -> dict[str, Any] | None:
            status: dict[str, Any] = self._call(tasks(upid).status.get)
            return status if status.get("status") == "stopped" else None

        status = wait_until(finished, what=what, timeout=TASK_TIMEOUT_S, interval=TASK_POLL_S)
        exitstatus = str(status.get("exitstatus", ""))
        if exitstatus != "OK":
            if mismatch and "checksum mismatch" in exitstatus:
                raise ChecksumMismatch(f"Proxmox rejected the upload: {exitstatus}",
                                       hint="the bytes changed on the way; publish again")
            raise PublishError(f"Proxmox task failed while {what}: {exitstatus}",
                               hint=f"see the task log on node {node or self.settings.node}")

    def _remove_volume(self, volume: str) -> None:
        from proxmoxer import ResourceException

        try:
            upid = self.node.storage(self.settings.storage).content(volume).delete()
        except ResourceException as exc:  # never uploaded, or already gone
            log.debug("removing %s: %s", volume, exc)
            return
        if isinstance(upid, str) and upid.startswith("UPID:"):
            self._wait(upid, f"removing {volume}")

    def _destroy(self, vmid: int, node: str | None = None) -> None:
        from proxmoxer import ResourceException

        try:
            upid = self.api.nodes(node or self.settings.node).qemu(vmid).delete(
                purge=1, **{"destroy-unreferenced-disks": 1})
        except ResourceException as exc:
            log.debug("destroying VM %s: %s", vmid, exc)
            return
        if isinstance(upid, str):
            self._wait(upid, f"removing VM {vmid}")
        info(f"removed Proxmox VM {vmid}")

    def _call(self, method: Any, **kwargs: Any) -> Any:
        """A proxmoxer call with authentication errors as one line and a hint (never the secret)."""
        from proxmoxer import AuthenticationError, ResourceException

        try:
            return method(**kwargs)
        except AuthenticationError as exc:
            raise CredentialsError("Proxmox refused the API token", hint=_TOKEN_HINT) from exc
        except ResourceException as exc:
            if exc.status_code == 401:
                raise CredentialsError("Proxmox refused the API token (HTTP 401)", hint=_TOKEN_HINT) from exc
            if exc.status_code == 403:
                # proxmoxer's status_message is the generic "Forbidden"; PVE's reason (the path and the
                # missing privilege) is in content.
                reason = " ".join(str(exc.content or exc.status_message).split())
                raise CredentialsError(f"the Proxmox token may not do this: {reason}", hint=_PERMISSION_HINT) from exc
            raise PublishError(f"Proxmox API error: {exc}", hint="run with --debug for the request") from exc


_TOKEN_HINT = "check PROXMOX_TOKEN_ID (USER@REALM!TOKENID) and PROXMOX_TOKEN_SECRET"
# The upload needs Datastore.AllocateTemplate on the upload storage, removing the uploaded file afterwards
# Datastore.Allocate there, the template's disks Datastore.AllocateSpace on the VM storage (PVEDatastoreAdmin
# has all three; PVEDatastoreUser lacks the first two).
_PERMISSION_HINT = ("grant the token PVEVMAdmin on /vms, and Datastore.AllocateTemplate, Datastore.Allocate and "
                    "Datastore.AllocateSpace on the storages (role PVEDatastoreAdmin on /storage/STORAGE); with "
                    "privilege separation the ACL goes on the token itself")


def api_host(url: str) -> tuple[str, int]:
    """Host and port for proxmoxer from PROXMOX_URL; an IPv6 address keeps its brackets ([::1])."""
    split = urlsplit(url if "://" in url else f"https://{url}")
    host = split.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return host, split.port or 8006


def _description(config: dict[str, Any]) -> dict[str, Any]:
    try:
        data = json.loads(str(config.get("description", "")))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _transient() -> tuple[type[BaseException], ...]:
    import requests

    return (requests.ConnectionError,)
