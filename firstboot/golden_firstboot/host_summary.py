"""`golden-firstboot facts --json`: this host's state as one JSON object, for `golden cluster status` (an operator
without Prometheus). The same facts as the textfile collector's (first boot, backup, certificates, the load
balancer's address), plus what the exporters tell Prometheus about the role: the web health endpoint, HAProxy,
replication or Galera state, the NFS server, and systemd's failed units. Every probe is bounded in time; one
that cannot answer is a failed check with its reason, never a hang."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Sequence

from . import facts

IMAGE = "/etc/golden/image.json"
COMMAND_TIMEOUT = 10
MYSQL = ["mysql", "--protocol=socket", "--user=root", "--batch", "--connect-timeout=5"]
#: The web role's health endpoint (the load balancers check the same path).
WEB_HEALTH = "http://127.0.0.1/healthz"
#: Where HTTPS ends on a web node; the load balancers' port 443 pool also checks that it accepts connections.
WEB_TLS = ("127.0.0.1", 443)
SQL_ROLES = ("sql-primary", "sql-replica", "sql-galera")

Command = Callable[[Sequence[str], str], "tuple[int, str]"]


def command(argv: Sequence[str], stdin: str = "") -> tuple[int, str]:
    """Run argv, bounded; (exit status, stdout and stderr). A missing program is status 127."""
    try:
        proc = subprocess.run(list(argv), input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=COMMAND_TIMEOUT,
                              env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C"})
    except OSError as exc:
        return 127, str(exc)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {COMMAND_TIMEOUT} s"
    return proc.returncode, proc.stdout


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": bool(ok), "detail": detail}


def vertical(text: str) -> dict[str, str]:
    """The first row of a `\\G` query as a dict."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line and not line.lstrip().startswith("*"):
            key, _, value = line.partition(":")
            out[key.strip()] = value.strip()
    return out


def unit_active(run: Command, unit: str) -> dict[str, Any]:
    code, out = run(["systemctl", "is-active", unit], "")
    return check(unit, code == 0, last_line(out))


def http_status(url: str) -> str:
    """The HTTP status of GET url as text, or the reason there is none (bounded by COMMAND_TIMEOUT)."""
    try:
        with urllib.request.urlopen(url, timeout=COMMAND_TIMEOUT) as response:  # noqa: S310 (loopback only)
            return str(response.status)
    except urllib.error.HTTPError as exc:
        return str(exc.code)
    except (OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))[:200]


def tcp_accepts(host: str, port: int) -> str:
    """'accepts' when a TCP connection to host:port opens (bounded by COMMAND_TIMEOUT), else the reason."""
    try:
        with socket.create_connection((host, port), timeout=COMMAND_TIMEOUT):
            return "accepts"
    except OSError as exc:
        return str(exc.strerror or exc)[:200]


def web(run: Command, http: Callable[[str], str],
        connect: Callable[[str, int], str] = tcp_accepts) -> list[dict[str, Any]]:
    status = http(WEB_HEALTH)
    tls = connect(*WEB_TLS)
    return [unit_active(run, "apache2"),
            check("health endpoint", status == "200", "HTTP " + status if status.isdigit() else status),
            # out of the load balancers' HTTPS pool while it refuses, even with the health endpoint answering
            check("https port", tls == "accepts", f"{WEB_TLS[0]}:{WEB_TLS[1]} {tls}")]


def replication(run: Command) -> tuple[dict[str, Any], dict[str, Any]]:
    """The replica's threads and lag: (the check, the state for the table)."""
    code, out = run(MYSQL, "SHOW SLAVE STATUS\\G\n")
    if code != 0:
        return check("replication", False, last_line(out)), {"kind": "replica", "state": "unknown"}
    row = vertical(out)
    if not row:
        return check("replication", False, "not a replica (SHOW SLAVE STATUS is empty)"), \
            {"kind": "replica", "state": "none"}
    io, sql, lag = row.get("Slave_IO_Running", "?"), row.get("Slave_SQL_Running", "?"), row.get(
        "Seconds_Behind_Master", "NULL")
    state = {"kind": "replica", "io": io, "sql": sql, "lag": None if lag == "NULL" else int(lag),
             "state": "running" if io == "Yes" and sql == "Yes" else "stopped"}
    error = row.get("Last_IO_Error") or row.get("Last_SQL_Error") or ""
    detail = f"IO {io} SQL {sql}, {lag} s behind" + (": " + error[:160] if error else "")
    return check("replication", state["state"] == "running", detail), state


def galera(run: Command) -> tuple[dict[str, Any], dict[str, Any]]:
    code, out = run(MYSQL + ["--skip-column-names"],
                    "SHOW GLOBAL STATUS WHERE Variable_name IN "
                    "('wsrep_local_state_comment','wsrep_cluster_size','wsrep_cluster_status');\n")
    if code != 0:
        return check("galera", False, last_line(out)), {"kind": "galera", "state": "unknown"}
    values = dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)
    comment = values.get("wsrep_local_state_comment", "?")
    size = values.get("wsrep_cluster_size", "?")
    state = {"kind": "galera", "state": comment, "size": int(size) if size.isdigit() else None,
             "cluster": values.get("wsrep_cluster_status", "?")}
    ok = comment == "Synced" and state["cluster"] == "Primary"
    return check("galera", ok, "{}, cluster {} of {}".format(comment, state["cluster"], size)), state


def sql(run: Command, roles: Sequence[str]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    code, out = run(MYSQL + ["--skip-column-names"], "SELECT 1;\n")
    checks = [check("mariadb", code == 0 and out.strip() == "1", "answers" if code == 0 else last_line(out))]
    state = None
    if "sql-replica" in roles:
        result, state = replication(run)
        checks.append(result)
    elif "sql-galera" in roles:
        result, state = galera(run)
        checks.append(result)
    elif "sql-primary" in roles:
        state = {"kind": "primary", "state": "writer"}
    return checks, state


def failed_units(run: Command) -> dict[str, Any]:
    code, out = run(["systemctl", "list-units", "--state=failed", "--no-legend", "--plain"], "")
    if code != 0:
        return check("systemd", False, last_line(out))
    units = [line.split()[0] for line in out.splitlines() if line.strip()]
    return check("systemd", not units, "failed: " + ", ".join(units) if units else "no failed unit")


def summary(root: str = "/", now: float | None = None, run: Command = command,
            addresses: Callable[[], list[str]] = facts.interface_addresses,
            enddate: Callable[[str], float | None] = facts.openssl_enddate,
            http: Callable[[str], str] = http_status,
            connect: Callable[[str, int], str] = tcp_accepts) -> dict[str, Any]:
    """This host's state: roles, first boot, checks (each with ok and a one-line detail), the replication or
    Galera state, the backup's age and the nearest certificate expiry (seconds), and `healthy`."""
    now = time.time() if now is None else now

    def under(path: str) -> str:
        return os.path.join(root, path.lstrip("/"))

    image = facts._json(under(IMAGE)) or {}
    roles = [str(r) for r in image.get("roles") or []]
    status = facts._json(under(facts.STATUS)) or {}
    failed_steps = sorted(k for k, v in (status.get("steps") or {}).items() if (v or {}).get("state") == "failed")
    checks: list[dict[str, Any]] = []
    database = None
    if "web" in roles:
        checks += web(run, http, connect)
    if "lb" in roles:
        checks.append(unit_active(run, "haproxy"))
        for _, labels, held in facts.virtual_address(facts._json(under(facts.HOST)), addresses):
            checks.append(check("virtual address", bool(held), "{} {}".format(
                labels["virtual_address"], "held" if held else "held by the peer")))
    if any(r in SQL_ROLES for r in roles):
        sql_checks, database = sql(run, roles)
        checks += sql_checks
    if "nfs" in roles:
        checks.append(unit_active(run, "nfs-server"))
    for _, labels, ok in facts.share(facts._json(under(facts.SHARE_CONF)), facts._json(under(facts.SHARE_STATUS)),
                                     now):
        checks.append(check("web share", bool(ok), "{} {}".format(labels["mount"], "answers" if ok else "down")))
    checks.append(failed_units(run))
    backups = facts.backup(root)
    expiries = [value for _, _, value in facts.certificates(root, enddate)]
    result = str(status.get("result") or "none")
    return {
        "roles": roles,
        "firstboot": {"result": result, "failed_steps": failed_steps},
        "checks": checks,
        "database": database,
        "backup_age_seconds": int(now - backups[0][2]) if backups else None,
        "certificate_expires_in_seconds": int(min(expiries) - now) if expiries else None,
        "healthy": result == "done" and all(c["ok"] for c in checks),
    }


def main(root: str = "/") -> int:
    print(json.dumps(summary(root), indent=2, sort_keys=True))
    return 0
