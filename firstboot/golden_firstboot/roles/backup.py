"""backup: this host's backup jobs as systemd timers, from host.json's `backup` section (the cluster file's,
rendered for the host that backs each thing up: the replica where there is one, the NFS server's exports).

golden-backup-full.timer (mariabackup on its calendar), golden-backup-binlog.timer (binary logs every few
seconds), golden-backup-files.timer, golden-backup-prune.timer (retention), golden-backup-check.timer (a kind
whose last good run is older than its schedule plus a margin fails that unit). Each job is `golden-firstboot
backup run KIND` (backup_jobs.py): a failed backup is a failed unit whose journal ends with one line saying
why. A host with no good full backup yet starts one now, so that a restore has a base from the first day."""

from __future__ import annotations

from .. import backup_jobs
from ..services import ensure_running
from ..steps import Context, step
from ..system import FirstbootError

UNIT_DIR = "/etc/systemd/system/"
AGENT = "/usr/local/sbin/golden-firstboot"


def service_unit(kind: str, command: str) -> str:
    return "\n".join([
        "[Unit]", f"Description=goldenimage: backup job ({kind}) to the cluster's restic repository",
        "After=network-online.target mariadb.service", "Wants=network-online.target", "",
        "[Service]", "Type=oneshot", f"ExecStart={AGENT} {command}",
        # Out of the way of the server's own work; a full copy of a large database takes hours.
        "Nice=10", "IOSchedulingClass=idle", "TimeoutStartSec=6h", "",
    ])


def timer_unit(kind: str, schedule: list[str]) -> str:
    return "\n".join(["[Unit]", f"Description=goldenimage: backup job ({kind}) schedule", "", "[Timer]"]
                     + schedule + ["", "[Install]", "WantedBy=timers.target", ""])


def calendar(value: str) -> list[str]:
    # Persistent: a run missed while the host was off happens at the next boot.
    return [f"OnCalendar={value}", "Persistent=true", "RandomizedDelaySec=10min"]


def units(ctx: Context) -> dict[str, str]:
    """{unit name: text} for every job this host runs."""
    conf = backup_jobs.settings(ctx)
    out: dict[str, list[str]] = {}
    database = conf.get("database")
    if isinstance(database, dict):
        out["golden-backup-full"] = calendar(str(database.get("schedule") or "daily"))
        seconds = int(database.get("binlog_seconds") or 15)
        out["golden-backup-binlog"] = [f"OnActiveSec={seconds}s", f"OnUnitActiveSec={seconds}s", "AccuracySec=1s"]
    files = conf.get("files")
    if isinstance(files, dict):
        out["golden-backup-files"] = calendar(str(files.get("schedule") or "hourly"))
    out["golden-backup-prune"] = calendar("daily")
    out["golden-backup-check"] = ["OnActiveSec=10min", "OnUnitActiveSec=15min"]
    texts: dict[str, str] = {}
    for name, schedule in out.items():
        kind = name[len("golden-backup-"):]
        command = "backup check" if kind == "check" else f"backup run {kind}"
        texts[name + ".service"] = service_unit(kind, command)
        texts[name + ".timer"] = timer_unit(kind, schedule)
    return texts


def tools(ctx: Context) -> None:
    """restic (and mariabackup on the database's host) are baked in: a missing one is a bad image."""
    needed = ["restic"]
    if isinstance(backup_jobs.settings(ctx).get("database"), dict):
        needed += [backup_jobs.tool(ctx, backup_jobs.BACKUP_TOOL), backup_jobs.tool(ctx, backup_jobs.BINLOG_TOOL)]
    for name in needed:
        if ctx.run(["sh", "-c", 'command -v "$1"', "sh", name], check=False).returncode != 0:
            raise FirstbootError(f"{name} is not installed: the image's profile lacks it",
                                 hint="add it to the role's packages and bake again")


#: The roles whose hosts hold something to back up (the render gives the section to one of them per thing).
ROLES = ("sql-primary", "sql-replica", "sql-galera", "nfs", "web")


def has_jobs(ctx: Context) -> bool:
    """Whether this host backs anything up (every SQL host holds the repository key, for a restore)."""
    return bool(backup_jobs.kinds(ctx))


@step("backup.timers", roles=ROLES, activate=["backup"], when=has_jobs,
      require=["backup.repository", "backup.password", "backup.access_key_id", "backup.secret_access_key"])
def timers(ctx: Context) -> bool:
    """Each backup job of this host on its systemd timer; a first full backup started when none succeeded."""
    tools(ctx)
    texts = units(ctx)
    changed = False
    for name, text in sorted(texts.items()):
        changed = ctx.write(UNIT_DIR + name, text) or changed
    if changed:
        ctx.run(["systemctl", "daemon-reload"])
    for name in sorted(texts):
        if name.endswith(".timer"):
            changed = ensure_running(ctx, name) or changed
    if "full" in backup_jobs.kinds(ctx) and not ctx.exists(backup_jobs.MARK.format("full")):
        ctx.log("no full backup yet: starting one (golden-backup-full.service)")
        ctx.run(["systemctl", "start", "--no-block", "golden-backup-full.service"])
        changed = True
    return changed


STEPS = [timers]
