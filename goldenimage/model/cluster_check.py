"""What the cluster schema cannot see: each host's roles (from its profile), unique names, addresses, MACs
and server_ids, addresses inside the network, and every reference (primary, lb, nfs) naming a host of the
right role. Each function returns one line per problem, so that all of them are reported at once."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

from ..core.errors import GoldenError
from ..core.inert import excerpt
from .cluster import Cluster, Host, private_mac, server_id
from .profile_schema import SQL_ROLES, Role
from .profiles import ProfileErrors, resolve

Roles = dict[str, tuple[Role, ...]]

#: Host keys that only a host of this role takes.
ROLE_KEYS = (("primary", Role.SQL_REPLICA), ("lb", Role.WEB), ("nfs", Role.WEB), ("exports", Role.NFS),
             ("virtual_address", Role.LB), ("arbitrator", Role.LB))


def profile_argument(profile: str, base_dir: Path) -> str:
    """A profile name as it is; a relative profile path is taken from the cluster file's directory."""
    if ("/" in profile or profile.endswith((".yaml", ".yml"))) and not Path(profile).is_absolute():
        return str(base_dir / profile)
    return profile


def resolve_roles(cluster: Cluster, base_dir: Path, where: str) -> tuple[Roles, list[str]]:
    """Each host's roles, from its profile resolved for the cluster's release; one line per bad profile."""
    roles: Roles = {}
    errors: list[str] = []
    cache: dict[str, tuple[Role, ...] | list[str]] = {}
    for index, host in enumerate(cluster.hosts):
        profile = profile_argument(host.profile, base_dir)
        if profile not in cache:
            try:
                cache[profile] = resolve(profile, cluster.debian).roles
            except ProfileErrors as exc:
                cache[profile] = exc.lines
            except GoldenError as exc:
                cache[profile] = [exc.message + (f"; {exc.hint}" if exc.hint else "")]
        found = cache[profile]
        if isinstance(found, list):
            errors += [f"{where}: hosts[{index}].profile: {line}" for line in found]
        else:
            roles[host.name] = found
    return roles, errors


class _Checker:
    """One pass over the hosts, collecting problems."""

    def __init__(self, cluster: Cluster, roles: Roles, where: str) -> None:
        self.cluster = cluster
        self.roles = roles
        self.where = where
        self.errors: list[str] = []
        self.by_name = {h.name: h for h in cluster.hosts}
        self.addresses: dict[IPv4Address, str] = {}

    def error(self, key: str, problem: str) -> None:
        self.errors.append(f"{self.where}: {key}: {problem}")

    def claim(self, key: str, address: IPv4Address, owner: str) -> bool:
        """An address in the network, not its network or broadcast address, and nobody else's; True when so."""
        net = self.cluster.network
        if address not in net:
            self.error(key, f"{address} is outside the cluster network {net}")
        elif address in (net.network_address, net.broadcast_address):
            self.error(key, f"{address} is the network's own or broadcast address")
        elif address in self.addresses:
            self.error(key, f"{address} is already the address of {self.addresses[address]}")
        else:
            self.addresses[address] = owner
            return True
        return False

    def refer(self, key: str, name: str, role: Role) -> Host | None:
        """The host `name` refers to, when it exists; an error unless it has `role`."""
        if name not in self.by_name:
            self.error(key, f"no host named {excerpt(name)} in this cluster")
            return None
        theirs = self.roles.get(name)
        if theirs is not None and role not in theirs:
            self.error(key, f"{name} is not a {role} host (its roles: {', '.join(theirs) or 'none'})")
        return self.by_name[name]

    def host(self, at: str, host: Host, mine: tuple[Role, ...]) -> None:
        for key, role in ROLE_KEYS:
            if getattr(host, key) and role not in mine:
                self.error(f"{at}.{key}", f"only a {role} host takes {key} ({host.name} is "
                                          f"{', '.join(mine) or 'no role'})")
        if Role.SQL_REPLICA in mine:
            if host.primary is None:
                self.error(f"{at}.primary", "missing: a sql-replica names the sql-primary host it replicates")
            elif host.primary == host.name:
                self.error(f"{at}.primary", "a replica cannot replicate itself")
            else:
                self.refer(f"{at}.primary", host.primary, Role.SQL_PRIMARY)
        if Role.WEB in mine and host.lb is not None:
            self.refer(f"{at}.lb", host.lb, Role.LB)
        if Role.WEB in mine and host.nfs is not None:
            server = self.refer(f"{at}.nfs", host.nfs.host, Role.NFS)
            paths = [e.path for e in server.exports] if server else []
            if server and host.nfs.export is not None and host.nfs.export not in paths:
                self.error(f"{at}.nfs.export", f"{server.name} exports no {host.nfs.export} "
                                               f"(its exports: {', '.join(paths) or 'none'})")
        if Role.NFS in mine:
            paths = [e.path for e in host.exports]
            if not paths:
                self.error(f"{at}.exports", "missing: an nfs host exports at least one path")
            for path in sorted({p for p in paths if paths.count(p) > 1}):
                self.error(f"{at}.exports", f"{path} is listed twice")

    def run(self) -> list[str]:
        names: dict[str, int] = {}
        macs: dict[str, str] = {}
        ids: dict[int, str] = {}
        for index, host in enumerate(self.cluster.hosts):
            at = f"hosts[{index}]"
            if host.name in names:
                self.error(f"{at}.name", f"{excerpt(host.name)} is already the name of hosts[{names[host.name]}]")
            names.setdefault(host.name, index)
            address_ok = self.claim(f"{at}.address", host.address, f"{host.name} ({at})")
            mac = private_mac(self.cluster, host)
            # A MAC derived from an address already reported is not a second problem.
            if mac is not None and (address_ok or host.mac):
                if mac in macs:
                    self.error(f"{at}.mac", f"{mac} is already the MAC of {macs[mac]}: give one of them a `mac`")
                macs.setdefault(mac, host.name)
            mine = self.roles.get(host.name)
            if mine is None:
                continue  # its profile is reported already
            if any(r in SQL_ROLES for r in mine):
                sid = server_id(self.cluster, host)
                if sid in ids:
                    self.error(f"{at}.server_id", f"{sid} is already the server_id of {ids[sid]}")
                ids.setdefault(sid, host.name)
            self.host(at, host, mine)
        floating: set[IPv4Address] = set()
        for index, host in enumerate(self.cluster.hosts):
            # Load balancers that share a floating address form one keepalived group: claimed once.
            vip = host.virtual_address
            if vip is not None and vip not in floating and Role.LB in self.roles.get(host.name, ()):
                floating.add(vip)
                self.claim(f"hosts[{index}].virtual_address", vip, f"the virtual address of {host.name}")
        self.cluster_keys()
        return self.errors

    def galera(self) -> None:
        """Every sql-galera host is a node of one cluster: at least two, and an odd number of votes with the
        arbitrators, or a node's death leaves the other without a majority (no writes anywhere)."""
        nodes = [h for h in self.cluster.hosts if Role.SQL_GALERA in self.roles.get(h.name, ())]
        arbitrators = [h for h in self.cluster.hosts if h.arbitrator and Role.LB in self.roles.get(h.name, ())]
        if not nodes:
            if arbitrators:
                self.error("hosts", f"{arbitrators[0].name} is a Galera arbitrator, but no host has the sql-galera "
                                    "role")
            return
        where = f"hosts[{self.cluster.hosts.index(nodes[0])}]"
        if len(nodes) < 2:
            self.error(where, f"{nodes[0].name} is the only sql-galera host: a Galera cluster needs two nodes or more")
        elif (len(nodes) + len(arbitrators)) % 2 == 0:
            hint = "add `arbitrator: true` to an lb host" if not arbitrators else "remove an arbitrator"
            self.error(where, f"{len(nodes)} sql-galera nodes and {len(arbitrators)} arbitrator(s) make an even number "
                              f"of votes: one death can leave no majority ({hint})")
        hardened = [h for h in nodes if Role.HARDENED in self.roles.get(h.name, ())]
        if hardened and len(hardened) != len(nodes):
            plain = next(h for h in nodes if h not in hardened)
            self.error(f"hosts[{self.cluster.hosts.index(plain)}]",
                       f"{plain.name} is a plain sql-galera node, but {hardened[0].name} is hardened: a state transfer "
                       "copies one node's files to another, so every node encrypts with the cluster's key, or none "
                       "(give every sql-galera host a hardened profile)")

    def cluster_keys(self) -> None:
        cluster = self.cluster
        everyone = {r for rs in self.roles.values() for r in rs}
        self.galera()
        if cluster.uplink is not None:
            if cluster.interface is None:
                self.error("uplink", "needs interface (network-config is written only when interface is set)")
            elif cluster.uplink.name == cluster.interface.name or \
                    cluster.uplink.mac_prefix == cluster.interface.mac_prefix:
                self.error("uplink", "needs a name and a mac_prefix of its own (interface has these)")
        users = [u.name for u in cluster.db_users]
        for index, user in enumerate(cluster.db_users):
            if user.database not in cluster.databases:
                self.error(f"db_users[{index}].database", f"{excerpt(user.database)} is not in databases")
            if users.index(user.name) != index:
                self.error(f"db_users[{index}].name", f"{excerpt(user.name)} is listed twice")
        plesk = cluster.secrets.plesk_license
        if Role.PLESK in everyone and plesk is None:
            self.error("secrets.plesk_license", "missing: a plesk host needs its licence key "
                                                "({env: VARIABLE} or {file: PATH})")
        if plesk is not None and plesk.generate:
            self.error("secrets.plesk_license", "a licence key cannot be generated: give {env: VARIABLE} "
                                                "or {file: PATH}")


def check(cluster: Cluster, roles: Roles, where: str) -> list[str]:
    """Every cross-host problem of the cluster, one line each ('FILE: KEY: problem')."""
    return _Checker(cluster, roles, where).run()
