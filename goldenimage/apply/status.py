"""`golden cluster status`: one table of a running cluster, read from the hosts themselves over SSH (the agent,
shipped for the session, answers `golden-firstboot facts --json`: the facts the exporters give Prometheus), for an
operator without Prometheus. Hosts are asked in parallel; one that cannot be reached is a row that says why,
never a hang."""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from ..core.errors import GoldenError
from ..core.inert import inert
from ..model.cluster import Thresholds, load_cluster
from .cluster import TransportFactory
from .inventory import load_inventory, match_cluster
from .remote_agent import RemoteAgent
from .transport import SSHOptions, SSHTransport

REMOTE_PREFIX = "golden-status."
STATUS_TIMEOUT = 60.0
DEFAULT_PARALLEL = 16


@dataclass
class HostStatus:
    """One host's row: its profile, and what its agent said (or why it could not be asked)."""

    name: str
    profile: str
    facts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.problems


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0:
        return "expired"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _database(state: dict[str, Any] | None) -> str:
    if not state:
        return "-"
    if state.get("kind") == "replica" and state.get("state") == "running":
        return f"replica running, {state.get('lag')} s behind"
    if state.get("kind") == "galera":
        return f"galera {state.get('state')}, {state.get('cluster', '?')} of {state.get('size')}"
    return f"{state.get('kind')} {state.get('state')}"


#: The check a load balancer reports on its floating address: not a fault on the one that does not hold it.
VIRTUAL_ADDRESS_CHECK = "virtual address"


def health_problems(facts: dict[str, Any], skip: Sequence[str] = ()) -> list[str]:
    """First boot not done, and each failed health check (but those named in skip), one line each."""
    problems = []
    firstboot = facts.get("firstboot") or {}
    if firstboot.get("result") != "done":
        failed = ", ".join(firstboot.get("failed_steps") or [])
        problems.append(f"first boot {firstboot.get('result')}" + (f" ({failed})" if failed else ""))
    for check in facts.get("checks") or []:
        if not check.get("ok") and check.get("name") not in skip:
            problems.append(f"{check.get('name')}: {check.get('detail')}")
    return problems


def holds_virtual_address(facts: dict[str, Any]) -> bool | None:
    """Whether this load balancer holds its floating address; None for a host without one."""
    for check in facts.get("checks") or []:
        if check.get("name") == VIRTUAL_ADDRESS_CHECK:
            return bool(check.get("ok"))
    return None


def judge(status: HostStatus, thresholds: Thresholds, has_backups: bool) -> HostStatus:
    """The problems an operator must see, from the facts and the cluster's alert thresholds. A load balancer not
    holding its floating address is no fault by itself: `address_holders` judges that across its group."""
    facts = status.facts
    status.problems += health_problems(facts, skip=(VIRTUAL_ADDRESS_CHECK,))
    database = facts.get("database") or {}
    if database.get("kind") == "replica" and isinstance(database.get("lag"), int) \
            and database["lag"] > thresholds.replica_lag_seconds:
        status.problems.append(f"replica {database['lag']} s behind (threshold {thresholds.replica_lag_seconds})")
    expires = facts.get("certificate_expires_in_seconds")
    if isinstance(expires, int) and expires < thresholds.certificate_days * 86400:
        status.problems.append(f"a certificate expires in {_age(expires)} (threshold {thresholds.certificate_days}d)")
    age = facts.get("backup_age_seconds")
    if has_backups and (age is None or age > thresholds.backup_hours * 3600):
        status.problems.append("no backup on record" if age is None else
                               f"last backup {_age(age)} ago (threshold {thresholds.backup_hours}h)")
    return status


def ask(name: str, profile: str, transport: Any) -> HostStatus:
    """One host's facts through the shipped agent; an unreachable host or an unreadable answer is the row's error."""
    status = HostStatus(name, profile)
    remote = RemoteAgent(name, transport, REMOTE_PREFIX)
    try:
        remote.open()
        proc = remote.run("facts", "--json", timeout=STATUS_TIMEOUT)
    except GoldenError as exc:
        status.error = exc.message.splitlines()[0][:200]
        return status
    finally:
        remote.close()
    try:
        facts = json.loads(proc.stdout)
        if not isinstance(facts, dict):
            raise ValueError("not an object")
    except ValueError:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        status.error = f"the agent gave no status (exit {proc.returncode}): {tail[-1][:160] if tail else 'no output'}"
        return status
    status.facts = facts
    return status


def cluster_status(cluster_file: Path, inventory_file: Path, *, options: SSHOptions,
                   factory: TransportFactory = SSHTransport, parallel: int = DEFAULT_PARALLEL) -> list[HostStatus]:
    """Every host's status, in cluster-file order. Input errors raise before any host is asked."""
    cluster = load_cluster(cluster_file)
    inventory = load_inventory(inventory_file)
    match_cluster(inventory, [h.name for h in cluster.hosts])
    thresholds = cluster.monitoring.thresholds if cluster.monitoring else Thresholds()
    has_backups = bool(getattr(cluster, "backup", None))

    def one(name: str, profile: str) -> HostStatus:
        return judge(ask(name, profile, factory(inventory.hosts[name], options)), thresholds, has_backups)

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(cluster.hosts)))) as pool:
        futures = [pool.submit(one, h.name, h.profile) for h in cluster.hosts]
        statuses = [f.result() for f in futures]
    groups: dict[str, list[HostStatus]] = {}
    for host, status in zip(cluster.hosts, statuses, strict=True):
        if host.virtual_address is not None:
            groups.setdefault(str(host.virtual_address), []).append(status)
    for address, members in groups.items():
        address_holders(address, members)
    return statuses


def address_holders(address: str, members: Sequence[HostStatus]) -> None:
    """A floating address must be held by exactly one of the load balancers that share it: by none, each reachable
    one gets the problem; by two (split brain), both do."""
    holders = [s for s in members if not s.error and holds_virtual_address(s.facts)]
    if len(holders) == 1:
        return
    problem = (f"{VIRTUAL_ADDRESS_CHECK} {address}: held by no load balancer" if not holders else
               f"{VIRTUAL_ADDRESS_CHECK} {address}: held by {len(holders)} at once ("
               + ", ".join(s.name for s in holders) + ")")
    for status in (holders or [s for s in members if not s.error]):
        status.problems.append(problem)


def status_table(statuses: Sequence[HostStatus]) -> Table:
    table = Table(title="cluster status", show_lines=False)
    for column in ("host", "role", "first boot", "health", "database", "backup age", "certificate"):
        table.add_column(column)
    for s in statuses:
        facts = s.facts
        roles = ",".join(facts.get("roles") or []) or s.profile
        if s.error:
            table.add_row(inert(s.name), inert(s.profile), "?", inert("unreachable: " + s.error), "-", "-", "-")
            continue
        health = "ok" if not s.problems else "; ".join(s.problems)
        table.add_row(inert(s.name), inert(roles), inert(str((facts.get("firstboot") or {}).get("result"))),
                      inert(health), inert(_database(facts.get("database"))),
                      _age(facts.get("backup_age_seconds")), _age(facts.get("certificate_expires_in_seconds")))
    return table


def status_summary(statuses: Sequence[HostStatus]) -> tuple[str, int]:
    """The last line and the exit status: 0 when every host is healthy, 1 otherwise (the hosts named)."""
    bad = [s.name for s in statuses if not s.ok]
    line = f"{len(statuses) - len(bad)} of {len(statuses)} host(s) healthy" + (
        f"; look at: {', '.join(bad)}" if bad else "")
    return line, 1 if bad else 0
