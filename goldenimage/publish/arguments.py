"""`golden publish`'s arguments and artifact, checked before any connection: what is refused here never
reaches botocore, proxmoxer or OVH, and no message repeats a credential."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from urllib.parse import urlsplit

from ..bake.manifest import StoredManifest
from ..bake.store import Artifact
from ..core.errors import InputError
from ..core.fs import sha256_file
from ..core.inert import CONTROL, excerpt, redact_urls
from ..core.yamlfile import read_input_text

#: SigV4 presigned URLs live at most 7 days (AWS's limit; S3-compatible services follow it).
PRESIGN_MAX_S = 7 * 24 * 3600
#: A region is one DNS label of lower-case letters, digits and '-' (us-east-1, gra, eu-west-par, fr-par).
REGION = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
#: S3 bucket names (the legacy rules S3-compatible services still take: upper case and '_' too).
BUCKET = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,253}[A-Za-z0-9])?")
#: Proxmox VE's own formats (pve-common PVE::JSONSchema): 'pve-node' (pve_verify_node_name), 'pve-storage-id'
#: (parse_storage_id), and the NIC's bridge (qemu-server/pve-container: [-_.\w\d]+; a Linux interface name
#: has at most 15 characters). A ',' or '=' would add options to the VM's net0 or disk property strings.
PVE_NODE = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?")
PVE_STORAGE_ID = re.compile(r"[a-zA-Z][a-zA-Z0-9._-]*[a-zA-Z0-9]")
PVE_BRIDGE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
#: The qcow2 header's magic: 'Q', 'F', 'I', 0xfb (QEMU's docs/interop/qcow2.txt).
QCOW2_MAGIC = b"QFI\xfb"
MAX_SIDE_FILE = 1024 * 1024  # a .sha256 or manifest.json


def check_endpoint_url(url: str | None, option: str = "--endpoint-url") -> str | None:
    """An http(s) URL with a host and nothing that carries credentials; InputError (password never shown)."""
    if url is None:
        return None
    shown = excerpt(redact_urls(url))
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InputError(f"{option} {shown}: not a URL", hint="write https://HOST[:PORT]") from None
    if CONTROL.search(url) or any(c.isspace() for c in url):
        raise InputError(f"{option} {shown}: not one URL (space or control character)")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"{option} {shown}: not an http(s) URL with a host", hint="write https://HOST[:PORT]")
    if "@" in parts.netloc:
        raise InputError(f"{option} {shown}: credentials in the URL are refused (they would be logged)",
                         hint="give them through the AWS chain: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if port == 0:
        raise InputError(f"{option} {shown}: port 0")
    if parts.query or parts.fragment:
        raise InputError(f"{option} {shown}: an endpoint has no query or fragment")
    return url


def check_region(region: str | None) -> str | None:
    if region is not None and not REGION.fullmatch(region):
        raise InputError(f"--region {excerpt(region)}: not a region name (lower-case letters, digits and '-', "
                         "such as eu-west-3 or gra)")
    return region


def check_presign(seconds: int | None) -> int | None:
    if seconds is not None and not 1 <= seconds <= PRESIGN_MAX_S:
        raise InputError(f"--presign {seconds}: must be 1 to {PRESIGN_MAX_S} seconds (SigV4 allows 7 days at most)")
    return seconds


def check_bucket(bucket: str, option: str = "--bucket") -> str:
    if not BUCKET.fullmatch(bucket) or ".." in bucket:
        raise InputError(f"{option} {excerpt(bucket)}: not a bucket name (1-255 letters, digits, '.', '_', '-')")
    return bucket


def check_one_line(value: str | None, option: str) -> str | None:
    if value is not None and (CONTROL.search(value) or len(value) > 1024):
        raise InputError(f"{option} {excerpt(value)}: must be one line without control characters")
    return value


def check_proxmox_names(node: str | None, storage: str | None, vm_storage: str | None,
                        bridge: str | None) -> None:
    """Node, storage and bridge names by Proxmox VE's own rules (a name with ',' or '=' would add options)."""
    checks = (("--node", node, PVE_NODE, "node name (letters, digits, '-')"),
              ("--storage", storage, PVE_STORAGE_ID, "storage ID (a letter, then letters, digits, '.', '_', '-')"),
              ("--vm-storage", vm_storage, PVE_STORAGE_ID,
               "storage ID (a letter, then letters, digits, '.', '_', '-')"),
              ("--bridge", bridge, PVE_BRIDGE, "bridge name such as vmbr0 (letters, digits, '.', '_', '-'; "
                                               "at most 15)"))
    for option, value, pattern, what in checks:
        if value is not None and not pattern.fullmatch(value):
            raise InputError(f"{option} {excerpt(value)}: not a Proxmox {what}")


def check_artifact(artifact: Artifact) -> None:
    """The artifact is what its manifest says: a regular qcow2 file (not a link), by its header, whose SHA-256
    is the one its .sha256 file and its manifest record. Nothing else is ever read for an upload."""
    for path in (artifact.qcow2, artifact.sha256_file, artifact.manifest_file):
        try:
            st = os.lstat(path)
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror}") from None
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path}: not a regular file (a link or a device is never published)",
                             hint="publish the artifact golden build wrote into images/")
    with artifact.qcow2.open("rb") as f:
        magic = f.read(len(QCOW2_MAGIC))
    if magic != QCOW2_MAGIC:
        raise InputError(f"{artifact.qcow2}: not a qcow2 image (its header does not start with QFI\\xfb)")
    recorded = read_input_text(artifact.sha256_file, MAX_SIDE_FILE).split()
    from json import loads

    try:
        image = StoredManifest.from_json(loads(read_input_text(artifact.manifest_file, MAX_SIDE_FILE))).image
    except (ValueError, TypeError):
        image = None
    if image is None:
        raise InputError(f"{artifact.manifest_file}: not an artifact manifest (image.sha256 missing)")
    manifest_sha = image.sha256
    actual = sha256_file(artifact.qcow2)
    if not recorded or recorded[0] != actual or manifest_sha != actual:
        raise InputError(f"{artifact.qcow2}: its SHA-256 does not match its .sha256 file and manifest",
                         hint="the image changed after it was built: build it again")


def checked_path(path: Path | None, option: str, limit: int = 64 * 1024) -> str | None:
    """The text of a small argument file (a key, user-data), read by the bounded reader."""
    if path is None:
        return None
    return read_input_text(path, limit, f"{option} {excerpt(str(path))}")
