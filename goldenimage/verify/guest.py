"""What verify and audit share to boot an artifact as a throw-away guest: the guest user
and the first-boot seed that gives it our SSH key and standalone role settings."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.ssh_keys import SSHKey
from .datasources import CloneData, clone_data
from .vm import VM

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


def boot_clone(image: Path, directory: Path, name: str, key: SSHKey, roles: list[str], status_ok: tuple[int, ...],
               *, firmware: str = "bios", workdir: Path | None = None, extra_args: Sequence[str] = (),
               ssh_timeout: float = 600, cloud_init_timeout: float = 900, started: list[VM] | None = None,
               data: CloneData | None = None, hardware: str = "virt", cpus: int = 2) -> VM:
    """Boot a throw-away clone of an artifact with fresh `data` (a datasource's; default the project's seed)
    on `hardware` and wait for SSH and cloud-init; the VM is running when this returns (the caller stops it)
    and stopped when the wait fails. `started` gets the VM before QEMU starts, so that an interrupt in
    another thread can stop it while it boots."""
    if data is None:
        data = clone_data("nocloud", directory, name, key, standalone_settings(roles))
    vm = VM(image, seed=data.seed, key=key, user=GUEST_USER, status_wait_ok=status_ok, name=name,
            workdir=workdir or directory / name, firmware=firmware, extra_args=[*data.extra_args, *extra_args],
            mac=data.mac, netdev_options=data.netdev_options, hardware=hardware, cpus=cpus)
    if started is not None:
        started.append(vm)
    vm.start()
    try:
        vm.wait_for_ssh(timeout=ssh_timeout)
        vm.wait_cloud_init(timeout=cloud_init_timeout)
    except BaseException:
        vm.stop()
        raise
    return vm


def wait_for_first_boot(vm: VM, timeout: float = 1200.0) -> str:
    """Wait until the boot has settled, the first-boot agent included (it runs after cloud-init's final
    stage, so `cloud-init status --wait` returns before it; it is in the boot's transaction, so systemd's
    `is-system-running --wait` waits for it); the agent's result, or "absent"."""
    vm.ssh("systemctl is-system-running --wait", check=False, timeout=timeout)
    proc = vm.ssh("sudo -n golden-firstboot status --json", check=False, timeout=120)
    if not proc.stdout.strip():  # exit status 1 with the status printed when the run failed
        return "absent"
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        return "unreadable"
    return str((data or {}).get("result") or "not started")


def make_seed(directory: Path, name: str, key: SSHKey, roles: list[str]) -> Path:
    """The project's own NoCloud seed for a clone (DHCP, its name and our key)."""
    seed = clone_data("nocloud", directory, name, key, standalone_settings(roles)).seed
    assert seed is not None
    return seed
