"""OpenStack target (OVH Public Cloud and any Glance v2): openstacksdk with clouds.yaml or OS_* variables.

An image carries the tags `golden`, `golden-profile-PROFILE` and `golden-key-KEY`, the properties Nova
reads to boot it well (disk bus, NIC model, guest agent, firmware) and the artifact's sha256. The upload
is a plain PUT of the qcow2 (no import task): Glance's `checksum` (MD5) and `os_hash_value` come back and
are compared with what was sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..bake.store import Artifact
from ..core.log import log
from .publisher import (
    ChecksumMismatch,
    CredentialsError,
    HashingReader,
    ImageFacts,
    PublishedImage,
    PublishError,
    QuotaError,
    UploadProgress,
    cleanup_on_failure,
    retry,
    wait_until,
)

ACTIVE_TIMEOUT_S = 1800  # Glance may post-process a large image before it turns active


@dataclass(frozen=True)
class OpenStackSettings:
    cloud: str | None = None  # a clouds.yaml entry; None: OS_CLOUD, or the OS_* variables
    min_ram_mb: int = 512
    visibility: str = "private"
    uefi: bool = False  # boot with UEFI (hw_firmware_type=uefi on q35); the default is BIOS


def tags_of(facts: ImageFacts) -> list[str]:
    return ["golden", f"golden-profile-{facts.profile}", f"golden-key-{facts.content_key}"]


def properties_of(facts: ImageFacts, uefi: bool = False) -> dict[str, str]:
    """Glance properties: how Nova should attach the disk and NIC, which firmware boots it (UEFI on q35
    when asked: libvirt's UEFI firmware needs it with Secure Boot), and where the image came from."""
    props = {
        "hw_disk_bus": "scsi",
        "hw_scsi_model": "virtio-scsi",
        "hw_vif_model": "virtio",
        "hw_qemu_guest_agent": "yes",
        "os_distro": "debian",
        "os_version": str(facts.debian),
        "os_type": "linux",
        "golden_profile": facts.profile,
        "golden_roles": ",".join(facts.roles),
        "golden_content_key": facts.content_key,
        "golden_sha256": facts.sha256,
    }
    if uefi:
        props["hw_firmware_type"] = "uefi"
        props["hw_machine_type"] = "q35"
    return props


def _sdk_errors(action: str) -> Any:
    """Translate openstacksdk/keystoneauth exceptions into one line and a hint."""
    from contextlib import contextmanager

    from keystoneauth1 import exceptions as ks
    from openstack import exceptions as sdk

    @contextmanager
    def translating() -> Any:
        try:
            yield
        except ks.Unauthorized as exc:
            raise CredentialsError(f"OpenStack refused the credentials while {action}",
                                   hint="check clouds.yaml (or OS_USERNAME/OS_PASSWORD/OS_PROJECT_NAME) "
                                        "and OS_CLOUD") from exc
        except sdk.HttpException as exc:
            if exc.status_code == 413:
                raise QuotaError(f"Glance refused the image while {action}: quota exceeded (HTTP 413)",
                                 hint="delete older images (--keep N) or ask for a larger image quota") from exc
            if exc.status_code in (401, 403):
                raise CredentialsError(f"OpenStack denied access while {action} (HTTP {exc.status_code})",
                                       hint="check the project and role in clouds.yaml") from exc
            raise PublishError(f"OpenStack error while {action}: HTTP {exc.status_code}",
                               hint="run with --debug for the response") from exc
        except sdk.ConfigException as exc:
            raise CredentialsError(f"no usable OpenStack configuration: {exc}",
                                   hint="set OS_CLOUD with a clouds.yaml entry, or the OS_* variables") from exc

    return translating()


class OpenStackPublisher:
    """Glance as a publish target; Nova tells which images servers still boot from."""

    target = "openstack"

    def __init__(self, settings: OpenStackSettings, connection: Any = None) -> None:
        self.settings = settings
        self._conn = connection

    @property
    def conn(self) -> Any:
        if self._conn is None:
            import openstack

            with _sdk_errors("reading the cloud configuration"):
                self._conn = openstack.connect(cloud=self.settings.cloud)
        return self._conn

    def find(self, content_key: str) -> PublishedImage | None:
        with _sdk_errors("looking for the image"):
            for image in self.conn.image.images(tag=f"golden-key-{content_key}"):
                published = self._published(image)
                if image.status == "active" and published.boot == self.boot:
                    return published
        return None

    @property
    def boot(self) -> str:
        """The firmware Nova boots this publisher's images with."""
        return "uefi" if self.settings.uefi else "bios"

    def upload(self, artifact: Artifact, facts: ImageFacts, progress: UploadProgress) -> PublishedImage:
        if self.settings.uefi:
            facts.require("uefi", "OpenStack (hw_firmware_type=uefi)")
        with _sdk_errors("creating the image"):
            image = self.conn.image.create_image(
                facts.name, disk_format="qcow2", container_format="bare", tags=tags_of(facts),
                allow_duplicates=True, sha256=facts.sha256, visibility=self.settings.visibility,
                min_disk=facts.disk_gib, min_ram=self.settings.min_ram_mb, **properties_of(facts, self.settings.uefi))
        with cleanup_on_failure(lambda: self.conn.image.delete_image(image.id, ignore_missing=True),
                                f"Glance image {image.id}"):
            reader = retry(lambda: self._put(image, artifact, facts, progress), what="the Glance upload",
                           transient=_transient(), on_retry=lambda: progress.reset())
            with _sdk_errors("waiting for the image"):
                image = wait_until(lambda: self._active(image.id), what=f"Glance image {image.id}",
                                   timeout=ACTIVE_TIMEOUT_S, interval=2)
            published = self._published(image)
            sent = {"md5": reader.hexdigest("md5"), "sha256": reader.hexdigest("sha256"),
                    "sha512": reader.hexdigest("sha512")}
            return PublishedImage(**{**published.__dict__, "extra": {**published.extra, "sent": sent}})

    def verify(self, image: PublishedImage, facts: ImageFacts) -> None:
        sent = image.extra.get("sent", {})
        if sent.get("sha256") and sent["sha256"] != facts.sha256:
            raise ChecksumMismatch(f"{facts.name}.qcow2 changed while it was uploaded (sha256 differs)",
                                   hint="the Glance image was removed; rebuild the artifact and publish again")
        checksum, algo, value = image.extra.get("checksum"), image.extra.get("os_hash_algo"), \
            image.extra.get("os_hash_value")
        problems = []
        if sent.get("md5") and checksum and checksum != sent["md5"]:
            problems.append(f"checksum {checksum} != {sent['md5']}")
        if algo in sent and value != sent[algo]:
            problems.append(f"os_hash_value ({algo}) differs")
        if image.extra.get("golden_sha256") != facts.sha256:
            problems.append("golden_sha256 property differs")
        if problems:
            raise ChecksumMismatch(f"Glance image {image.id}: checksum mismatch ({'; '.join(problems)})",
                                   hint="the image was removed; publish again")

    def list_images(self, profile: str) -> list[PublishedImage]:
        with _sdk_errors("listing images"):
            return [self._published(i) for i in self.conn.image.images(tag=f"golden-profile-{profile}")]

    def delete(self, image: PublishedImage) -> None:
        with _sdk_errors(f"deleting image {image.id}"):
            self.conn.image.delete_image(image.id, ignore_missing=True)

    def in_use(self, image: PublishedImage) -> bool:
        with _sdk_errors("listing servers"):
            # all_projects would need admin; a project's own servers are the ones its images serve.
            return any(True for _ in self.conn.compute.servers(details=True, image=image.id))

    # --- servers booted from these images (rolling `--image` upgrades) --------------------------------

    def server_image(self, server_id: str) -> tuple[str, str] | None:
        """(the image id the server boots, that image's content key or "") ; None when the project has no such
        server."""
        from openstack import exceptions as sdk

        with _sdk_errors(f"reading server {server_id}"):
            try:
                server = self.conn.compute.get_server(server_id)
            except sdk.NotFoundException:
                return None
            image_id = str(getattr(server.image, "id", None) or "")
            if not image_id:
                return image_id, ""  # booted from a volume: not an image this tool replaces
            try:
                image = self.conn.image.get_image(image_id)
            except sdk.NotFoundException:  # deleted since: the server still runs its copy
                return image_id, ""
            return image_id, str(dict(image.properties or {}).get("golden_content_key") or "")

    def rebuild(self, server_id: str, image_id: str, timeout: float, interval: float) -> None:
        """Nova's rebuild: the server boots a fresh disk made from image_id, keeping its id, ports, addresses,
        flavor, metadata and user data; returns once it is ACTIVE again (PublishError on ERROR or a timeout)."""
        from openstack import exceptions as sdk

        with _sdk_errors(f"rebuilding server {server_id}"):
            server = self.conn.compute.rebuild_server(server_id, image_id)
            try:
                self.conn.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"], interval=interval,
                                                  wait=timeout)
            except sdk.ResourceFailure as exc:
                raise PublishError(f"server {server_id} went ERROR rebuilding on image {image_id}",
                                   hint="openstack server show shows its fault") from exc
            except sdk.ResourceTimeout as exc:
                raise PublishError(f"server {server_id} not ACTIVE {timeout:.0f}s after its rebuild on {image_id}",
                                   hint="openstack server show shows where it is") from exc

    def _put(self, image: Any, artifact: Artifact, facts: ImageFacts, progress: UploadProgress) -> HashingReader:
        from openstack import exceptions as sdk

        reader = HashingReader(artifact.qcow2, progress, ("md5", "sha256", "sha512"))
        try:
            with _sdk_errors("uploading the image"):
                response = image.upload(self.conn.image, data=reader, size=facts.size_bytes)
                sdk.raise_from_response(response)
        finally:
            reader.close()
        return reader

    def _active(self, image_id: str) -> Any:
        image = self.conn.image.get_image(image_id)
        if image.status in ("killed", "deleted", "deactivated"):
            raise PublishError(f"Glance image {image_id} went {image.status} after its upload",
                               hint="look at the Glance logs or the cloud status page, then publish again")
        return image if image.status == "active" else None

    def _published(self, image: Any) -> PublishedImage:
        props = dict(image.properties or {})
        key = props.get("golden_content_key") or next(
            (t.removeprefix("golden-key-") for t in image.tags or [] if t.startswith("golden-key-")), "")
        log.debug("glance image %s: status %s, checksum %s", image.id, image.status, image.checksum)
        return PublishedImage(id=image.id, name=image.name, profile=props.get("golden_profile", ""), content_key=key,
                              created=image.created_at or "",
                              boot="uefi" if props.get("hw_firmware_type") == "uefi" else "bios",
                              extra={"checksum": image.checksum, "os_hash_algo": image.hash_algo,
                                     "os_hash_value": image.hash_value, "golden_sha256": props.get("golden_sha256")})


def _transient() -> tuple[type[BaseException], ...]:
    import requests
    from keystoneauth1 import exceptions as ks

    return ks.ConnectFailure, ks.ConnectionError, requests.ConnectionError
