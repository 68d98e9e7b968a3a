"""What verify and audit share to boot an artifact as a throw-away guest: the guest user
and the first-boot seed that gives it our SSH key and standalone role settings."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from ..core.ssh_keys import SSHKey
from ..render.seed import write_seed_iso
from ..render.userdata import render_host_user_data, render_meta_data

GUEST_USER = "debian"  # the cloud image's default user, given our key by the seed


#: The server_id a lone sql-primary clone gets from golden verify (test_sql_primary reads it from host.json).
VERIFY_SERVER_ID = 7


def standalone_settings(roles: list[str]) -> dict[str, Any]:
    """First-boot settings for a lone verify VM: the role runs standalone on the QEMU user network."""
    if "sql-replica" in roles:
        # a replica alone has no primary to follow: boot it without cluster settings (first boot then
        # leaves replication unconfigured); the cluster tests prove replication
        return {}
    settings: dict[str, Any] = {"address": "10.0.2.15", "network": "10.0.2.0/24"}
    if "sql-primary" in roles:
        # not 1, MariaDB's default: test_sql_primary can then tell first boot's server_id from one the bake left
        settings["mariadb"] = {"server_id": VERIFY_SERVER_ID, "replication_password": uuid.uuid4().hex}
    return settings


def make_seed(directory: Path, name: str, key: SSHKey, roles: list[str]) -> Path:
    user_data = render_host_user_data(name, standalone_settings(roles), ssh_authorized_keys=[key.public])
    meta = render_meta_data(f"verify-{uuid.uuid4().hex[:12]}", name)
    return write_seed_iso(directory / f"{name}-seed.iso", user_data, meta)
