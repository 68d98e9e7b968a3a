"""The cluster file's `backup` section as each host's host.json `backup` (model/backup.py HostBackup): which
host backs up the database (the replica where a primary has one, so that the writer is not loaded; the last
sql-galera node) and which backs up files (nfs hosts their exports, web hosts without a share their document
roots). Every SQL host gets the repository and its key, so that a fresh one can be restored onto (`golden
backup restore`); a host gets timers only for what it backs up. Other hosts get no section."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..model.backup import HostBackup, binlog_max_age, max_age
from ..model.cluster import Cluster, Host
from ..model.cluster_check import Roles
from ..model.environments import ENV_HOMES
from ..model.profile_schema import SQL_ROLES, Role

#: The web role's document root when neither the vhost nor the host says otherwise (firstboot roles/web.py).
DEFAULT_DOCROOT = "/var/www/html"


def database_hosts(cluster: Cluster, roles: Roles) -> set[str]:
    """The hosts that back up a database: per sql-primary its last replica (else itself); the last Galera node."""
    chosen = set()
    for host in cluster.hosts:
        if Role.SQL_PRIMARY in roles.get(host.name, ()):
            replicas = [h.name for h in cluster.hosts
                        if h.primary == host.name and Role.SQL_REPLICA in roles.get(h.name, ())]
            chosen.add(replicas[-1] if replicas else host.name)
    galera = [h.name for h in cluster.hosts if Role.SQL_GALERA in roles.get(h.name, ())]
    if galera:
        chosen.add(galera[-1])
    return chosen


def file_paths(cluster: Cluster, roles: Roles, host: Host) -> list[str]:
    """What this host backs up as files: an nfs host's exports; a web host's document roots when it has no share,
    and its environments' homes (each web node's own: SFTP uploads land on the node that took them; the job
    skips the folder until `golden env apply` made the first environment)."""
    mine = roles.get(host.name, ())
    if Role.NFS in mine:
        return [e.path for e in host.exports]
    if Role.WEB in mine:
        roots = sorted({v.document_root or DEFAULT_DOCROOT for v in cluster.vhosts} or {DEFAULT_DOCROOT})
        return (roots if host.nfs is None else []) + [ENV_HOMES]
    return []


def first_backer(cluster: Cluster, roles: Roles) -> str | None:
    """The host that makes the repository: the first, in file order, that backs something up."""
    chosen = database_hosts(cluster, roles)
    return next((h.name for h in cluster.hosts if h.name in chosen or file_paths(cluster, roles, h)), None)


def backup_settings(cluster: Cluster, roles: Roles, host: Host, values: Mapping[str, str]) -> dict[str, Any] | None:
    """host.json's `backup` for this host, validated against HostBackup; None when it backs nothing up."""
    if cluster.backup is None:
        return None
    conf = cluster.backup
    paths = file_paths(cluster, roles, host)
    on_database = host.name in database_hosts(cluster, roles)
    if not paths and not on_database and not set(roles.get(host.name, ())) & SQL_ROLES:
        return None
    store = conf.store
    section: dict[str, Any] = {
        "repository": f"s3:{store.endpoint}/{store.bucket}/{store.prefix or cluster.name}",
        "host": host.name,
        "password": values["backup_password"],
        "access_key_id": values["backup_access_key"],
        "secret_access_key": values["backup_secret_key"],
        "retention": conf.retention.model_dump(),
    }
    if store.region:
        section["region"] = store.region
    if host.name == first_backer(cluster, roles):
        section["init"] = True
    if on_database:
        section["database"] = {"schedule": conf.schedule.full, "binlog_seconds": conf.schedule.binlog_seconds,
                               "max_age": {"full": max_age(conf.schedule.full),
                                           "binlog": binlog_max_age(conf.schedule.binlog_seconds)}}
    if paths:
        section["files"] = {"paths": paths, "schedule": conf.schedule.files,
                            "max_age": {"files": max_age(conf.schedule.files)}}
    return HostBackup.model_validate(section).model_dump(exclude_none=True, exclude_defaults=False)


def check_backup(cluster: Cluster, where: str) -> list[str]:
    """One line per problem the schema cannot see: the store's credentials are given, never generated."""
    if cluster.backup is None:
        return []
    errors = []
    for name in ("backup_access_key", "backup_secret_key"):
        source = getattr(cluster.secrets, name)
        if source is None:
            errors.append(f"{where}: secrets.{name}: missing: the backup store needs its credentials "
                          "({env: VARIABLE} or {file: PATH})")
        elif source.generate:
            errors.append(f"{where}: secrets.{name}: a store credential cannot be generated: give {{env: VARIABLE}} "
                          "or {file: PATH}")
    return errors
