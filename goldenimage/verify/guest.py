"""What verify and audit share to boot an artifact as a throw-away guest: finding the artifact, the guest user
and the first-boot seed that gives it our SSH key and standalone role settings."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from ..bake import store
from ..core.errors import InputError
from ..model.releases import matrix
from ..render.seed import write_seed_iso
from ..render.userdata import render_host_user_data, render_meta_data
from .vm import SSHKey

GUEST_USER = "debian"  # the cloud image's default user, given our key by the seed


def find_artifact(target: str, debian: int | str | None = None) -> store.Artifact:
    """An artifact by path (qcow2 or manifest) or the newest of a profile."""
    if target.endswith((".qcow2", ".json")) or "/" in target:
        artifact = store.from_path(Path(target))
        if artifact is None:
            raise InputError(f"{target}: not a complete goldenimage artifact (qcow2 + .sha256 + manifest.json)")
        return artifact
    release = matrix().get(debian)
    artifact = store.latest(target, release.number)
    if artifact is None:
        raise InputError(f"no artifact of {target} for Debian {release.number} in images/",
                         hint=f"bake it first: make image PROFILE={target} DEBIAN={release.number}")
    return artifact


def host_settings(roles: list[str]) -> dict[str, Any]:
    """First-boot settings for a lone verify VM: the role runs standalone on the QEMU user network."""
    if "sql-replica" in roles:
        # a replica alone has no primary to follow: boot it without cluster settings (first boot then
        # leaves replication unconfigured); the cluster tests prove replication
        return {}
    settings: dict[str, Any] = {"address": "10.0.2.15", "network": "10.0.2.0/24"}
    if "sql-primary" in roles:
        settings["mariadb"] = {"server_id": 1, "replication_password": uuid.uuid4().hex}
    return settings


def make_seed(directory: Path, name: str, key: SSHKey, roles: list[str]) -> Path:
    user_data = render_host_user_data(name, host_settings(roles), ssh_authorized_keys=[key.public])
    meta = render_meta_data(f"verify-{uuid.uuid4().hex[:12]}", name)
    return write_seed_iso(directory / f"{name}-seed.iso", user_data, meta)
