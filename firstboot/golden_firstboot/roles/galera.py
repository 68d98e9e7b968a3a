"""sql-galera: this node in the cluster's Galera group, and its health endpoint for HAProxy. Only the designated
node bootstraps, once, while its data was never in a cluster and no peer is primary (README: High availability)."""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Any

from ..services import ensure_running, wait_serving
from ..steps import Context, step
from ..system import HOST, FirstbootError, RetryPolicy, SettingsError, retry
from .mariadb import restart_mariadb, rows

GALERA_CNF = "/etc/mysql/mariadb.conf.d/62-golden-galera.cnf"
GRASTATE = "/var/lib/mysql/grastate.dat"
BOOTSTRAPPED = "/var/lib/golden/galera-bootstrapped"
HEALTH_UNIT = "golden-galera-health.service"
HEALTH_UNIT_PATH = "/etc/systemd/system/" + HEALTH_UNIT
HEALTH_CONF = "/etc/golden/galera-health.json"
PROVIDER = "/usr/lib/galera/libgalera_smm.so"
SST_METHODS = ("rsync", "mariabackup")
NO_STATE = ("", "00000000-0000-0000-0000-000000000000")
SYNCED = "4"
#: The cluster's TLS pair on a node (MariaDB and its SST scripts run as mysql) and on the arbitrator (nobody).
NODE_TLS_DIR = "/etc/mysql/galera-tls"
STUNNEL = "/usr/bin/stunnel"
ARBITRATOR_TLS_DIR = "/etc/golden/galera-tls"
PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n[A-Za-z0-9+/=\r\n]+?-----END \1-----")


def split_pem(bundle: str) -> tuple[str, str]:
    """(private key, certificates) from the cluster's PEM text; the certificates are also the trusted CA."""
    key = [m.group(0) for m in PEM_BLOCK.finditer(bundle) if m.group(1).endswith("PRIVATE KEY")]
    certs = [m.group(0) for m in PEM_BLOCK.finditer(bundle) if m.group(1) == "CERTIFICATE"]
    if len(key) != 1 or not certs:
        raise SettingsError(f"{HOST}: galera TLS: not PEM text with one private key and a certificate",
                            hint="golden cluster render writes it; render the cluster again")
    return key[0] + "\n", "\n".join(certs) + "\n"


def write_tls(ctx: Context, directory: str, bundle: str, user: str, group: str) -> tuple[bool, str, str]:
    """The key (readable by `user` only, or its group when user is root) and the certificates in `directory`:
    (changed, key path, certificate path)."""
    key, certs = split_pem(bundle)
    key_path, cert_path = directory + "/key.pem", directory + "/cert.pem"
    changed = False
    if not os.path.isdir(ctx.path(directory)):
        os.makedirs(ctx.path(directory), 0o750)
        changed = True
    key_mode = 0o440 if user == "root" else 0o400
    changed = ctx.write(key_path, key, key_mode) or changed
    changed = ctx.write(cert_path, certs, 0o644) or changed
    if changed:
        os.chmod(ctx.path(directory), 0o750)
        ctx.chown(ctx.path(directory), "root", group)
        ctx.chown(ctx.path(key_path), user, group)
    return changed, key_path, cert_path


def tls_provider_options(key: str, cert: str) -> str:
    """Galera's own TLS: group communication and IST; socket.ssl=YES: a peer without TLS is refused."""
    return f"socket.ssl=YES;socket.ssl_key={key};socket.ssl_cert={cert};socket.ssl_ca={cert}"


def _address(value: Any, key: str) -> str:
    try:
        return str(ipaddress.IPv4Address(str(value)))
    except ValueError:
        raise SettingsError(f"{HOST}: {key}: {str(value)[:80]!r} is not an IPv4 address") from None


def settings(ctx: Context) -> dict[str, Any]:
    """The galera section, checked."""
    galera = dict(ctx.get("galera") or {})
    name = str(galera.get("cluster_name") or "")
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise SettingsError(f"{HOST}: galera.cluster_name: {name[:80]!r} is not a word of letters, digits, '-', '_'")
    nodes = [_address(a, f"galera.nodes[{i}]") for i, a in enumerate(galera.get("nodes") or [])]
    arbitrators = [_address(a, f"galera.arbitrators[{i}]") for i, a in enumerate(galera.get("arbitrators") or [])]
    address = _address(ctx.get("address"), "address")
    if address not in nodes:
        raise SettingsError(f"{HOST}: galera.nodes: this host's address {address} is not among them")
    method = str(galera.get("sst_method") or "rsync")
    if method not in SST_METHODS:
        raise SettingsError(f"{HOST}: galera.sst_method: {method!r} is not one of " + ", ".join(SST_METHODS))
    galera.update(cluster_name=name, nodes=nodes, arbitrators=arbitrators, sst_method=method,
                  address=address, health_port=int(galera.get("health_port") or 9200))
    return galera


def render_cnf(galera: dict[str, Any], hostname: str, tls: tuple[str, str] | None = None) -> str:
    """62-golden-galera.cnf: wsrep on, the group's members (nodes and arbitrators), this node's identity; with
    `tls` (key, certificate paths) every byte between the members is TLS, state transfers included."""
    members = ",".join(galera["nodes"] + galera["arbitrators"])
    options = "pc.recovery=TRUE" + (";" + tls_provider_options(*tls) if tls else "")
    lines = [
        "# goldenimage first boot: this node's Galera group (written by golden-firstboot).",
        "[galera]",
        "wsrep_on                 = ON",
        f"wsrep_provider           = {PROVIDER}",
        "wsrep_cluster_name       = {}".format(galera["cluster_name"]),
        f"wsrep_cluster_address    = gcomm://{members}",
        "wsrep_node_address       = {}".format(galera["address"]),
        f"wsrep_node_name          = {hostname}",
        "wsrep_sst_method         = {}".format(galera["sst_method"]),
        # pc.recovery: when every member of the last primary component comes back, it re-forms by itself.
        f"wsrep_provider_options   = \"{options}\"",
        "binlog_format            = ROW",
        "default_storage_engine   = InnoDB",
        "innodb_autoinc_lock_mode = 2",
    ]
    if tls:
        # wsrep_sst_rsync (and mariabackup) read [sst]: with a CA and VERIFY_CA the rsync SST runs through
        # stunnel, and aborts rather than sending in clear when stunnel is missing.
        lines += ["", "[sst]", f"tkey     = {tls[0]}", f"tcert    = {tls[1]}", f"tca      = {tls[1]}",
                  "ssl-mode = VERIFY_CA", "encrypt  = 3"]
    return "\n".join(lines) + "\n"


def grastate(ctx: Context) -> dict[str, str]:
    """grastate.dat as a dict (uuid, seqno, safe_to_bootstrap); empty when the node was never in a cluster."""
    out = {}
    for line in (ctx.read(GRASTATE) or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.startswith("#"):
            out[key.strip()] = value.strip()
    return out


def wsrep_status(ctx: Context) -> dict[str, str]:
    """The node's wsrep status variables; {} when MariaDB does not answer."""
    try:
        found = rows(ctx, "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_ready', 'wsrep_local_state', "
                          "'wsrep_cluster_status', 'wsrep_cluster_size', 'wsrep_local_state_uuid');\n")
    except FirstbootError:
        return {}
    return {r[0].lower(): r[1] for r in found if len(r) == 2}


def synced(status: dict[str, str]) -> bool:
    return (status.get("wsrep_ready") == "ON" and status.get("wsrep_local_state") == SYNCED
            and status.get("wsrep_cluster_status") == "Primary")


def peer_primary(ctx: Context, galera: dict[str, Any]) -> str | None:
    """A peer node whose health endpoint says it is in a primary component; None when none does."""
    for peer in galera["nodes"]:
        if peer != galera["address"]:
            if ctx.http_status("http://{}:{}/primary".format(peer, galera["health_port"])) == 200:
                return str(peer)
    return None


def may_bootstrap(ctx: Context, galera: dict[str, Any]) -> bool:
    """Only the designated node, once, with data that was never in a cluster, while no peer is primary."""
    if not galera.get("bootstrap") or ctx.exists(BOOTSTRAPPED):
        return False
    if grastate(ctx).get("uuid", "") not in NO_STATE:
        ctx.log("this node has been in a Galera cluster already: it joins, it never bootstraps again")
        return False
    return peer_primary(ctx, galera) is None


def _wait_synced(ctx: Context) -> None:
    def check() -> None:
        status = wsrep_status(ctx)
        if not synced(status):
            raise FirstbootError("not synced yet (state {}, component {})".format(
                status.get("wsrep_local_state", "?"), status.get("wsrep_cluster_status", "?")))

    wait_serving(ctx, ["mariadb"], check, "waiting for this Galera node to be Synced")


@step("galera.health", roles=["sql-galera"], activate=["galera.nodes"], require=["address"])
def health(ctx: Context) -> bool:
    """The health endpoint HAProxy checks (200 only while this node is Synced in a primary component)."""
    galera = settings(ctx)
    conf = '{{"address": "{}", "port": {}, "donor_ok": {}}}\n'.format(
        galera["address"], galera["health_port"], "true" if galera["sst_method"] == "mariabackup" else "false")
    unit = "\n".join([
        "[Unit]",
        "Description=goldenimage: Galera node health for the load balancers (HTTP, port {})".format(
            galera["health_port"]),
        "After=network-online.target mariadb.service",
        "",
        "[Service]",
        "ExecStart=/usr/local/sbin/golden-firstboot galera-health",
        "Restart=always",
        "RestartSec=2",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])
    changed = ctx.write(HEALTH_CONF, conf)
    if ctx.write(HEALTH_UNIT_PATH, unit):
        ctx.run(["systemctl", "daemon-reload"])
        changed = True
    if changed and ctx.run(["systemctl", "is-active", "--quiet", HEALTH_UNIT], check=False).returncode == 0:
        ctx.run(["systemctl", "restart", HEALTH_UNIT])
    return ensure_running(ctx, HEALTH_UNIT) or changed


@step("galera.cluster", roles=["sql-galera"], activate=["galera.nodes"], require=["address", "galera.cluster_name"])
def cluster(ctx: Context) -> bool:
    """The Galera configuration, then this node bootstrapped (by the one allowed to) or joined; done when Synced."""
    galera = settings(ctx)
    tls = None
    changed = False
    if galera.get("tls"):
        if galera["sst_method"] == "rsync" and not ctx.exists(STUNNEL):
            raise FirstbootError(f"galera.tls is set but {STUNNEL} is missing: an rsync state transfer could not be "
                                 "encrypted", hint="this image lacks stunnel4: rebuild it from a profile with the "
                                                   "hardened and sql-galera roles")
        changed, key, cert = write_tls(ctx, NODE_TLS_DIR, str(galera["tls"]), "mysql", "mysql")
        tls = (key, cert)
    changed = ctx.write(GALERA_CNF, render_cnf(galera, ctx.get("hostname") or ctx.hostname(), tls)) or changed
    status = wsrep_status(ctx)
    if not changed and synced(status):
        return False
    if may_bootstrap(ctx, galera):
        ctx.log("no peer is in a primary component and this node never was: bootstrapping the cluster here")
        ctx.run(["systemctl", "stop", "mariadb"], timeout=ctx.service_timeout)
        # galera_new_cluster starts the unit with --wsrep-new-cluster once (Debian's unit reads it from /run).
        ctx.run(["galera_new_cluster"], timeout=ctx.service_timeout)
        ctx.write(BOOTSTRAPPED, "bootstrapped by golden-firstboot\n")
    else:
        # A joiner waits for a primary component first: its start fails without one.
        attempts = int(ctx.get("firstboot.galera_wait_attempts", 60))
        retry(lambda: _require_peer(ctx, galera), "waiting for a Galera peer in a primary component",
              RetryPolicy(attempts=attempts, delay=5, max_delay=15), sleep=ctx.sleep, logger=ctx.log)
        if changed or status.get("wsrep_ready") != "ON":
            restart_mariadb(ctx, "it joins the Galera cluster")
    _wait_synced(ctx)
    ctx.log("this node is Synced in the primary component")
    return True


def _require_peer(ctx: Context, galera: dict[str, Any]) -> None:
    if peer_primary(ctx, galera) is None:
        raise FirstbootError("no peer reports a primary component yet")


@step("galera.arbitrator", roles=["lb"], activate=["lb.arbitrator.nodes"], require=["lb.arbitrator.group"])
def arbitrator(ctx: Context) -> bool:
    """garbd, the third vote; systemd restarts it until the cluster takes it."""
    arb = ctx.get("lb.arbitrator")
    nodes = [_address(a, f"lb.arbitrator.nodes[{i}]") for i, a in enumerate(arb.get("nodes") or [])]
    group = str(arb.get("group"))
    if not all(c.isalnum() or c in "-_" for c in group):
        raise SettingsError(f"{HOST}: lb.arbitrator.group: {group[:80]!r} is not a word")
    workdir = "/var/lib/golden-garb"
    lines = [
        "# goldenimage first boot: this host is the Galera arbitrator (written by golden-firstboot).",
        'GALERA_NODES="{}"'.format(" ".join(f"{n}:4567" for n in nodes)),
        f'GALERA_GROUP="{group}"',
        f'WORK_DIR="{workdir}"',
    ]
    changed = False
    if arb.get("tls"):
        # The nodes speak TLS only: so does their third vote (garbd runs as nobody, group nogroup).
        changed, key, cert = write_tls(ctx, ARBITRATOR_TLS_DIR, str(arb["tls"]), "root", "nogroup")
        lines.append(f'GALERA_OPTIONS="{tls_provider_options(key, cert)}"')
    changed = ctx.write("/etc/default/garb", "\n".join(lines) + "\n") or changed
    if not ctx.exists(workdir):
        os.makedirs(ctx.path(workdir), mode=0o750)
        ctx.chown(ctx.path(workdir), "nobody", "nogroup")
        changed = True
    if changed and ctx.run(["systemctl", "is-active", "--quiet", "garb"], check=False).returncode == 0:
        ctx.run(["systemctl", "restart", "--no-block", "garb"])
    return ensure_running(ctx, "garb") or changed


STEPS = [health, cluster]
LB_STEPS = [arbitrator]
