"""lb: HAProxy frontends and backends from the settings, health-checked on the web health endpoint; spare
`dynN` server slots that `golden-firstboot lb-add/lb-remove` fill and empty through the runtime API (no
restart, no reload); an optional keepalived instance for a floating address (VRRP to unicast peers,
nopreempt: the address moves only when its holder fails); an optional TCP pool for a Galera cluster; TCP
pass-through pools (`follows`: HTTPS to the web nodes, TLS ending there) that carry the same servers as an HTTP
backend on another port, checked by that backend's own health check."""

from __future__ import annotations

import json
import re
import socket
from typing import Any

from ..services import require_active, restart, wait_serving
from ..steps import Context, step
from ..system import HOST, FirstbootError, SettingsError

CLUSTER_CFG = "/etc/haproxy/conf.d/golden-cluster.cfg"
DROPIN = "/etc/systemd/system/haproxy.service.d/golden-cluster.conf"
POOL = "/var/lib/golden/lb-pool.json"
ADMIN_SOCKET = "/run/haproxy/admin.sock"
KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"
NONLOCAL_SYSCTL = "/etc/sysctl.d/61-golden-keepalived.conf"
PARKED = "127.0.0.1"
# Debian's unit runs `haproxy -f $CONFIG` (unbraced: split into words), on every release from 10 to 13.
DROPIN_TEXT = ("# goldenimage first boot: the baked haproxy.cfg, then the cluster section.\n"
               "[Service]\n"
               'Environment="CONFIG=/etc/haproxy/haproxy.cfg -f ' + CLUSTER_CFG + '"\n')


def admin_socket(command: str, path: str = ADMIN_SOCKET) -> str:
    """One command on HAProxy's runtime API; its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace").strip()


def slots(settings: dict[str, Any], backend: dict[str, Any]) -> list[str]:
    """The spare slot names of a backend: max_servers minus the servers listed in the settings."""
    count = int(settings.get("max_servers", 16)) - len(backend.get("servers") or [])
    return [f"dyn{i}" for i in range(1, max(count, 0) + 1)]


#: What a health path may hold where it is written into a check line (no space, quote, backslash or `#`).
HEALTH_PATH = re.compile(r"^/[A-Za-z0-9._~/%?=&+-]*$")


def _backends(settings: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    return {b.get("name"): b for b in settings.get("backends") or []}


def _leader(settings: dict[str, Any], backend: dict[str, Any]) -> dict[str, Any]:
    """The HTTP backend a pass-through backend follows (its servers, slots and health check); itself otherwise."""
    return _backends(settings).get(backend.get("follows"), backend) if backend.get("follows") else backend


def _followers(settings: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [b for b in settings.get("backends") or [] if b.get("follows") == name]


def _passthrough_lines(settings: dict[str, Any], backend: dict[str, Any]) -> list[str]:
    """A TCP pass-through of an HTTP backend's servers (HTTPS: the TLS bytes reach the server untouched, SNI
    included). A server takes connections when its own port accepts one AND the HTTP backend's check passes on
    the HTTP port: one tcp-check sequence, so that a node out of the HTTP pool is out of this one too, and a node
    whose pass-through port refuses is out even while its HTTP check passes."""
    leader = _leader(settings, backend)
    path = leader.get("health_path", settings.get("health_path", "/healthz"))
    return ["    mode tcp",
            "    balance {}".format(backend.get("balance", leader.get("balance", "roundrobin"))),
            "    option tcp-check",
            "    tcp-check connect port {}".format(int(backend.get("port", 443))),
            "    tcp-check connect port {}".format(int(leader.get("port", 80))),
            # HTTP/1.0 with no Host, like `option httpchk`: the node's default site answers the health path.
            f"    tcp-check send GET\\ {path}\\ HTTP/1.0\\r\\n\\r\\n",
            "    tcp-check expect rstring ^HTTP/1\\.[01]\\ 200",
            # A node that died without a word answers no SYN: the connection goes to another one.
            "    option redispatch 1",
            "    retries 2",
            "    timeout connect 2s",
            "    default-server inter 2s fall 2 rise 2"]


def render_haproxy(settings: dict[str, Any], pool: dict[str, dict[str, dict[str, Any]]]) -> str:
    """conf.d/golden-cluster.cfg from the lb settings and the slots filled by lb-add (pool).

    A backend in `mode: tcp` (the SQL pool) is checked over HTTP on its servers' `check_port`, sends every
    connection to its first healthy server (the others are `backup`), and cuts the sessions of a server marked
    down, so that clients reconnect to the one taking over. A `mode: tcp` backend that `follows` an HTTP backend
    is a pass-through of that backend's servers instead (all active, its health check, its spare slots)."""
    health = settings.get("health_path", "/healthz")
    backends = _backends(settings)
    out = ["# goldenimage first boot: cluster frontends and backends (written by golden-firstboot).",
           "# dynN slots are spare: `golden-firstboot lb-add NAME ADDRESS` fills one at run time.", ""]
    for frontend in settings.get("frontends") or []:
        out += ["frontend {}".format(frontend["name"]),
                "    bind {}".format(frontend["bind"])]
        if frontend.get("mode") == "tcp":
            out += ["    mode tcp", "    option tcplog"]
            if not (backends.get(frontend["backend"]) or {}).get("follows"):
                out.append("    timeout client 1h")  # SQL sessions idle for long; HTTPS keeps the defaults
        out += ["    default_backend {}".format(frontend["backend"]), ""]
    for backend in settings.get("backends") or []:
        port = int(backend.get("port", 80))
        tcp = backend.get("mode") == "tcp"
        follows = bool(backend.get("follows"))
        out += ["backend {}".format(backend["name"])]
        if follows:
            out += _passthrough_lines(settings, backend)
        elif tcp:
            out += ["    mode tcp",
                    "    option httpchk GET {}".format(backend.get("health_path", "/")),
                    "    http-check expect status 200",
                    "    timeout connect 3s",
                    # a busy node's answer may take a few seconds; a dead one still fails to connect within
                    # min(connect, inter)
                    "    timeout check 5s",
                    "    timeout server 1h",
                    "    default-server inter 2s fall 2 rise 3 on-marked-down shutdown-sessions port {}".format(
                        int(backend.get("check_port", 9200)))]
        else:
            out += ["    balance {}".format(backend.get("balance", "roundrobin")),
                    "    option httpchk GET {}".format(backend.get("health_path", health)),
                    "    http-check expect status 200",
                    # A node that died without a word answers no SYN: the request goes to another one.
                    "    option redispatch 1",
                    "    retries 2",
                    "    timeout connect 2s",
                    "    default-server inter 2s fall 2 rise 2"]
        for index, server in enumerate(backend.get("servers") or []):
            backup = "  backup" if tcp and not follows and index > 0 else ""
            out.append("    server {} {}:{} check{}".format(server["name"], server["address"],
                                                            int(server.get("port", port)), backup))
        if tcp and not follows:
            out.append("")
            continue
        # A pass-through backend's slots are its leader's, filled with the same members on its own port.
        leader = _leader(settings, backend)
        filled = pool.get(leader["name"], {})
        for slot in slots(settings, leader):
            member = filled.get(slot)
            if member:
                member_port = port if follows else member["port"]
                out.append("    server {} {}:{} check  # {}".format(slot, member["address"], member_port,
                                                                   member["name"]))
            else:
                out.append(f"    server {slot} {PARKED}:{port} check disabled")
        out.append("")
    return "\n".join(out)


def metrics_frontend(settings: dict[str, Any]) -> list[str]:
    """HAProxy's own Prometheus endpoint, bound to the cluster address, answering the scrapers only; nothing
    without host.json's `monitoring` (settings: address and monitoring, as host.json has them)."""
    address = settings.get("address")
    port = (settings.get("monitoring") or {}).get("ports", {}).get("haproxy")
    if not address or not port:
        return []
    scrapers = " ".join(str(s) for s in (settings.get("monitoring") or {}).get("scrapers") or [])
    out = ["frontend golden-metrics", f"    bind {address}:{int(port)}", "    mode http", "    no log"]
    if scrapers:
        out += [f"    acl golden_scrapers src {scrapers}", "    http-request deny if !golden_scrapers"]
    out += ["    http-request use-service prometheus-exporter if { path /metrics }", ""]
    return out


def load_pool(ctx: Context) -> dict[str, dict[str, dict[str, Any]]]:
    text = ctx.read(POOL)
    return json.loads(text) if text else {}


def _validate(settings: dict[str, Any]) -> None:
    modes = {b.get("name"): b.get("mode", "http") for b in settings.get("backends") or []}
    for index, frontend in enumerate(settings.get("frontends") or []):
        for key in ("name", "bind", "backend"):
            if not frontend.get(key):
                raise SettingsError(f"{HOST}: lb.frontends[{index}].{key}: missing")
        if frontend["backend"] not in modes:
            raise SettingsError(f"{HOST}: lb.frontends[{index}].backend: no backend named {frontend['backend']!r}",
                                hint="add it to lb.backends")
        if frontend.get("mode", "http") != modes[frontend["backend"]]:
            raise SettingsError(f"{HOST}: lb.frontends[{index}].mode: {frontend.get('mode', 'http')!r} differs from "
                                f"backend {frontend['backend']}'s {modes[frontend['backend']]!r}")
    for index, backend in enumerate(settings.get("backends") or []):
        if backend.get("mode", "http") not in ("http", "tcp"):
            raise SettingsError(f"{HOST}: lb.backends[{index}].mode: {backend.get('mode')!r} is not http or tcp")
        for s_index, server in enumerate(backend.get("servers") or []):
            if not server.get("name") or not server.get("address"):
                raise SettingsError(f"{HOST}: lb.backends[{index}].servers[{s_index}]: needs name and address")
        if backend.get("follows"):
            _validate_follower(settings, index, backend, modes)


def _validate_follower(settings: dict[str, Any], index: int, backend: dict[str, Any], modes: dict[Any, str]) -> None:
    """A pass-through backend: TCP, following an HTTP backend, with that backend's servers (same names, in order)
    and a health path that goes into a check line as it is."""
    where = f"{HOST}: lb.backends[{index}]"
    leader_name = backend["follows"]
    if modes.get(leader_name) != "http":
        raise SettingsError(f"{where}.follows: {leader_name!r} is not an HTTP backend of this load balancer")
    if backend.get("mode") != "tcp":
        raise SettingsError(f"{where}.mode: a backend that follows {leader_name} passes TCP through: mode tcp")
    leader = _backends(settings)[leader_name]
    names = [s.get("name") for s in backend.get("servers") or []]
    if names != [s.get("name") for s in leader.get("servers") or []]:
        raise SettingsError(f"{where}.servers: {names} are not backend {leader_name}'s servers",
                            hint="a pass-through backend lists the same servers as the backend it follows")
    path = str(leader.get("health_path", settings.get("health_path", "/healthz")))
    if not HEALTH_PATH.match(path):
        raise SettingsError(f"{HOST}: lb.health_path: {path!r} is not a plain URL path",
                            hint="letters, digits and . _ ~ / % ? = & + - only, starting with /")


@step("lb.haproxy", roles=["lb"], activate=["lb.frontends", "lb.backends"], require=["lb.backends"])
def haproxy(ctx: Context) -> bool:
    """The cluster section and the unit drop-in that loads it; checked, then reloaded (restarted the first time)."""
    settings = ctx.get("lb")
    _validate(settings)
    metrics = metrics_frontend({"address": ctx.get("address"), "monitoring": ctx.get("monitoring")})
    cfg_changed = ctx.write(CLUSTER_CFG, render_haproxy(settings, load_pool(ctx)) + "\n".join(metrics))
    unit_changed = ctx.write(DROPIN, DROPIN_TEXT)
    if cfg_changed or unit_changed:
        ctx.run(["haproxy", "-c", "-q", "-f", "/etc/haproxy/haproxy.cfg", "-f", CLUSTER_CFG])
        if unit_changed:
            ctx.run(["systemctl", "daemon-reload"])
            restart(ctx, "haproxy", "it loads the cluster section now", lambda: require_active(ctx, "haproxy"))
        else:
            ctx.run(["systemctl", "reload", "haproxy"], check=False, timeout=ctx.service_timeout)
    # Whatever happened at boot, HAProxy runs when this step ends.
    running = wait_serving(ctx, ["haproxy"], lambda: require_active(ctx, "haproxy"), "waiting for haproxy")
    return cfg_changed or unit_changed or running



def render_keepalived(kad: dict[str, Any], address: str | None) -> str:
    """keepalived.conf: one VRRP instance that holds the floating address while HAProxy runs here."""
    # VRRP PASS authentication reads 8 characters; keepalived ignores the rest.
    lines = [
        "# goldenimage first boot: floating address for the load balancer (written by golden-firstboot).",
        "global_defs {", "    enable_script_security", "    script_user root", "}", "",
        # HAProxy tracked through the kernel's process events, not a script: on a starved host a forked
        # `systemctl is-active` missed its timeout and threw both load balancers into FAULT (no address at all).
        "vrrp_track_process golden_haproxy {", "    process haproxy", "    quorum 1", "    delay 2", "}", "",
        "vrrp_instance golden_vip {",
        "    state BACKUP",
        # The address stays where it is when a load balancer with a higher priority comes back: no flap.
        "    nopreempt",
        "    interface {}".format(kad.get("interface", "eth0")),
        "    virtual_router_id {}".format(int(kad.get("router_id", 51))),
        "    priority {}".format(int(kad.get("priority", 100))),
        # 2 s adverts: a backup takes over after about 7 s of silence, and a busy master is not taken for dead.
        "    advert_int 2",
    ]
    peers = kad.get("peers") or []
    if peers and address:
        lines += [f"    unicast_src_ip {address}", "    unicast_peer {"]
        lines += [f"        {p}" for p in peers] + ["    }"]
    lines += [
        "    authentication {", "        auth_type PASS", "        auth_pass {}".format(str(kad["password"])[:8]),
        "    }",
        "    virtual_ipaddress {", "        {}".format(kad["virtual_address"]), "    }",
        "    track_process {", "        golden_haproxy", "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


@step("lb.keepalived", roles=["lb"], activate=["lb.keepalived.virtual_address"],
      require=["lb.keepalived.password"])
def keepalived(ctx: Context) -> bool:
    """keepalived.conf (0600: it holds the VRRP password), non-local binds, the service enabled and running."""
    changed = ctx.write(KEEPALIVED_CONF, render_keepalived(ctx.get("lb.keepalived"), ctx.get("address")), 0o600)
    # HAProxy may bind the floating address on the node that does not hold it.
    if ctx.write(NONLOCAL_SYSCTL, "net.ipv4.ip_nonlocal_bind = 1\n"):
        ctx.run(["sysctl", "-q", "-p", NONLOCAL_SYSCTL])
        changed = True
    if changed and ctx.run(["systemctl", "is-active", "--quiet", "keepalived"], check=False).returncode == 0:
        restart(ctx, "keepalived", "its configuration changed", lambda: require_active(ctx, "keepalived"))
    running = wait_serving(ctx, ["keepalived"], lambda: require_active(ctx, "keepalived"), "waiting for keepalived")
    return running or changed


def _runtime(ctx: Context, command: str) -> None:
    send = ctx.haproxy or admin_socket
    ctx.log("haproxy runtime API: " + command)
    answer = send(command)
    if answer and not answer.startswith(("IP changed", "no need to change", "Port changed")):
        if any(word in answer for word in ("No such", "Require", "Unknown", "invalid", "not found", "failed")):
            raise FirstbootError(f"haproxy refused `{command}`: {answer.splitlines()[0]}")


def _backend(ctx: Context, name: str | None) -> dict[str, Any]:
    backends = ctx.get("lb.backends") or []
    for backend in backends:
        if name in (None, backend.get("name")):
            if backend.get("follows"):
                raise FirstbootError("backend {} follows backend {}: its members are that one's".format(
                    backend["name"], backend["follows"]), hint="--backend " + str(backend["follows"]))
            return backend
    raise FirstbootError("no backend {!r} in this load balancer's settings".format(name or ""),
                         hint="backends: " + ", ".join(b.get("name", "?") for b in backends))


def pool_add(ctx: Context, name: str, address: str, port: int | None = None,
             backend_name: str | None = None) -> str:
    """Put a web node into a spare slot at run time and record it; the slot it took."""
    backend = _backend(ctx, backend_name)
    port = int(port or backend.get("port", 80))
    if any(s.get("name") == name for s in backend.get("servers") or []):
        raise FirstbootError("{} is already a listed server of backend {}".format(name, backend["name"]))
    pool = load_pool(ctx)
    members = pool.setdefault(backend["name"], {})
    slot = next((s for s, m in members.items() if m["name"] == name), None)
    if slot is None:
        free = [s for s in slots(ctx.get("lb"), backend) if s not in members]
        if not free:
            raise FirstbootError("backend {} has no spare slot left".format(backend["name"]),
                                 hint="raise lb.max_servers and run `golden-firstboot --rerun`")
        slot = free[0]
    # The pass-through backends that follow this one take the member in the same slot, on their own port.
    for each, each_port in [(backend, port)] + [(f, int(f.get("port", 443))) for f in _followers(ctx.get("lb"),
                                                                                               backend["name"])]:
        target = "{}/{}".format(each["name"], slot)
        _runtime(ctx, f"set server {target} addr {address} port {each_port}")
        _runtime(ctx, f"set server {target} state ready")
    members[slot] = {"name": name, "address": address, "port": port}
    ctx.write(POOL, json.dumps(pool, indent=2, sort_keys=True) + "\n")
    # The file follows the runtime state, so a later restart keeps the member; no reload is needed now.
    ctx.write(CLUSTER_CFG, render_haproxy(ctx.get("lb"), pool))
    return slot


def pool_remove(ctx: Context, name: str, backend_name: str | None = None) -> str | None:
    """Take a node added by pool_add out of rotation and free its slot; the slot, or None if absent."""
    backend = _backend(ctx, backend_name)
    pool = load_pool(ctx)
    members = pool.get(backend["name"], {})
    slot = next((s for s, m in members.items() if m["name"] == name), None)
    if slot is None:
        ctx.log("{} is not in backend {}: nothing to remove".format(name, backend["name"]))
        return None
    for each in [backend] + _followers(ctx.get("lb"), backend["name"]):
        target = "{}/{}".format(each["name"], slot)
        _runtime(ctx, f"set server {target} state maint")
        _runtime(ctx, "set server {} addr {} port {}".format(target, PARKED, int(each.get("port", 80))))
    del members[slot]
    ctx.write(POOL, json.dumps(pool, indent=2, sort_keys=True) + "\n")
    ctx.write(CLUSTER_CFG, render_haproxy(ctx.get("lb"), pool))
    return slot


STEPS = [haproxy, keepalived]
