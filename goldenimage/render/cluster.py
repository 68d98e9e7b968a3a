"""`golden cluster render`: each host's first-boot settings, user-data, meta-data, network-config and NoCloud
seed, from one cluster file.

DIR/<host>/{user-data, meta-data, network-config (with `interface`), seed.iso}, DIR/hosts.json (no secrets)
and DIR/secrets.json (0600) appear together: everything is written into a staging directory beside DIR,
which then replaces it. DIR is 0700 and host files 0600, because user-data carries the host's secrets
(base64 inside /etc/golden/host.json, as render_host_user_data writes it)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..core.agent_contract import host_errors
from ..core.outdir import check_replaceable, mark, replace_dir, stage_dir
from ..core.yamlfile import display_path
from ..model.cluster import Cluster, ClusterErrors, Host, grant_host, load_cluster, nic_mac, private_mac, server_id
from ..model.cluster_check import Roles, check, resolve_roles
from ..model.profile_schema import SQL_ROLES, Role
from .cluster_backup import backup_settings, check_backup
from .cluster_secrets import galera_hardened, read_store, resolve_secrets, wanted, write_store
from .firstboot_bundle import backup_zip_file
from .monitoring import exporter_ports
from .seed import write_seed_iso
from .userdata import render_host_user_data, render_meta_data

HOSTS_FILE = "hosts.json"
BACKEND = "web"
WEB_PORT = 80
#: HTTPS passed through to the web nodes (TLS ends there, with each environment's certificate): the same servers
#: as BACKEND, on port 443, checked by BACKEND's health check plus a connection to 443.
TLS_BACKEND = "web-tls"
TLS_PORT = 443
SQL_BACKEND = "sql"
SQL_PORT = 3306
#: The Galera nodes' health endpoint (firstboot galera-health), which HAProxy's SQL checks ask.
GALERA_HEALTH_PORT = 9200
#: The agent's own default, written out so that host.json says what is exported and how.
EXPORT_OPTIONS = "rw,sync,no_subtree_check,root_squash"
FRONTENDS = [{"name": "www", "bind": f"*:{WEB_PORT}", "backend": BACKEND},
             {"name": "www-tls", "bind": f"*:{TLS_PORT}", "backend": TLS_BACKEND, "mode": "tcp"}]
#: keepalived priorities: the first load balancer of a group listed in the file holds the address.
TOP_PRIORITY = 150
PRIORITY_STEP = 50


@dataclass(frozen=True)
class HostPlan:
    """One host as it will be rendered: what it is, and the settings its first boot reads."""

    name: str
    address: str
    profile: str
    roles: tuple[Role, ...]
    settings: dict[str, Any]
    network_config: dict[str, Any] | None
    mac: str | None
    uplink_mac: str | None
    virtual_address: str | None


@dataclass(frozen=True)
class RenderedHost:
    """A rendered host: the line `golden cluster render` prints for it."""

    name: str
    address: str
    roles: tuple[str, ...]
    directory: Path
    instance_id: str

    def line(self) -> str:
        return f"{self.name:<16} {self.address:<15} {','.join(self.roles):<24} {self.directory / 'seed.iso'}"


def _lb_group(cluster: Cluster, roles: Roles, lb: Host) -> list[Host]:
    """The load balancers sharing lb's floating address (a keepalived group), in file order; else lb alone."""
    if lb.virtual_address is None:
        return [lb]
    return [h for h in cluster.hosts if h.virtual_address == lb.virtual_address and Role.LB in roles[h.name]]


def galera_nodes(cluster: Cluster, roles: Roles) -> list[Host]:
    """The sql-galera hosts, in file order: one Galera cluster (the first bootstraps it)."""
    return [h for h in cluster.hosts if Role.SQL_GALERA in roles[h.name]]


def galera_arbitrators(cluster: Cluster, roles: Roles) -> list[Host]:
    return [h for h in cluster.hosts if h.arbitrator and Role.LB in roles[h.name]]


def _lb_settings(cluster: Cluster, roles: Roles, host: Host, values: Mapping[str, str]) -> dict[str, Any]:
    group = _lb_group(cluster, roles, host)
    names = {h.name for h in group}
    servers = [{"name": h.name, "address": str(h.address), "port": WEB_PORT}
               for h in cluster.hosts if h.lb in names and Role.WEB in roles[h.name]]
    settings: dict[str, Any] = {
        "frontends": [dict(f) for f in FRONTENDS],
        "backends": [{"name": BACKEND, "port": WEB_PORT, "servers": servers},
                     {"name": TLS_BACKEND, "mode": "tcp", "port": TLS_PORT, "follows": BACKEND,
                      "servers": [dict(s, port=TLS_PORT) for s in servers]}],
    }
    nodes = galera_nodes(cluster, roles)
    if nodes:
        # Writes go to one node at a time (the others are backups): no two writers, no certification conflicts.
        settings["frontends"].append({"name": SQL_BACKEND, "bind": f"*:{SQL_PORT}", "backend": SQL_BACKEND,
                                      "mode": "tcp"})
        settings["backends"].append({
            "name": SQL_BACKEND, "mode": "tcp", "port": SQL_PORT, "check_port": GALERA_HEALTH_PORT,
            "health_path": "/", "servers": [{"name": h.name, "address": str(h.address)} for h in nodes]})
        if host.arbitrator:
            settings["arbitrator"] = {"group": cluster.name, "nodes": [str(h.address) for h in nodes]}
            if galera_hardened(cluster, roles):
                settings["arbitrator"]["tls"] = values["galera_tls"]  # the group speaks TLS only
    if host.virtual_address is not None:
        keepalived: dict[str, Any] = {
            "virtual_address": f"{host.virtual_address}/{cluster.network.prefixlen}",
            "router_id": host.virtual_address.packed[-1] or 255,
            "priority": max(TOP_PRIORITY - PRIORITY_STEP * group.index(host), 1),
            "password": values["keepalived_password"],
        }
        peers = [str(h.address) for h in group if h is not host]
        if peers:
            keepalived["peers"] = peers
        if cluster.interface is not None:
            keepalived["interface"] = cluster.interface.name
        settings["keepalived"] = keepalived
    return settings


def _web_settings(cluster: Cluster, host: Host, by_name: Mapping[str, Host]) -> dict[str, Any]:
    web: dict[str, Any] = {}
    if cluster.vhosts:
        web["vhosts"] = [v.model_dump(exclude_none=True, exclude_defaults=True) for v in cluster.vhosts]
    if host.nfs is not None:
        server = by_name[host.nfs.host]
        nfs = {"server": str(server.address), "export": host.nfs.export or server.exports[0].path}
        if host.nfs.mount:
            nfs["mount"] = host.nfs.mount
        web["nfs"] = nfs
    if host.lb is not None:
        lb = by_name[host.lb]
        web["lb"] = {"address": str(lb.virtual_address or lb.address), "backend": BACKEND}
    return web


def _mariadb_settings(cluster: Cluster, host: Host, mine: tuple[Role, ...], by_name: Mapping[str, Host],
                      values: Mapping[str, str]) -> dict[str, Any]:
    mariadb: dict[str, Any] = {"server_id": server_id(cluster, host)}
    if "replication_password" in values:
        mariadb["replication_password"] = values["replication_password"]
    if Role.SQL_GALERA in mine:
        mariadb.pop("replication_password", None)  # Galera replicates without an account
    if Role.SQL_PRIMARY in mine or Role.SQL_GALERA in mine:
        mariadb["databases"] = list(cluster.databases)
        users = []
        for user in cluster.db_users:
            entry = {"name": user.name, "database": user.database, "password": values[f"db_users.{user.name}"]}
            if user.host:
                entry["host"] = grant_host(user.host, cluster.network)
            users.append(entry)
        mariadb["users"] = users
    if Role.SQL_REPLICA in mine and host.primary is not None:
        mariadb["primary"] = str(by_name[host.primary].address)
    return mariadb


def host_settings(cluster: Cluster, roles: Roles, host: Host, values: Mapping[str, str]) -> dict[str, Any]:
    """The host's /etc/golden/host.json: address, network, and one section per role (as firstboot/ reads them)."""
    mine = roles[host.name]
    by_name = {h.name: h for h in cluster.hosts}
    settings: dict[str, Any] = {"hostname": host.name, "address": str(host.address), "network": str(cluster.network)}
    if any(r in SQL_ROLES for r in mine):
        settings["mariadb"] = _mariadb_settings(cluster, host, mine, by_name, values)
    if Role.SQL_GALERA in mine:
        nodes = galera_nodes(cluster, roles)
        settings["galera"] = {
            "cluster_name": cluster.name,
            "nodes": [str(h.address) for h in nodes],
            "arbitrators": [str(h.address) for h in galera_arbitrators(cluster, roles)],
            "bootstrap": host is nodes[0],
            "health_port": GALERA_HEALTH_PORT,
        }
        if Role.HARDENED in mine:
            # One key at rest for every node (a state transfer copies the donor's encrypted files as they are)
            # and TLS between them (replication, IST, and rsync SST through stunnel).
            settings["galera"]["encryption_key"] = values["galera_encryption_key"]
            settings["galera"]["tls"] = values["galera_tls"]
    if Role.WEB in mine:
        web = _web_settings(cluster, host, by_name)
        if web:
            settings["web"] = web
    if Role.LB in mine:
        settings["lb"] = _lb_settings(cluster, roles, host, values)
    if Role.NFS in mine:
        settings["nfs"] = {"exports": [{"path": e.path, "options": e.options or EXPORT_OPTIONS} for e in host.exports]}
    if Role.PLESK in mine:
        settings["plesk"] = {"license_key": values["plesk_license"]}
    if Role.HARDENED in mine:
        settings["hardened"] = {"aide_init": True}
    if cluster.monitoring is not None:
        # The exporters move from loopback to the cluster address; only `scrapers` may reach them.
        settings["monitoring"] = {"scrapers": cluster.scrapers(), "ports": exporter_ports(mine)}
    backup = backup_settings(cluster, roles, host, values)
    if backup is not None:
        settings["backup"] = backup
    return settings


def network_config(cluster: Cluster, host: Host) -> dict[str, Any] | None:
    """Network config v2: the private NIC (found by MAC) with its static address, the uplink on DHCP.

    None without `interface`: cloud-init then keeps its own fallback (DHCP on the first NIC), which is what
    clouds that configure the private network themselves want. Given, it replaces that fallback whole."""
    mac = private_mac(cluster, host)
    if cluster.interface is None or mac is None:
        return None
    ethernets: dict[str, Any] = {}
    if cluster.uplink is not None:
        ethernets[cluster.uplink.name] = {
            "match": {"macaddress": nic_mac(cluster.uplink, host.address)},
            "set-name": cluster.uplink.name,
            "dhcp4": True,
        }
    ethernets[cluster.interface.name] = {
        "match": {"macaddress": mac},
        "set-name": cluster.interface.name,
        "addresses": [f"{host.address}/{cluster.network.prefixlen}"],
    }
    return {"version": 2, "ethernets": ethernets}


def plan(
    path: Path, out_dir: Path, environ: Mapping[str, str] | None = None
) -> tuple[list[HostPlan], dict[str, str], Cluster]:
    """Validate the cluster file and compute every host: (hosts, the secrets store to write, the cluster).

    ClusterErrors lists every problem at once; nothing is written either way."""
    where = display_path(path)
    cluster = load_cluster(path)
    roles, errors = resolve_roles(cluster, path.parent, where)
    errors += check(cluster, roles, where) + check_backup(cluster, where)
    values, store, secret_errors = resolve_secrets(wanted(cluster, roles), read_store(out_dir), path.parent,
                                                   where, environ)
    errors += secret_errors
    if errors:
        raise ClusterErrors(errors)
    hosts = []
    for host in cluster.hosts:
        mine = roles[host.name]
        settings = host_settings(cluster, roles, host, values)
        # What the agent would refuse at its start is refused here, before any seed or apply carries it.
        contract = host_errors(settings)
        if contract:
            raise ClusterErrors([f"{where}: hosts.{host.name}: its host.json breaks the agent's contract: {e}"
                                 for e in contract])
        hosts.append(HostPlan(
            name=host.name,
            address=str(host.address),
            profile=host.profile,
            roles=mine,
            settings=settings,
            network_config=network_config(cluster, host),
            mac=private_mac(cluster, host),
            uplink_mac=nic_mac(cluster.uplink, host.address) if cluster.uplink else None,
            virtual_address=str(host.virtual_address) if host.virtual_address and Role.LB in mine else None,
        ))
    return hosts, store, cluster


def instance_id(cluster_name: str, host: str, user_data: str, network: str | None) -> str:
    """Stable while the host's data is unchanged (a rerender is no new instance); new when it changes."""
    digest = hashlib.sha256((user_data + "\0" + (network or "")).encode()).hexdigest()[:12]
    return f"{cluster_name}-{host}-{digest}"


def _write(path: Path, text: str, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _check_out_dir(out_dir: Path) -> None:
    """DIR is replaced whole: refuse a directory that is not an earlier cluster render (its marker, or the
    hosts.json of a render made before the marker)."""
    check_replaceable(out_dir, also_owned_if=HOSTS_FILE)


def render_cluster(path: Path, out_dir: Path, environ: Mapping[str, str] | None = None) -> list[RenderedHost]:
    """Render every host of the cluster file at `path` into out_dir; InputError (nothing written) on bad input."""
    path, out_dir = Path(path), Path(out_dir)
    _check_out_dir(out_dir)
    hosts, store, cluster = plan(path, out_dir, environ)
    stage = stage_dir(out_dir)
    rendered: list[RenderedHost] = []
    try:
        index: dict[str, Any] = {}
        for host in hosts:
            directory = stage / host.name
            directory.mkdir(mode=0o700)
            # A host that backs up (or can be restored onto) gets the agent's backup modules with its settings.
            user_data = render_host_user_data(host.name, host.settings,
                                              ssh_authorized_keys=list(cluster.ssh_authorized_keys),
                                              extra_files=[backup_zip_file()] if "backup" in host.settings else None)
            network = yaml.safe_dump(host.network_config, sort_keys=False) if host.network_config else None
            iid = instance_id(cluster.name, host.name, user_data, network)
            meta_data = render_meta_data(iid, host.name)
            _write(directory / "user-data", user_data)
            _write(directory / "meta-data", meta_data)
            if network is not None:
                _write(directory / "network-config", network)
            write_seed_iso(directory / "seed.iso", user_data, meta_data, network)
            entry: dict[str, Any] = {"address": host.address, "roles": [str(r) for r in host.roles],
                                     "profile": host.profile, "instance_id": iid}
            for key in ("mac", "uplink_mac", "virtual_address"):
                if getattr(host, key) is not None:
                    entry[key] = getattr(host, key)
            index[host.name] = entry
            rendered.append(RenderedHost(host.name, host.address, tuple(entry["roles"]), out_dir / host.name, iid))
        _write(stage / HOSTS_FILE, json.dumps(index, indent=2) + "\n", 0o644)
        write_store(stage, store)
        mark(stage, "golden cluster render")
        replace_dir(stage, out_dir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return rendered
