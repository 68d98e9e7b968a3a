"""OVH dedicated servers (BYOI): the qcow2 goes to S3, the server reinstalls from a presigned URL of it.

Before anything is uploaded, BYOI's limits are checked against the server's hardware: the image must be
smaller than the server's RAM minus 3 GiB (the installer holds it in memory), and BYOI writes one disk
with no software RAID, which a server with several disks and no RAID controller must accept explicitly;
the server's boot mode (legacy BIOS, UEFI, or both) must be one the artifact boots (its manifest's
`firmware`). A UEFI server starts the removable-media loader, Debian's signed shim (efiBootloaderPath).
Then `POST /dedicated/server/{serviceName}/reinstall` with operatingSystem byoi_64, and the task is
followed to its end. Credentials: the ovh library's own (OVH_ENDPOINT, OVH_APPLICATION_KEY,
OVH_APPLICATION_SECRET, OVH_CONSUMER_KEY, or ovh.conf).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..images.store import Artifact
from ..log import info, step
from .base import CredentialsError, ImageFacts, PublishError, PublishResult, publish, wait_until
from .s3 import S3Publisher

BYOI_RAM_RESERVE = 3 * 1024**3
TASK_TIMEOUT_S = 3 * 3600  # a bare-metal reinstall takes tens of minutes
TASK_POLL_S = 30.0
TASK_FAILED = ("cancelled", "customerError", "ovhError")
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
        self.boot_mode = ""  # the server's bootMode, read by check_limits

    def check_limits(self, facts: ImageFacts) -> None:
        """Refuse, before any upload, an image BYOI could not install on this server."""
        hardware = self._call("GET", f"{self.base}/specifications/hardware")
        memory = hardware.get("memorySize") or {}
        ram = int(memory.get("value", 0)) * UNITS.get(str(memory.get("unit", "MB")).upper(), 1024**2)
        if facts.size_bytes >= ram - BYOI_RAM_RESERVE:
            raise PublishError(
                f"{facts.name}.qcow2 ({facts.size_bytes / 1024**3:.1f} GiB) is too large for BYOI on "
                f"{self.settings.server} ({ram / 1024**3:.0f} GiB RAM: images must stay under RAM - 3 GiB)",
                hint="use a server with more RAM, or a smaller image (a compressed qcow2)")
        groups = hardware.get("diskGroups") or []
        disks = sum(int(g.get("numberOfDisks", 0)) for g in groups)
        hardware_raid = any(g.get("raidController") for g in groups)
        if disks > 1 and not hardware_raid and not self.settings.single_disk_ok:
            raise PublishError(
                f"{self.settings.server} has {disks} disks and no RAID controller: BYOI installs on one disk only",
                hint="pass --ovh-single-disk-ok to install anyway (the other disks stay empty), or use BYOLinux")
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

    def reinstall(self, url: str, facts: ImageFacts) -> dict[str, Any]:
        """Reinstall the server from the image URL and follow the task until it is done."""
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
        task = self._call("POST", f"{self.base}/reinstall", {"operatingSystem": "byoi_64",
                                                              "customizations": customizations})
        info(f"reinstall task {task['taskId']} started on {self.settings.server}")

        def finished() -> dict[str, Any] | None:
            current: dict[str, Any] = self._call("GET", f"{self.base}/task/{task['taskId']}")
            if current.get("status") in TASK_FAILED:
                raise PublishError(f"OVH reinstall task {task['taskId']} ended {current['status']}: "
                                   f"{current.get('comment') or 'no comment'}",
                                   hint=f"see the task in the OVHcloud Control Panel for {self.settings.server}")
            return current if current.get("status") == "done" else None

        return wait_until(finished, what=f"OVH reinstall of {self.settings.server}", timeout=TASK_TIMEOUT_S,
                          interval=TASK_POLL_S)

    def _call(self, method: str, path: str, data: dict[str, Any] | None = None) -> Any:
        from ovh import exceptions as ovhx

        try:
            return self.client.call(method, path, data)
        except (ovhx.InvalidKey, ovhx.InvalidCredential, ovhx.NotCredential, ovhx.Forbidden) as exc:
            raise CredentialsError(f"the OVH API refused the credentials ({type(exc).__name__})",
                                   hint="check OVH_APPLICATION_KEY/OVH_APPLICATION_SECRET/OVH_CONSUMER_KEY "
                                        "(or ovh.conf); a consumer key expires or can be revoked") from exc
        except ovhx.NotGrantedCall as exc:
            raise CredentialsError(f"the OVH consumer key may not call {method} {path}",
                                   hint="create a consumer key granting GET and POST on /dedicated/server/*") from exc
        except ovhx.ResourceNotFoundError as exc:
            raise PublishError(f"OVH: {path} not found", hint="check --server (the serviceName)") from exc
        except ovhx.APIError as exc:
            raise PublishError(f"OVH API error on {method} {path}: {exc}", hint="run with --debug") from exc


def deploy(artifact: Artifact, s3: S3Publisher, server: OvhDedicated, keep: int | None = None
           ) -> tuple[PublishResult, dict[str, Any]]:
    """Check BYOI's limits and the server's boot mode, publish to S3 (once per content key), then reinstall
    the server from it."""
    facts = ImageFacts.of(artifact)
    with step(f"Checking BYOI limits of {server.settings.server}"):
        server.check_limits(facts)
    result = publish(s3, artifact, keep)
    url = s3.presign(result.image, server.settings.url_ttl_s)
    with step(f"Reinstalling {server.settings.server} with {facts.name}"):
        task = server.reinstall(url, facts)
    return result, task
