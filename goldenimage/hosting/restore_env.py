"""`golden backup restore-env NAME --at TIME`: one environment put back as it was, the others untouched.

Its databases on the SQL writer: the agent there restores the whole server to TIME in a scratch server beside
the live one (from the backups of the host that backs the database up), dumps NAME's databases from it, dumps
the live ones into the archive, and replaces them (the replicas follow through the binlog); every restored table
is checked. Its site files on every web node, from that node's own files backups (SFTP uploads land on the node
that took them), each file checked against the snapshot before the live folder is moved into the archive. The
repository key never leaves the hosts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..apply.backup import RESTORE_TIMEOUT, agent_json, iso
from ..apply.inventory import load_inventory, match_cluster
from ..apply.transport import SSHOptions, SSHTransport
from ..core.errors import GoldenError, InputError
from ..core.yamlfile import display_path
from ..model.cluster import load_cluster
from ..model.cluster_check import resolve_roles
from ..render.cluster_backup import database_hosts
from .apply import Remote, TransportFactory, infrastructure


@dataclass
class RestoreEnvReport:
    name: str
    at: str
    databases: dict[str, Any] | None = None
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = []
        if self.databases is not None:
            tables = self.databases.get("tables") or []
            out.append(f"{self.name}: databases {', '.join(self.databases.get('databases') or [])} as of "
                       f"{self.databases.get('reached')} ({len(tables)} tables, "
                       f"{sum(int(t['rows']) for t in tables)} rows, every table checked)")
            out += [f"  {t['table']:<40} {t['rows']:>12} rows  checksum {t['checksum']}" for t in tables]
            if self.databases.get("archived"):
                out.append(f"  the databases replaced: {self.databases['archived']} on the writer")
        for host, part in sorted(self.files.items()):
            out.append(f"{self.name}: files on {host} as of {part.get('from')}: {part.get('files')} files, "
                       f"{part.get('bytes')} bytes, each checked against the snapshot (sha256, size, mode, owner, "
                       f"mtime); the folder replaced: {part.get('archived') or 'none'}")
        out += [f"{host}: FAILED: {reason}" for host, reason in sorted(self.failed.items())]
        return out

    @property
    def ok(self) -> bool:
        return not self.failed


def restore_environment(name: str, at: datetime, cluster_file: Path, inventory_file: Path, *,
                        options: SSHOptions, factory: TransportFactory = SSHTransport) -> RestoreEnvReport:
    """Environment `name`'s databases and files as of `at`, on the cluster's writer and web nodes."""
    infra = infrastructure(cluster_file)
    inventory = load_inventory(inventory_file)
    match_cluster(inventory, sorted(infra.host_names))
    cluster = load_cluster(cluster_file)
    if cluster.backup is None:
        raise InputError(f"{display_path(cluster_file)}: backup: missing: this cluster backs nothing up")
    roles, _ = resolve_roles(cluster, cluster_file.parent, display_path(cluster_file))
    backed = sorted(database_hosts(cluster, roles))
    report = RestoreEnvReport(name, iso(at))
    argv = ["backup", "restore-env", "--name", name, "--at", iso(at)]

    def agent(host: str, *extra: str) -> dict[str, Any]:
        remote = Remote(host, factory(inventory.hosts[host], options))
        try:
            remote.open({})
            return dict(agent_json(remote.run(*argv, *extra, timeout=RESTORE_TIMEOUT),
                                   f"{host}: restoring {name}'s {extra[1]}"))
        finally:
            remote.close()

    if infra.writer is not None:
        try:
            report.databases = agent(infra.writer, "--part", "databases", *(["--source", backed[0]] if backed else []))
        except GoldenError as exc:
            report.failed[infra.writer] = exc.message.splitlines()[0]
    for host in infra.web:
        try:
            part = agent(host, "--part", "files")
        except GoldenError as exc:
            report.failed[host] = exc.message.splitlines()[0]
            continue
        if not part.get("checked") or not isinstance(part.get("files"), int):
            # An agent that swapped the files in without checking them: not reported as restored.
            report.failed[host] = f"restoring {name}'s files: the host reported no check of what it restored"
        else:
            report.files[host] = part
    return report
