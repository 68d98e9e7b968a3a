"""The inventory of `golden cluster apply`: where each host of a cluster file is reached over SSH.

    # inventory.yaml
    user: debian                  # optional: login user of addresses that name none (default root)
    hosts:                        # cluster host name -> [USER@]HOST[:PORT]
      db1: 203.0.113.11
      db2: admin@db2.example.com:2222
      web1: "[2001:db8::21]"
    platform: {...}               # optional: where each host runs, for `cluster upgrade --image` (rolling/platform.py)

Every problem is one line naming the file and the key; all of them are reported at once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import InputError
from ..core.yamlfile import display_path, read_yaml_mapping
from ..model.values import USER_NAME
from .target import DEFAULT_USER, SSHTarget, TargetError, parse_target

KEYS = ("user", "hosts", "platform")


class InventoryErrors(InputError):
    """Every problem of an inventory file, one line each ('FILE: KEY: problem')."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines), lines=lines,
                         hint="an inventory maps each cluster host to [USER@]HOST[:PORT] under `hosts:` "
                              "(README: Hosts you did not bake)")


@dataclass(frozen=True)
class Inventory:
    """Host name -> SSH target, in file order."""

    path: Path
    hosts: dict[str, SSHTarget]
    #: the `platform:` section as written (rolling/platform.py checks it when an upgrade needs it)
    platform: Any = None


def parse_inventory(data: Any, where: str) -> Inventory:
    """The inventory in `data` (a loaded YAML document); InventoryErrors listing every problem."""
    errors: list[str] = []
    if not isinstance(data, dict):
        raise InventoryErrors([f"{where}: (top level): must be a mapping with `hosts:`"])
    for key in data:
        if key not in KEYS:
            errors.append(f"{where}: {key}: unknown key (expected: {', '.join(KEYS)})")
    user = data.get("user", DEFAULT_USER)
    if not isinstance(user, str) or not USER_NAME.fullmatch(user):
        errors.append(f"{where}: user: {user!r} is not a user name")
        user = DEFAULT_USER
    hosts = data.get("hosts")
    targets: dict[str, SSHTarget] = {}
    if hosts is None:
        errors.append(f"{where}: hosts: missing: map each cluster host to [USER@]HOST[:PORT]")
    elif not isinstance(hosts, dict) or not hosts:
        errors.append(f"{where}: hosts: must be a non-empty mapping of host name to [USER@]HOST[:PORT]")
    else:
        for name, address in hosts.items():
            if not isinstance(address, str):
                errors.append(f"{where}: hosts.{name}: must be a string [USER@]HOST[:PORT]")
                continue
            try:
                targets[str(name)] = parse_target(address, default_user=user)
            except TargetError as exc:
                errors.append(f"{where}: hosts.{name}: {exc}")
        seen: dict[tuple[str, int], str] = {}
        for name, target in targets.items():
            other = seen.setdefault((target.host, target.port), name)
            if other != name:
                errors.append(f"{where}: hosts.{name}: same address as {other} ({target.host}:{target.port})")
    if errors:
        raise InventoryErrors(errors)
    return Inventory(Path(where), targets, data.get("platform"))


def load_inventory(path: Path) -> Inventory:
    """Read and check an inventory file (duplicate keys, encoding and YAML errors are one line too)."""
    return parse_inventory(read_yaml_mapping(Path(path)), display_path(Path(path)))


def match_cluster(inventory: Inventory, cluster_hosts: Iterable[str]) -> None:
    """Every cluster host has an address and the inventory names no other host; InventoryErrors otherwise."""
    names = list(cluster_hosts)
    where = str(inventory.path)
    errors = [f"{where}: hosts.{n}: missing: the cluster file has host {n}" for n in names
              if n not in inventory.hosts]
    errors += [f"{where}: hosts.{n}: not a host of the cluster file (hosts: {', '.join(names)})"
               for n in inventory.hosts if n not in names]
    if errors:
        raise InventoryErrors(errors)
