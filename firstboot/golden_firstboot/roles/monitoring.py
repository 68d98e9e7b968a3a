"""monitoring: the exporters baked into every image (disabled at bake) configured to listen on this host's
cluster address only, enabled and answering there, and golden-facts.timer writing the agent's own facts for
node-exporter's textfile collector. Runs when host.json has `monitoring` (the cluster file's section).

An exporter that does not answer on its address within the retry budget fails this step with one line naming
the unit, the address and what systemd says of it."""

from __future__ import annotations

from .. import facts
from ..services import ensure_running, require_active, restart, wait_serving
from ..steps import Context, step
from ..system import FirstbootError, SettingsError
from .mariadb import SQL_ROLES, mysql, rows

#: job (as `golden cluster monitoring` names it) -> the Debian unit that serves it; haproxy's is HAProxy itself.
UNITS = {"node": "prometheus-node-exporter", "mysqld": "prometheus-mysqld-exporter",
         "apache": "prometheus-apache-exporter"}
MYSQLD_CNF = "/etc/golden/mysqld-exporter.cnf"
# The account logs in through the unix socket as the unit's own user (unix_socket authentication): the password
# below is never checked, but the exporter refuses a [client] section without one.
MYSQLD_CNF_TEXT = ("# goldenimage first boot: the exporter's MariaDB account (unix_socket: no real password).\n"
                   "[client]\nuser=prometheus\npassword=unix_socket\nsocket=/run/mysqld/mysqld.sock\n")
#: Hardened hosts (nftables on): the exporters' ports answer the scrapers only, a rule loaded after the baseline.
NFT_RULES = "/etc/golden/monitoring.nft"
NFTABLES_CONF = "/etc/nftables.conf"
NFT_INCLUDE = f'include "{NFT_RULES}"'
#: The exporters bind the cluster address, which a boot may bring up after them: started after the network is
#: online, and retried every 5 s for as long as it takes (Debian's units give up after 5 quick failures).
DROPIN = "/etc/systemd/system/{}.service.d/golden-monitoring.conf"
DROPIN_TEXT = ("# goldenimage first boot: the exporter binds the cluster address (golden-firstboot).\n"
               "[Unit]\nAfter=network-online.target\nWants=network-online.target\nStartLimitIntervalSec=0\n"
               "[Service]\nRestart=always\nRestartSec=5\n")
FACTS_SERVICE = "/etc/systemd/system/golden-facts.service"
FACTS_TIMER = "/etc/systemd/system/golden-facts.timer"


def listen(ctx: Context, job: str) -> tuple[str, int]:
    """(address, port) an exporter listens on: the host's cluster address and the port host.json gives."""
    ports = ctx.get("monitoring.ports") or {}
    try:
        return str(ctx.need("address", "exporters listen on the cluster address")), int(ports[job])
    except (KeyError, TypeError, ValueError):
        raise SettingsError(f"/etc/golden/host.json: monitoring.ports.{job}: missing or not a port") from None


def defaults_file(ctx: Context, job: str) -> str:
    """/etc/default/<unit>: ARGS (and nothing else) as the Debian unit reads them."""
    address, port = listen(ctx, job)
    flag = "--telemetry.address" if job == "apache" else "--web.listen-address"
    args = [f"{flag}={address}:{port}"]
    if job == "mysqld":
        args.append("--config.my-cnf=" + MYSQLD_CNF)
    return ("# goldenimage first boot: listen on the cluster address only (golden-firstboot, host.json monitoring).\n"
            'ARGS="{}"\n'.format(" ".join(args)))


def mysqld_account(ctx: Context) -> bool:
    """prometheus@localhost by unix_socket, allowed to read status and replication state: created on each
    server for itself (sql_log_bin off: a replica never receives its primary's copy and stops on a duplicate)."""
    granted = rows(ctx, "SELECT COUNT(*) FROM mysql.user WHERE User = 'prometheus' AND Host = 'localhost' "
                        "AND Process_priv = 'Y' AND Repl_client_priv = 'Y';\n")
    if granted and granted[0][0] != "0":
        return False
    ctx.log("account prometheus@localhost (unix_socket) for the mysqld exporter")
    mysql(ctx, "SET SESSION sql_log_bin = 0;\n"
               "CREATE USER IF NOT EXISTS 'prometheus'@'localhost' IDENTIFIED VIA unix_socket;\n"
               "GRANT PROCESS, REPLICATION CLIENT, SELECT ON *.* TO 'prometheus'@'localhost';\n")
    # MariaDB 10.5.9 and later need SLAVE MONITOR for SHOW SLAVE STATUS; older servers do not know the name.
    ctx.run(["mysql", "--protocol=socket", "--user=root", "--batch"], check=False,
            input="SET SESSION sql_log_bin = 0;\nGRANT SLAVE MONITOR ON *.* TO 'prometheus'@'localhost';\n")
    return True


def answering(ctx: Context, unit: str, address: str, port: int) -> None:
    """A check for wait_serving: the unit is active and something accepts connections on address:port."""
    require_active(ctx, unit)
    if not ctx.probe(address, port):
        raise FirstbootError(f"{unit} does not answer on {address}:{port}")


def serve(ctx: Context, unit: str, address: str, port: int, changed: bool) -> bool:
    """The unit enabled, (re)started when its configuration changed, answering on address:port; FirstbootError
    in one line (the unit, its address, why: systemd's state and journal, or the silent port) when it does not
    within the budget."""
    def check() -> None:
        answering(ctx, unit, address, port)

    try:
        if changed and ctx.run(["systemctl", "is-active", "--quiet", unit], check=False).returncode == 0:
            restart(ctx, unit, "it listens on the cluster address now", check)
        return wait_serving(ctx, [unit], check, f"waiting for {unit} on {address}:{port}") or changed
    except FirstbootError as exc:
        raise FirstbootError(f"{unit} does not answer on {address}:{port}: {exc.message.splitlines()[0]}",
                             hint=f"journalctl -u {unit}; then `golden-firstboot --rerun`") from None


def render_nft(ports: list[int], scrapers: list[str]) -> str:
    """A table of its own (replaced whole on each load) whose input chain drops the exporters' ports for anyone
    but the scrapers, IPv6 included."""
    dports = ", ".join(str(p) for p in sorted(ports))
    lines = ["# goldenimage first boot: the exporters answer the scrapers only (golden-firstboot).",
             "table inet golden_monitoring", "delete table inet golden_monitoring", "table inet golden_monitoring {",
             "    chain input {", "        type filter hook input priority -1; policy accept;"]
    if scrapers:
        lines.append("        tcp dport {{ {} }} ip saddr {{ {} }} accept".format(dports, ", ".join(scrapers)))
    lines += [f"        tcp dport {{ {dports} }} drop", "    }", "}"]
    return "\n".join(lines) + "\n"


def firewall(ctx: Context, ports: list[int]) -> bool:
    """On a hardened host: the rule loaded now, and included by nftables.conf (whose `flush ruleset` would
    drop it at the next start of nftables.service)."""
    scrapers = [str(s) for s in ctx.get("monitoring.scrapers") or []]
    changed = ctx.write(NFT_RULES, render_nft(ports, scrapers), 0o600)
    conf = ctx.read(NFTABLES_CONF)
    if conf is not None and NFT_INCLUDE not in conf.splitlines():
        ctx.write(NFTABLES_CONF, conf.rstrip("\n") + "\n# goldenimage first boot: the exporters' rule.\n" +
                  NFT_INCLUDE + "\n", 0o700)
        changed = True
    if changed:
        ctx.run(["nft", "-f", NFT_RULES])
    return changed


def facts_units() -> tuple[str, str]:
    service = "\n".join([
        "[Unit]", f"Description=goldenimage: this host's facts for node-exporter's textfile ({facts.PROM})", "",
        "[Service]", "Type=oneshot", "ExecStart=/usr/local/sbin/golden-firstboot facts", "",
    ])
    timer = "\n".join([
        "[Unit]", "Description=goldenimage: refresh this host's facts every 15 s", "",
        "[Timer]", "OnBootSec=20s", "OnUnitActiveSec=15s", "AccuracySec=1s", "",
        "[Install]", "WantedBy=timers.target", "",
    ])
    return service, timer


@step("monitoring.exporters", activate=["monitoring"], require=["address", "monitoring.ports"])
def exporters(ctx: Context) -> bool:
    """Each exporter of this host listening on its cluster address and answering there; the agent's facts
    refreshed every 15 s for node-exporter's textfile collector."""
    changed = False
    jobs = ctx.get("monitoring.ports") or {}
    if "mysqld" in jobs and set(SQL_ROLES) & set(ctx.roles):
        changed = ctx.write(MYSQLD_CNF, MYSQLD_CNF_TEXT, 0o640) or changed
        ctx.chown(ctx.path(MYSQLD_CNF), "root", "prometheus")
        changed = mysqld_account(ctx) or changed
    for job, unit in UNITS.items():
        if job not in jobs:
            continue
        written = ctx.write("/etc/default/" + unit, defaults_file(ctx, job))
        if ctx.write(DROPIN.format(unit), DROPIN_TEXT):
            ctx.run(["systemctl", "daemon-reload"])
            written = True
        address, port = listen(ctx, job)
        changed = serve(ctx, unit, address, port, written) or changed
    if "haproxy" in jobs and "lb" in ctx.roles:
        address, port = listen(ctx, "haproxy")  # the lb.haproxy step has written its frontend
        changed = serve(ctx, "haproxy", address, port, False) or changed
    if "hardened" in ctx.roles:
        changed = firewall(ctx, [int(p) for p in jobs.values()]) or changed
    service, timer = facts_units()
    units_changed = ctx.write(FACTS_SERVICE, service)
    units_changed = ctx.write(FACTS_TIMER, timer) or units_changed
    if units_changed:
        ctx.run(["systemctl", "daemon-reload"])
    # Once now, so that the file is there when first boot ends; the timer keeps it fresh.
    ctx.run(["systemctl", "start", "golden-facts.service"], timeout=60)
    return ensure_running(ctx, "golden-facts.timer") or units_changed or changed


STEPS = [exporters]
