"""The cluster file: one description of a cluster, its schema (pydantic, unknown keys refused) and how it loads.

    name: shop                      # a host-name label; part of every host's instance-id
    network: 10.10.0.0/24           # the private IPv4 network: addresses lie in it; exports and grants stay in it
    debian: 12                      # optional: the release the hosts' profiles are resolved for (default 12)
    interface: {mac_prefix: "52:54:00:10:00", name: eth1}   # optional: static address on the NIC with this MAC
    uplink: {mac_prefix: "52:54:00:20:00", name: eth0}      # optional (needs interface): DHCP on a second NIC
    ssh_authorized_keys: ["ssh-ed25519 AAAA... ops@example"]
    secrets:                        # each: `generate`, {env: VAR} or {file: PATH}; a value in clear is refused
      replication_password: generate     # default `generate` when the cluster has sql hosts
      keepalived_password: generate      # default `generate` when a load balancer has a virtual_address
      plesk_license: {env: PLESK_LICENSE_KEY}   # required when a host has the plesk role
      galera_encryption_key: generate    # default `generate` when the sql-galera hosts are hardened (64 hex digits)
      galera_tls: generate               # likewise: a PEM private key + certificate every Galera member shares
    databases: [shop]               # created on every sql-primary (and by the sql-galera nodes)
    db_users: [{name: shop, database: shop, password: generate}]
    vhosts: [{server_name: www.example.com}]    # optional: Apache vhosts of every web host
    backup: {store: {endpoint: "https://s3.gra.io.cloud.ovh.net", bucket: b}}   # optional: model/backup.py
    monitoring:                     # optional: exporters on the cluster address, `golden cluster monitoring`
      scrapers: [10.10.0.50]        # who may scrape: addresses or networks inside `network` (default: all of it)
      scrape_interval: 15           # seconds (5 to 300)
      thresholds: {replica_lag_seconds: 300, certificate_days: 14, backup_hours: 26, disk_free_percent: 10}
    hosts:
      - {name: db1, profile: sql-primary, address: 10.10.0.11}
      - {name: db2, profile: sql-replica, address: 10.10.0.12, primary: db1}
      - {name: nfs1, profile: nfs, address: 10.10.0.30, exports: [/srv/nfs/www]}
      - {name: web1, profile: web, address: 10.10.0.21, lb: lb1, nfs: nfs1}
      - {name: lb1, profile: lb, address: 10.10.0.10, virtual_address: 10.10.0.5}
      # every sql-galera host is a node of one Galera cluster; an lb host with `arbitrator: true` runs garbd
      - {name: db1, profile: sql-galera, address: 10.10.0.11}

Host keys: name (a lower-case host name), profile (a name in profiles/, or a path relative to the cluster
file: it gives the host its roles), address; optional mac (default: interface.mac_prefix + the address's last
bytes) and server_id (MariaDB; default: the address's host part in the network, 11 for 10.10.0.11). By role:
primary (sql-replica: its sql-primary host), lb (web: the load balancer whose pool it joins), nfs (web: an
nfs host, or {host, export, mount}), exports (nfs: paths, or {path, options}), virtual_address (lb: a
floating address; load balancers sharing one form a keepalived group), arbitrator (lb: true to run the
Galera arbitrator). A role key on a host without that role is refused.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, Strict, ValidationError, field_validator, model_validator

from ..core.inert import excerpt
from ..core.schema import SchemaErrors, StrictModel, schema_error_lines
from ..core.yamlfile import display_path, read_yaml_mapping
from .backup import Backup
from .values import DNS_NAME, HOST_LABEL, MAC, MAC_PREFIX, SshPublicKey, check_one_line, check_path

# RFC 1123 label, lower case: what cloud-init, /etc/hosts and MariaDB's report_host all accept.
# Every pattern is matched over the whole value (fullmatch): `$` would let a final newline through.
VHOST_NAME = re.compile(r"(\*\.)?" + DNS_NAME.pattern)
SQL_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")
IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
# The agent's check on export options: a bare comma list, so no client spec can widen an export.
EXPORT_OPTIONS = re.compile(r"[a-z_]+(=[A-Za-z0-9:/._-]+)?(,[a-z_]+(=[A-Za-z0-9:/._-]+)?)*")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
CLEAR_SECRET = "a secret in clear is refused: write `generate`, {env: VARIABLE} or {file: PATH}"


class ClusterErrors(SchemaErrors):
    """Every problem of a cluster file, one line each ('FILE: KEY: problem')."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines, hint="fix the cluster file; examples/cluster.yaml shows every key")


def _secret_source(value: Any) -> Any:
    """`generate` or a mapping; anything else is a value in clear, refused without ever being echoed."""
    if value == "generate":
        return {"generate": True}
    if not isinstance(value, dict):
        raise ValueError(CLEAR_SECRET)
    return value


class SecretSource(StrictModel):
    """Where a secret comes from: generated once (kept in DIR/secrets.json), the environment, or a file."""

    generate: bool = False
    env: str | None = None
    file: str | None = None

    @field_validator("env")
    @classmethod
    def _env(cls, v: str | None) -> str | None:
        if v is not None and not ENV_NAME.fullmatch(v):
            raise ValueError(f"{excerpt(v)} is not an environment variable name")
        return v

    @field_validator("file")
    @classmethod
    def _file(cls, v: str | None) -> str | None:
        return None if v is None else check_one_line(v)

    @model_validator(mode="after")
    def _one_source(self) -> SecretSource:
        if sum([self.generate, self.env is not None, self.file is not None]) != 1:
            raise ValueError("give exactly one of `generate`, {env: VARIABLE} or {file: PATH}")
        return self


Secret = Annotated[SecretSource, BeforeValidator(_secret_source)]


def _label(value: str, what: str = "host name") -> str:
    if not HOST_LABEL.fullmatch(value):
        raise ValueError(f"{excerpt(value)} is not a valid {what} (lower-case letters, digits and '-', at most 63)")
    return value


def _absolute(value: str) -> str:
    return check_path(value)


class Nic(StrictModel):
    """A NIC found by MAC address: the host's MAC is mac_prefix followed by the last bytes of its address."""

    mac_prefix: str
    name: str

    @field_validator("mac_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        v = v.lower()
        if not MAC_PREFIX.fullmatch(v):
            raise ValueError(f"{excerpt(v)} is not a MAC prefix of 3 to 5 octets such as '52:54:00:10:00'")
        if int(v[:2], 16) & 1:
            raise ValueError(f"{excerpt(v)} is a multicast prefix (the first octet must be even)")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not IFNAME.fullmatch(v):
            raise ValueError(f"{excerpt(v)} is not an interface name (at most 15 letters, digits, '_', '.', '-')")
        return v


class Secrets(StrictModel):
    replication_password: Secret | None = None
    keepalived_password: Secret | None = None
    plesk_license: Secret | None = None
    galera_encryption_key: Secret | None = None
    galera_tls: Secret | None = None
    backup_password: Secret | None = None  # the restic repository key (model/backup.py)
    backup_access_key: Secret | None = None
    backup_secret_key: Secret | None = None


class DbUser(StrictModel):
    """An application account on every sql-primary, with all privileges on its database."""

    name: str
    database: str
    password: Secret
    host: str | None = None  # MariaDB host part; default: the cluster network

    @field_validator("name", "database")
    @classmethod
    def _sql_name(cls, v: str) -> str:
        if not SQL_NAME.fullmatch(v):
            raise ValueError(f"{excerpt(v)} is not a name of letters, digits and '_' (at most 64)")
        return v


class Vhost(StrictModel):
    server_name: str
    aliases: list[str] = []
    document_root: str | None = None

    @field_validator("server_name")
    @classmethod
    def _server_name(cls, v: str) -> str:
        if not VHOST_NAME.fullmatch(v) or len(v) > 253:
            raise ValueError(f"{excerpt(v)} is not a host name (RFC 1123, or '*.' and one)")
        return v

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, v: list[str]) -> list[str]:
        for name in v:
            cls._server_name(name)
        return v

    @field_validator("document_root")
    @classmethod
    def _root(cls, v: str | None) -> str | None:
        return None if v is None else _absolute(v)


class Export(StrictModel):
    path: str
    options: str | None = None  # default: rw,sync,no_subtree_check,root_squash

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return _absolute(v)

    @field_validator("options")
    @classmethod
    def _options(cls, v: str | None) -> str | None:
        if v is not None and not EXPORT_OPTIONS.fullmatch(v):
            raise ValueError(f"{excerpt(v)} is not a bare option list such as 'rw,sync,no_subtree_check'")
        return v


class NfsMount(StrictModel):
    """The shared docroot of a web host: an nfs host's export (default its first), mounted on `mount`."""

    host: str
    export: str | None = None
    mount: str | None = None  # default: the web document root

    @field_validator("export", "mount")
    @classmethod
    def _paths(cls, v: str | None) -> str | None:
        return None if v is None else _absolute(v)


def _export(value: Any) -> Any:
    return {"path": value} if isinstance(value, str) else value


def _nfs_mount(value: Any) -> Any:
    return {"host": value} if isinstance(value, str) else value


class Thresholds(StrictModel):
    """The alert rules' thresholds (README, "Watching a fleet")."""

    replica_lag_seconds: int = Field(default=300, ge=10, le=86400)
    certificate_days: int = Field(default=14, ge=1, le=365)
    backup_hours: int = Field(default=26, ge=1, le=24 * 90)
    disk_free_percent: int = Field(default=10, ge=1, le=50)


class Monitoring(StrictModel):
    """Exporters listen on each host's cluster address; `scrapers` may reach them (default: the whole network)."""

    scrapers: list[str] = []
    scrape_interval: int = Field(default=15, ge=5, le=300)
    thresholds: Thresholds = Thresholds()


class Host(StrictModel):
    name: str
    profile: str
    address: IPv4Address
    mac: str | None = None  # default: derived from interface.mac_prefix and the address
    # default: the address's host part; strict: `server_id: true` is not server 1
    server_id: Annotated[int, Strict()] | None = Field(default=None, ge=1, le=2**32 - 1)
    primary: str | None = None  # sql-replica: the sql-primary host it replicates
    lb: str | None = None  # web: the load balancer whose pool it joins
    nfs: Annotated[NfsMount | None, BeforeValidator(_nfs_mount)] = None  # web: shared docroot
    exports: list[Annotated[Export, BeforeValidator(_export)]] = []  # nfs
    virtual_address: IPv4Address | None = None  # lb: floating address held by keepalived
    arbitrator: bool = False  # lb: runs garbd, the Galera arbitrator (the third vote of two sql-galera hosts)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _label(v)

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str | None) -> str | None:
        if v is not None and not MAC.fullmatch(v.lower()):
            raise ValueError(f"{excerpt(v)} is not a MAC address such as '52:54:00:10:00:0b'")
        return None if v is None else v.lower()


class Cluster(StrictModel):
    name: str
    network: IPv4Network
    debian: Annotated[int, Strict()] | None = None
    interface: Nic | None = None
    uplink: Nic | None = None
    ssh_authorized_keys: list[SshPublicKey] = []
    secrets: Secrets = Secrets()
    databases: list[str] = []
    db_users: list[DbUser] = []
    vhosts: list[Vhost] = []
    monitoring: Monitoring | None = None
    backup: Backup | None = None  # model/backup.py
    hosts: list[Host] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _label(v, "cluster name")

    @field_validator("network", mode="before")
    @classmethod
    def _network(cls, v: Any) -> Any:
        if not isinstance(v, str | IPv4Network):
            raise ValueError(f"{excerpt(v)} is not an IPv4 network with its prefix length, such as 10.10.0.0/24")
        try:
            net = IPv4Network(str(v), strict=False)
        except ValueError:
            net = None
        if net is None or "/" not in str(v):
            raise ValueError(f"{excerpt(v)} is not an IPv4 network with its prefix length, such as 10.10.0.0/24")
        if str(net) != str(v):
            raise ValueError(f"{excerpt(v)} has host bits set: the network is {net}")
        return net

    @field_validator("databases")
    @classmethod
    def _databases(cls, v: list[str]) -> list[str]:
        for name in v:
            DbUser._sql_name(name)
        return v

    @model_validator(mode="after")
    def _grant_hosts(self) -> Cluster:
        for user in self.db_users:
            if user.host is not None and not grant_host_in(user.host, self.network):
                raise ValueError(f"db_users: {user.name}: host {excerpt(user.host)} is not an address or a network "
                                 f"inside the cluster network {self.network} (accounts stay in it)")
        for index, scraper in enumerate(self.monitoring.scrapers if self.monitoring else []):
            if not grant_host_in(scraper, self.network):
                raise ValueError(f"monitoring.scrapers[{index}]: {scraper[:80]!r} is not an address or a network "
                                 f"inside the cluster network {self.network} (exporters stay in it)")
        return self

    def scrapers(self) -> list[str]:
        """Who may scrape the exporters, as networks (ADDR/LEN): the monitoring section's, else the whole network."""
        given = self.monitoring.scrapers if self.monitoring else []
        return [str(grant_host_in(s, self.network)) for s in given] or [str(self.network)]


def grant_host_in(host: str, network: IPv4Network) -> IPv4Network | None:
    """The MariaDB host part as a network inside `network` (an address, ADDR/LEN or ADDR/NETMASK); else None."""
    try:
        net = IPv4Network(host, strict=True)
    except ValueError:
        return None
    return net if net.subnet_of(network) else None


def grant_host(host: str, network: IPv4Network) -> str:
    """MariaDB's form of a checked host part: an address as it is, a network as ADDR/NETMASK."""
    net = grant_host_in(host, network)
    if net is None or net.prefixlen == 32:
        return host if net is None else str(net.network_address)
    return f"{net.network_address}/{net.netmask}"


def load_cluster(path: Path) -> Cluster:
    """Read and validate a cluster file; ClusterErrors with every schema problem at once."""
    where = display_path(path)
    raw = read_yaml_mapping(path)
    try:
        return Cluster.model_validate(raw)
    except ValidationError as exc:
        # `from None`: pydantic's own message repeats the input, which may be a secret in clear.
        raise ClusterErrors(schema_error_lines(where, exc, Cluster)) from None


def nic_mac(nic: Nic, address: IPv4Address) -> str:
    """The MAC of a host's NIC: the prefix, then as many trailing bytes of the host's address as it needs."""
    missing = 6 - len(nic.mac_prefix.split(":"))
    return ":".join([nic.mac_prefix, *(f"{b:02x}" for b in address.packed[-missing:])])


def private_mac(cluster: Cluster, host: Host) -> str | None:
    """The host's private NIC MAC: its own `mac`, else derived from interface.mac_prefix; None without interface."""
    if cluster.interface is None:
        return None
    return host.mac or nic_mac(cluster.interface, host.address)


def server_id(cluster: Cluster, host: Host) -> int:
    """MariaDB server_id: the host's own, else its address's host part in the network (unique and stable)."""
    return host.server_id or int(host.address) - int(cluster.network.network_address)

