"""The order of a rolling change: which node goes when, and which load-balancer pools it leaves while it changes.

Pure: read from the cluster's host plans (the settings `golden cluster render` writes: each load balancer's
backends and their servers), nothing asked of a host. Load balancers go first, the keepalived BACKUP before the
one holding the floating address; then the SQL nodes, the pool's backups before its active server; then the web
nodes; then the hosts no pool stands in for, in file order."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum

from ..model.profile_schema import Role
from ..render.cluster import HostPlan


class Kind(StrEnum):
    LB = "lb"
    SQL = "sql"
    WEB = "web"
    ALONE = "alone"


@dataclass(frozen=True)
class Pool:
    """One place a node serves from: server `server` of backend `backend` on load balancer `lb`."""

    lb: str
    backend: str
    server: str

    def __str__(self) -> str:
        return f"{self.backend}/{self.server} on {self.lb}"


@dataclass(frozen=True)
class Node:
    """A host as a rolling change sees it."""

    name: str
    profile: str
    kind: Kind
    #: every pool it is drained from (each load balancer that has it)
    pools: tuple[Pool, ...] = ()
    #: a load balancer in a keepalived group: the floating address must move off it first
    keepalived: bool = False
    #: that group's floating address (load balancers sharing it are peers)
    virtual_address: str = ""
    #: another node takes its work while it is out (the other load balancer, another server of each pool)
    standin: bool = False
    #: its place in the pools' server lists (0: the active server of a pool whose others are backups)
    rank: int = 0


def _pools(hosts: Sequence[HostPlan]) -> dict[str, list[tuple[Pool, int, int]]]:
    """Server name -> (pool, its index in the backend's servers, the backend's server count)."""
    found: dict[str, list[tuple[Pool, int, int]]] = {}
    for host in hosts:
        if Role.LB not in host.roles:
            continue
        for backend in (host.settings.get("lb") or {}).get("backends") or []:
            servers = backend.get("servers") or []
            for index, server in enumerate(servers):
                found.setdefault(server["name"], []).append(
                    (Pool(host.name, backend["name"], server["name"]), index, len(servers)))
    return found


def nodes(hosts: Sequence[HostPlan]) -> list[Node]:
    """Every host as a node, in file order."""
    pools = _pools(hosts)
    out = []
    for host in hosts:
        mine = pools.get(host.name, [])
        if Role.LB in host.roles:
            keepalived = (host.settings.get("lb") or {}).get("keepalived") or {}
            out.append(Node(host.name, host.profile, Kind.LB, keepalived=bool(keepalived),
                            virtual_address=str(keepalived.get("virtual_address") or ""),
                            standin=bool(keepalived.get("peers"))))
        elif mine:
            kind = Kind.SQL if Role.SQL_GALERA in host.roles else Kind.WEB
            out.append(Node(host.name, host.profile, kind, tuple(p for p, _, _ in mine),
                            standin=all(count > 1 for _, _, count in mine), rank=min(i for _, i, _ in mine)))
        else:
            out.append(Node(host.name, host.profile, Kind.ALONE))
    return out


def order(found: Sequence[Node], holders: Collection[str]) -> list[Node]:
    """The nodes in the order they change; `holders` are the load balancers holding a floating address now."""
    lbs = [n for n in found if n.kind is Kind.LB]
    first = [n for n in lbs if n.name not in holders] + [n for n in lbs if n.name in holders]
    sql = sorted((n for n in found if n.kind is Kind.SQL), key=lambda n: -n.rank)  # stable: file order within
    web = [n for n in found if n.kind is Kind.WEB]
    alone = [n for n in found if n.kind is Kind.ALONE]
    return first + sql + web + alone
