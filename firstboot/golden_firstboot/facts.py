"""`golden-firstboot facts`: what only the agent knows about this host, for Prometheus, as a node-exporter
textfile (/var/lib/prometheus/node-exporter/golden.prom, written atomically: the exporter never reads half a file).

Run every 15 s by golden-facts.timer. The facts: first boot's result and each step's state (the status file),
the share watcher's verdict (its status on /run, stale after 10 s counts as down, as health.php counts it),
whether this load balancer holds its floating address (keepalived's work, read from the interfaces), each known
certificate's expiry, and the time of the last successful backup (a backup job touches BACKUP_MARK)."""

from __future__ import annotations

import calendar
import json
import os
import subprocess
import time
from typing import Any, Callable

TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
PROM = TEXTFILE_DIR + "/golden.prom"
STATUS = "/var/lib/golden/firstboot.json"
HOST = "/etc/golden/host.json"
SHARE_CONF = "/etc/golden/web-share.json"
SHARE_STATUS = "/run/golden-web/share.json"
SHARE_STALE = 10
BACKUP_MARK = "/var/lib/golden/backup-last-success"
BACKUP_KINDS = ("full", "binlog", "files")
#: Certificates the roles install: the web snakeoil pair, a Galera node's and an arbitrator's TLS.
CERTIFICATES = ("/etc/ssl/certs/ssl-cert-snakeoil.pem", "/etc/mysql/galera-tls/cert.pem",
                "/etc/golden/galera-tls/cert.pem")
COMMAND_TIMEOUT = 5
#: The step a run refused before any step ran (host.json lacks settings) is reported as.
SETTINGS_STEP = "settings"

HELP = {
    "golden_facts_timestamp_seconds": "When golden-firstboot facts last wrote this file.",
    "golden_firstboot_result": "First boot's result (done, failed, running, none): 1 for the current one.",
    "golden_firstboot_step": "Each first-boot step's state: 1 for its current one.",
    "golden_web_share_ok": "1 while the share watcher finds the shared docroot answering.",
    "golden_lb_virtual_address_held": "1 while this load balancer holds the floating address.",
    "golden_certificate_expiry_timestamp_seconds": "When the certificate expires (notAfter).",
    "golden_backup_last_success_timestamp_seconds": "When the last backup succeeded (BACKUP_MARK's mtime).",
}


def escape(value: str) -> str:
    """A label value in the text exposition format."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(samples: list[Any]) -> str:
    """The exposition text: each family's HELP and TYPE once, then its samples."""
    out: list[str] = []
    seen = set()
    for name, labels, value in samples:
        if name not in seen:
            seen.add(name)
            out += [f"# HELP {name} {HELP[name]}", f"# TYPE {name} gauge"]
        text = ",".join(f'{k}="{escape(v)}"' for k, v in sorted(labels.items()))
        out.append("{}{} {}".format(name, "{" + text + "}" if text else "", repr(float(value))))
    return "\n".join(out) + "\n"


def _json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def firstboot(status: dict[str, Any] | None) -> list[Any]:
    result = str((status or {}).get("result") or "none")
    samples = [("golden_firstboot_result", {"result": result}, 1)]
    for step_id, entry in sorted(((status or {}).get("steps") or {}).items()):
        samples.append(("golden_firstboot_step", {"step": step_id, "state": str(entry.get("state", "?"))}, 1))
    if result == "failed" and not any(labels["state"] == "failed" for _, labels, _ in samples[1:]):
        # refused before any step ran (missing settings): the alert names it as a step all the same
        samples.append(("golden_firstboot_step", {"step": SETTINGS_STEP, "state": "failed"}, 1))
    return samples


def share(conf: dict[str, Any] | None, status: dict[str, Any] | None, now: float) -> list[Any]:
    """The watcher's verdict on this web node's share; none on a host without one."""
    if not conf:
        return []
    fresh = bool(status) and abs(now - float(status.get("at") or 0)) <= SHARE_STALE  # type: ignore[union-attr]
    ok = 1 if fresh and status and status.get("ok") else 0
    labels = {"mount": str(conf.get("mount", "")), "source": str(conf.get("source", ""))}
    return [("golden_web_share_ok", labels, ok)]


def virtual_address(host: dict[str, Any] | None, addresses: Callable[[], list[str]]) -> list[Any]:
    """Whether this load balancer holds its keepalived address; none without one."""
    wanted = str(((host or {}).get("lb") or {}).get("keepalived", {}).get("virtual_address") or "")
    if not wanted:
        return []
    address = wanted.split("/")[0]
    return [("golden_lb_virtual_address_held", {"virtual_address": address}, int(address in addresses()))]


def interface_addresses() -> list[str]:
    """This host's IPv4 addresses, from `ip -o -4 addr show`."""
    try:
        out = subprocess.run(["ip", "-o", "-4", "addr", "show"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, timeout=COMMAND_TIMEOUT).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_addresses(out)


def parse_addresses(out: str) -> list[str]:
    """The addresses in `ip -o -4 addr show`'s output."""
    found = []
    for line in out.splitlines():
        fields = line.split()
        if "inet" in fields and fields.index("inet") + 1 < len(fields):
            found.append(fields[fields.index("inet") + 1].split("/")[0])
    return found


def openssl_enddate(path: str) -> float | None:
    """A certificate's notAfter as a Unix time, read by openssl; None when it cannot be read."""
    try:
        out = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in", path], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, timeout=COMMAND_TIMEOUT,
                             env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_enddate(out)


def parse_enddate(text: str) -> float | None:
    """`notAfter=Mar  1 12:00:00 2036 GMT` as a Unix time."""
    value = text.strip().partition("=")[2]
    try:
        return float(calendar.timegm(time.strptime(" ".join(value.split()), "%b %d %H:%M:%S %Y %Z")))
    except ValueError:
        return None


def certificates(root: str, enddate: Callable[[str], float | None]) -> list[Any]:
    samples = []
    for path in CERTIFICATES:
        full = os.path.join(root, path.lstrip("/"))
        if os.path.exists(full):
            when = enddate(full)
            if when is not None:
                samples.append(("golden_certificate_expiry_timestamp_seconds", {"path": path}, when))
    return samples


def backup(root: str) -> list[Any]:
    """The last good backup: BACKUP_MARK's mtime, and each kind's (BACKUP_MARK.KIND, the backup role's jobs)."""
    samples = []
    for kind in ("",) + BACKUP_KINDS:
        try:
            when = os.stat(os.path.join(root, (BACKUP_MARK + ("." + kind if kind else "")).lstrip("/"))).st_mtime
        except OSError:
            continue
        samples.append(("golden_backup_last_success_timestamp_seconds", {"kind": kind} if kind else {}, when))
    return samples


def collect(root: str = "/", now: float | None = None, addresses: Callable[[], list[str]] = interface_addresses,
            enddate: Callable[[str], float | None] = openssl_enddate) -> str:
    """Every fact of this host, as exposition text."""
    now = time.time() if now is None else now

    def under(path: str) -> str:
        return os.path.join(root, path.lstrip("/"))

    samples: list[Any] = [("golden_facts_timestamp_seconds", {}, now)]
    samples += firstboot(_json(under(STATUS)))
    samples += share(_json(under(SHARE_CONF)), _json(under(SHARE_STATUS)), now)
    samples += virtual_address(_json(under(HOST)), addresses)
    samples += certificates(root, enddate)
    samples += backup(root)
    return render(samples)


def write(text: str, path: str) -> None:
    """Atomically (a temporary name in the same directory, then a rename), readable by the exporter."""
    directory = os.path.dirname(path)
    os.makedirs(directory, 0o755, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"  # node-exporter reads *.prom only
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main(root: str = "/") -> int:
    write(collect(root), os.path.join(root, PROM.lstrip("/")))
    return 0
