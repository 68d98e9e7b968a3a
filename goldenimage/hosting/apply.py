"""`golden env apply`: the environments of the data, made to exist on the infrastructure a cluster file describes.

Everything is checked before any host is touched: the environment files (every problem at once), the cluster
file, the inventory against it, and the batch against the agent's own schema. Then, over SSH, with the same
agent zipapp `golden apply` ships: the SQL writer first (databases and accounts; it keeps each password and
gives it back), then every web node in parallel (accounts, trees, pools, sites, database.ini), then the
certificates that are missing or due, issued once and installed on every web node. A host or an environment
that fails is reported with its reason; the others go on, and the next apply retries it."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..apply.inventory import load_inventory, match_cluster
from ..apply.remote_agent import RemoteAgent
from ..apply.target import SSHTarget
from ..apply.transport import SSHOptions, SSHTransport, Transport
from ..core.errors import GoldenError, InputError
from ..core.yamlfile import display_path
from ..model.cluster import grant_host, load_cluster
from ..model.cluster_check import resolve_roles
from ..model.environments import ENV_HOMES as DEFAULT_ROOT
from ..model.environments import SCHEMA, agent_batch, load_environments
from ..model.profile_schema import Role

TransportFactory = Callable[[SSHTarget, SSHOptions], Transport]
BATCH = "env-batch.json"
CERTS = "env-certs"
REMOTE_PREFIX = "golden-env."


@dataclass(frozen=True)
class Infrastructure:
    """Where environments go: the web nodes (every one serves every site) and the SQL writer."""

    web: tuple[str, ...]
    writer: str | None
    db_host: str
    db_address: str | None
    host_names: frozenset[str]
    cluster_domains: frozenset[str]


@dataclass
class EnvReport:
    """What an apply did (or would do), by environment and by host."""

    changes: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    hosts_failed: dict[str, str] = field(default_factory=dict)
    undeclared: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    unchanged: set[str] = field(default_factory=set)
    declared: list[str] = field(default_factory=list)

    def lines(self, check: bool) -> list[str]:
        out = list(self.changes)
        out += [f"{name}: FAILED: {reason}" for name, reason in sorted(self.failed.items())]
        out += [f"host {name}: FAILED: {reason}" for name, reason in sorted(self.hosts_failed.items())]
        out += [f"{name}: no longer declared: kept (--prune removes it after a dump and an archive)"
                for name in sorted(self.undeclared)]
        verb = "would change" if check else "changed"
        out.append(f"{verb}: {len(self.changes)}, environments: {len(self.declared)}, failed: {len(self.failed)}"
                   + (f", hosts failed: {', '.join(sorted(self.hosts_failed))}" if self.hosts_failed else ""))
        return out

    @property
    def ok(self) -> bool:
        return not self.failed and not self.hosts_failed


def infrastructure(cluster_file: Path) -> Infrastructure:
    """The web nodes and the SQL writer of a cluster file (its hosts' roles come from their profiles)."""
    cluster = load_cluster(cluster_file)
    roles, errors = resolve_roles(cluster, cluster_file.parent, display_path(cluster_file))
    if errors:
        from ..model.cluster import ClusterErrors

        raise ClusterErrors(errors)
    web = tuple(h.name for h in cluster.hosts if Role.WEB in roles[h.name])
    writers = ([h for h in cluster.hosts if Role.SQL_PRIMARY in roles[h.name]]
               or [h for h in cluster.hosts if Role.SQL_GALERA in roles[h.name]])
    if not web:
        raise InputError(f"{display_path(cluster_file)}: hosts: no host has the web role: environments need one")
    domains = {v.server_name for v in cluster.vhosts} | {a for v in cluster.vhosts for a in v.aliases}
    return Infrastructure(web=web, writer=writers[0].name if writers else None,
                          db_host=grant_host(str(cluster.network), cluster.network),
                          db_address=str(writers[0].address) if writers else None,
                          host_names=frozenset(h.name for h in cluster.hosts), cluster_domains=frozenset(domains))


class Remote(RemoteAgent):
    """One host's session: the agent and a batch in a private temporary directory, removed at the end."""

    def __init__(self, name: str, transport: Transport) -> None:
        super().__init__(name, transport, REMOTE_PREFIX)

    def agent(self, *args: str, secrets: Sequence[str] = ()) -> dict[str, Any]:
        """Run `golden-firstboot env ARGS`; its JSON report (the last line of its stdout)."""
        proc = self.run("env", *args, secrets=secrets)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        try:
            report = json.loads(lines[-1]) if lines else None
        except ValueError:
            report = None
        if not isinstance(report, dict):
            tail = [line.removeprefix("golden-firstboot: ") for line in proc.stderr.splitlines()
                    if "error:" in line or "hint:" in line]
            raise GoldenError(f"{self.name}: env {args[0]} failed (exit {proc.returncode}): "
                              + ("; ".join(tail) or proc.stderr.strip()[-300:] or "no report"))
        return report


def _merge(report: EnvReport, host: str, part: dict[str, Any]) -> None:
    report.changes += [f"{host}: {line}" for line in part.get("changes") or []]
    for name, reason in (part.get("failed") or {}).items():
        report.failed.setdefault(str(name), f"{host}: {reason}")
    report.undeclared |= set(part.get("undeclared") or [])
    report.removed |= set(part.get("removed") or [])


def apply_environments(
    env_files: Sequence[Path],
    cluster_file: Path,
    inventory_file: Path,
    *,
    options: SSHOptions,
    check: bool = False,
    prune: bool = False,
    root: str = DEFAULT_ROOT,
    factory: TransportFactory = SSHTransport,
    certificates: Callable[[list[Remote], dict[str, list[str]], EnvReport], None] | None = None,
) -> EnvReport:
    """Apply (or with check, compare) the environments of `env_files` on the cluster's hosts."""
    infra = infrastructure(cluster_file)
    inventory = load_inventory(inventory_file)
    match_cluster(inventory, sorted(infra.host_names))
    declared = load_environments(env_files, reserved_domains=infra.cluster_domains,
                                 reserved_names=infra.host_names)
    envs = [d.env for d in declared]
    if infra.writer is None and any(env.databases for env in envs):
        raise InputError(f"{display_path(cluster_file)}: hosts: no sql-primary or sql-galera host, and environments "
                         "ask for databases", hint="set `databases: 0` or add a SQL writer to the cluster")
    batch = agent_batch(envs, root, infra.db_host)
    if infra.db_address:
        batch["db_address"] = infra.db_address
    report = EnvReport(declared=[env.name for env in envs])
    flags = (["--check"] if check else []) + (["--prune"] if prune else [])
    credentials: dict[str, str] = {}
    if infra.writer is not None:
        writer = Remote(infra.writer, factory(inventory.hosts[infra.writer], options))
        try:
            # every environment has its account (it may create databases under its prefix), databases or not
            writer.open({BATCH: json.dumps(batch)})
            part = writer.agent("apply", "--part", "sql", "--data", f"{writer.dir}/{BATCH}", *flags)
            credentials = {str(k): str(v) for k, v in (part.pop("credentials", None) or {}).items()}
            _merge(report, infra.writer, part)
        except GoldenError as exc:
            report.hosts_failed[infra.writer] = exc.message.splitlines()[0]
        finally:
            writer.close()
    web_batch = dict(batch, environments=[
        dict(e, db_password=credentials[e["name"]]) if e["name"] in credentials else e
        for e in batch["environments"]])
    problems = SCHEMA.check(web_batch, web=True)
    if problems:  # the writer's answer is input too
        raise GoldenError(f"{infra.writer}: the passwords it gave are refused: {problems[0]}")
    secrets = list(credentials.values())
    remotes: list[Remote] = []

    def web(name: str) -> tuple[str, dict[str, Any] | str]:
        remote = Remote(name, factory(inventory.hosts[name], options))
        remotes.append(remote)
        try:
            remote.open({BATCH: json.dumps(web_batch)})
            return name, remote.agent("apply", "--part", "web", "--data", f"{remote.dir}/{BATCH}", *flags,
                                      secrets=secrets)
        except GoldenError as exc:
            return name, exc.message.splitlines()[0]

    try:
        with ThreadPoolExecutor(max_workers=min(8, len(infra.web))) as pool:
            for node, answer in pool.map(web, infra.web):
                if isinstance(answer, str):
                    report.hosts_failed[node] = answer
                else:
                    _merge(report, node, answer)
        if certificates is not None and not check and not report.hosts_failed:
            live = {env.name: list(env.domains) for env in envs if env.name not in report.failed}
            certificates(remotes, live, report)
    finally:
        for remote in remotes:
            remote.close()
    return report


def list_environments(cluster_file: Path, inventory_file: Path, *, options: SSHOptions,
                      factory: TransportFactory = SSHTransport) -> dict[str, dict[str, Any]]:
    """The environments the web nodes have, read from the hosts: name -> what was applied, with the nodes that
    have it (an environment missing from a node shows it)."""
    infra = infrastructure(cluster_file)
    inventory = load_inventory(inventory_file)
    match_cluster(inventory, sorted(infra.host_names))
    found: dict[str, dict[str, Any]] = {}
    for name in infra.web:
        remote = Remote(name, factory(inventory.hosts[name], options))
        try:
            remote.open({})
            listed = remote.agent("list", "--part", "web")
        finally:
            remote.close()
        for env_name, env in (listed.get("environments") or {}).items():
            entry = found.setdefault(str(env_name), dict(env, nodes=[]))
            entry["nodes"].append(name)
    return dict(sorted(found.items()))
