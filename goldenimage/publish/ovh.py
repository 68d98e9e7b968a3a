"""OVH dedicated servers (BYOI): the qcow2 goes to S3, the server reinstalls from a presigned URL of it.

Before anything is uploaded, BYOI's limits are checked against the server's hardware: the image must be
smaller than the server's RAM minus 3 GiB (the installer holds it in memory), and BYOI writes the first
disk of the target disk group with no software RAID, which a group of several disks without a RAID
controller must accept explicitly; that disk must hold the image's disk. The server's boot mode (legacy BIOS,
UEFI, or both) must be one the artifact boots (its manifest's `firmware`); a UEFI server starts the
removable-media loader, Debian's signed shim (efiBootloaderPath). Then
`POST /dedicated/server/{serviceName}/reinstall` with operatingSystem byoi_64 and the disk group named in
`storage`, and the task is followed to its end; the API's transient 404/5xx answers while it runs are
retried for a few minutes, as OVH's own Terraform provider does. Credentials: the ovh library's own
(OVH_ENDPOINT, OVH_APPLICATION_KEY, OVH_APPLICATION_SECRET, OVH_CONSUMER_KEY, or ovh.conf).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bake.store import Artifact, artifact_kind
from ..core.errors import InputError
from ..core.log import info, step
from .publisher import CredentialsError, ImageFacts, PublishError, PublishResult, publish, wait_until
from .s3 import S3Publisher

BYOI_RAM_RESERVE = 3 * 1024**3
TASK_TIMEOUT_S = 3 * 3600  # a bare-metal reinstall takes tens of minutes
TASK_POLL_S = 30.0
TASK_FAILED = ("cancelled", "customerError", "ovhError")
#: The task API answers 404 or 5xx now and then while a task runs (OVH's Terraform provider retries those for
#: 5 minutes): a streak of such answers is waited out this long before the wait gives up.
TASK_TRANSIENT_S = 300.0
TRANSIENT_STATUSES = (404, 500, 502, 503, 504)
UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
#: dedicated.server.BootModeEnum (specifications/hardware's bootMode): the firmware each mode can start.
BOOT_MODES = {"legacy": ("bios",), "uefi": ("uefi",), "uefi-legacy": ("uefi", "bios")}


@dataclass(frozen=True)
class OvhSettings:
    server: str  # the serviceName, e.g. ns1234567.ip-1-2-3.eu
    user_data: Path | None = None  # the host's first-boot user-data (golden cluster render writes it)
    hostname: str | None = None
    ssh_key: str | None = None  # a public key line
    #: shim, which starts the signed GRUB beside it (disk.EFI_FILES): the path that boots with Secure Boot too
    efi_bootloader_path: str = "\\efi\\boot\\bootx64.efi"
    url_ttl_s: int = 6 * 3600  # the presigned URL must outlive the download, not much more
    single_disk_ok: bool = False
    disk_group_id: int | None = None  # None: the first disk group the server lists


class _TransientAnswer(Exception):
    """The OVH API answered with an error that a later poll may not see (404, 5xx, a broken connection)."""


def ovh_client(client: Any = None) -> Any:
    """An ovh.Client from the standard places; an OVH_ENDPOINT given as a URL (a proxy) is accepted too."""
    import os

    import ovh

    if client is not None:
        return client
    endpoint = os.environ.get("OVH_ENDPOINT", "")
    if endpoint.startswith(("http://", "https://")):
        # The library only knows its named regions: register the URL under its own name.
        ovh.client.ENDPOINTS[endpoint] = endpoint.rstrip("/")
    try:
        return ovh.Client()
    except (ovh.exceptions.InvalidRegion, ovh.exceptions.InvalidConfiguration) as exc:
        raise CredentialsError(f"no usable OVH API configuration: {exc}",
                               hint="set OVH_ENDPOINT (ovh-eu, ovh-ca, ovh-us), OVH_APPLICATION_KEY, "
                                    "OVH_APPLICATION_SECRET and OVH_CONSUMER_KEY, or write ovh.conf") from exc


class OvhDedicated:
    """One dedicated server to reinstall with a published image."""

    def __init__(self, settings: OvhSettings, client: Any = None) -> None:
        self.settings = settings
        self.client = ovh_client(client)
        self.base = f"/dedicated/server/{settings.server}"
        self.disk_group_id: int | None = None  # set from the hardware, by check_limits or reinstall_body
        self.boot_mode = ""  # the server's bootMode, read by check_limits

    def check_limits(self, facts: ImageFacts) -> None:
        """Refuse, before any upload, an image BYOI could not install on this server."""
        hardware = self._call("GET", f"{self.base}/specifications/hardware")
        ram = _bytes(hardware.get("memorySize"), "MB")
        if facts.size_bytes >= ram - BYOI_RAM_RESERVE:
            raise PublishError(
                f"{facts.name}.qcow2 ({facts.size_bytes / 1024**3:.1f} GiB) is too large for BYOI on "
                f"{self.settings.server} ({ram / 1024**3:.0f} GiB RAM: images must stay under RAM - 3 GiB)",
                hint="use a server with more RAM, or a smaller image (a compressed qcow2)")
        group = self._disk_group(hardware)
        disks = int(group.get("numberOfDisks", 0))
        where = f"disk group {group.get('diskGroupId')} of {self.settings.server}"
        if disks > 1 and not group.get("raidController") and not self.settings.single_disk_ok:
            raise PublishError(
                f"{where} has {disks} disks and no RAID controller: BYOI installs on its first disk only",
                hint="pass --ovh-single-disk-ok to install anyway (the other disks stay empty), or use BYOLinux")
        disk = _bytes(group.get("diskSize"), "GB")
        if disk and facts.disk_gib * 1024**3 > disk:
            raise PublishError(f"{facts.name} has a {facts.disk_gib} GiB disk; the disks of {where} hold "
                               f"{disk / 1024**3:.0f} GiB", hint="pick another disk group (--ovh-disk-group ID)")
        mode = str(hardware.get("bootMode") or "")
        if mode not in BOOT_MODES:
            raise PublishError(f"{self.settings.server} reports an unknown boot mode {mode!r}",
                               hint=f"expected one of {', '.join(BOOT_MODES)} in its specifications/hardware")
        if not any(facts.boots(f) for f in BOOT_MODES[mode]):
            raise PublishError(
                f"{self.settings.server} boots {mode} and {facts.name} boots {' and '.join(facts.firmware)} only: "
                "it would not start after the reinstall",
                hint="rebuild the image on a base made by this version of goldenimage (BIOS + UEFI), or change "
                     "the server's boot mode")
        self.boot_mode = mode

    def _disk_group(self, hardware: dict[str, Any]) -> dict[str, Any]:
        """The disk group BYOI writes to: the one asked for, else the first the server lists."""
        groups: list[dict[str, Any]] = hardware.get("diskGroups") or []
        if self.settings.disk_group_id is None:
            if not groups:
                raise PublishError(f"{self.settings.server} reports no disk group", hint="check the server in the "
                                   "OVHcloud Control Panel; BYOI needs a disk")
            self.disk_group_id = int(groups[0].get("diskGroupId", 0))
            return groups[0]
        for group in groups:
            if int(group.get("diskGroupId", -1)) == self.settings.disk_group_id:
                self.disk_group_id = self.settings.disk_group_id
                return group
        known = ", ".join(str(g.get("diskGroupId")) for g in groups) or "none"
        raise PublishError(f"{self.settings.server} has no disk group {self.settings.disk_group_id} (it has: {known})",
                           hint="pass one of these ids to --ovh-disk-group")

    def reinstall_body(self, url: str, facts: ImageFacts) -> dict[str, Any]:
        """The documented BYOI reinstall request: the image, its checksum, the config drive, the disk group."""
        customizations: dict[str, Any] = {
            "imageURL": url, "imageType": "qcow2", "imageCheckSum": facts.sha256, "imageCheckSumType": "sha256",
        }
        if facts.boots("uefi") and self.boot_mode != "legacy":
            customizations["efiBootloaderPath"] = self.settings.efi_bootloader_path
        if self.settings.user_data:
            # OVH recommends base64 for configDriveUserData: no escaping of the YAML.
            customizations["configDriveUserData"] = base64.b64encode(self.settings.user_data.read_bytes()).decode()
        if self.settings.hostname:
            customizations["hostname"] = self.settings.hostname
        if self.settings.ssh_key:
            customizations["sshKey"] = self.settings.ssh_key.strip()
        body: dict[str, Any] = {"operatingSystem": "byoi_64", "customizations": customizations}
        if self.disk_group_id is None:
            self._disk_group(self._call("GET", f"{self.base}/specifications/hardware"))
        body["storage"] = [{"diskGroupId": self.disk_group_id}]
        return body

    def reinstall(self, url: str, facts: ImageFacts) -> dict[str, Any]:
        """Reinstall the server from the image URL and follow the task until it is done."""
        task = self._call("POST", f"{self.base}/reinstall", self.reinstall_body(url, facts))
        info(f"reinstall task {task['taskId']} started on {self.settings.server}")
        path = f"{self.base}/task/{task['taskId']}"
        failing_since: float | None = None

        def finished() -> dict[str, Any] | None:
            nonlocal failing_since
            try:
                current: dict[str, Any] = self._call("GET", path, transient_ok=True)
            except _TransientAnswer as exc:
                now = time.monotonic()
                failing_since = failing_since if failing_since is not None else now
                if now - failing_since >= TASK_TRANSIENT_S:
                    raise PublishError(f"the OVH API kept failing on GET {path} for {TASK_TRANSIENT_S / 60:.0f} min "
                                       f"({exc})", hint=f"the reinstall may still run: see the task in the "
                                       f"OVHcloud Control Panel for {self.settings.server}") from exc
                info(f"OVH answered {exc} while following task {task['taskId']}: polling on")
                return None
            failing_since = None
            if current.get("status") in TASK_FAILED:
                raise PublishError(f"OVH reinstall task {task['taskId']} ended {current['status']}: "
                                   f"{_flat(current.get('comment') or 'no comment')}",
                                   hint=f"see the task in the OVHcloud Control Panel for {self.settings.server}")
            return current if current.get("status") == "done" else None

        return wait_until(finished, what=f"OVH reinstall of {self.settings.server}", timeout=TASK_TIMEOUT_S,
                          interval=TASK_POLL_S)

    def _call(self, method: str, path: str, data: dict[str, Any] | None = None, transient_ok: bool = False) -> Any:
        """An API call with its errors as one line; with `transient_ok`, 404/5xx and network breaks raise
        _TransientAnswer for the caller to poll again."""
        from ovh import exceptions as ovhx

        try:
            return self.client.call(method, path, data)
        except (ovhx.HTTPError, ovhx.NetworkError, ovhx.InvalidResponse) as exc:
            if transient_ok:
                raise _TransientAnswer(type(exc).__name__) from exc
            raise PublishError(f"OVH API unreachable on {method} {path}: {_flat(str(exc))}",
                               hint="check the network path to the OVH API, then publish again") from exc
        except ovhx.APIError as exc:
            status = getattr(exc.response, "status_code", None)
            if transient_ok and status in TRANSIENT_STATUSES:
                raise _TransientAnswer(f"HTTP {status}") from exc
            raise self._error(exc, method, path) from exc

    def _error(self, exc: Any, method: str, path: str) -> PublishError:
        """One line and a hint for an OVH API error answer."""
        from ovh import exceptions as ovhx

        if isinstance(exc, (ovhx.InvalidKey, ovhx.InvalidCredential, ovhx.NotCredential, ovhx.Forbidden)):
            return CredentialsError(f"the OVH API refused the credentials ({type(exc).__name__})",
                                    hint="check OVH_APPLICATION_KEY/OVH_APPLICATION_SECRET/OVH_CONSUMER_KEY "
                                         "(or ovh.conf); a consumer key expires or can be revoked")
        if isinstance(exc, ovhx.NotGrantedCall):
            return CredentialsError(f"the OVH consumer key may not call {method} {path}",
                                    hint="create a consumer key granting GET and POST on /dedicated/server/*")
        if isinstance(exc, ovhx.ResourceNotFoundError):
            return PublishError(f"OVH: {path} not found", hint="check --server (the serviceName)")
        # str() of an APIError adds the query id on a second line: keep one line, the id included.
        return PublishError(f"OVH API error on {method} {path}: {_flat(str(exc))}", hint="run with --debug")


def _bytes(size: Any, default_unit: str) -> int:
    """An OVH size ({"unit": "GB", "value": 960}) in bytes; 0 when absent."""
    size = size or {}
    return int(size.get("value", 0)) * UNITS.get(str(size.get("unit", default_unit)).upper(), UNITS[default_unit])


def _flat(text: str) -> str:
    return " ".join(str(text).split())


def require_metal(artifact: Artifact) -> None:
    """A dedicated server is real hardware: an image for virtual machines (the cloud kernel: no AHCI, RAID HBA
    or server NIC driver) would find neither its disk nor its network. InputError in one line."""
    kind = artifact_kind(artifact)
    if kind != "metal":
        raise InputError(f"{artifact.qcow2.name} is a {kind} image: its kernel has no AHCI, RAID or server NIC "
                         "drivers, so a dedicated server would find neither its disk nor its network",
                         hint="bake one for metal: golden build PROFILE --kind metal (make image ARGS='--kind metal')")


def deploy(artifact: Artifact, s3: S3Publisher, server: OvhDedicated, keep: int | None = None
           ) -> tuple[PublishResult, dict[str, Any]]:
    """Check the image is for metal, BYOI's limits and the server's boot mode, publish to S3 (once per
    content key), then reinstall the server from it."""
    require_metal(artifact)
    facts = ImageFacts.of(artifact)
    with step(f"Checking BYOI limits of {server.settings.server}"):
        server.check_limits(facts)
    result = publish(s3, artifact, keep)
    url = s3.presign(result.image, server.settings.url_ttl_s)
    with step(f"Reinstalling {server.settings.server} with {facts.name}"):
        task = server.reinstall(url, facts)
    return result, task
