"""`golden backup`'s work on a host over SSH: the repository's snapshots as that host's agent lists them, a
restore onto a fresh SQL host, checked (every table passed CHECK TABLE and was counted) before it is reported,
and one file or folder of a host's files backups put back (each file checked against the snapshot).

The host's agent does the work (golden-firstboot backup ...): the repository key never leaves the hosts."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..core.errors import GoldenError, InputError
from .transport import Transport

AGENT = "/usr/local/sbin/golden-firstboot"
LIST_TIMEOUT = 300.0
RESTORE_TIMEOUT = 12 * 3600.0


def parse_at(text: str, now: datetime | None = None) -> datetime:
    """--at: ISO 8601 with its zone (2026-12-07T04:42:43Z, or +01:00), or `now`; UTC, to the second."""
    if text == "now":
        return (now or datetime.now(UTC)).replace(microsecond=0)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"--at {text[:60]!r}: not a time such as 2026-12-07T04:42:43Z",
                         hint="ISO 8601 with its zone (Z for UTC), or `now` for the latest state") from None
    if when.tzinfo is None:
        raise InputError(f"--at {text[:60]!r}: no time zone", hint="add Z for UTC (or +01:00): the hosts run UTC")
    return when.astimezone(UTC).replace(microsecond=0)


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def agent_json(proc: subprocess.CompletedProcess[str], what: str) -> Any:
    """The JSON an agent's backup command printed; GoldenError with its one-line reason when it failed."""
    if proc.returncode != 0:
        lines = [line.removeprefix("golden-firstboot: ") for line in (proc.stderr or "").strip().splitlines()]
        reason = next((line for line in reversed(lines) if line.startswith("error: ")), lines[-1] if lines else "")
        raise GoldenError(f"{what} failed: {reason.removeprefix('error: ')}"[:400],
                          hint="journalctl on the host; `golden-firstboot backup status` there")
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise GoldenError(f"{what}: the host's agent answered no JSON (an older agent?)") from None


def _agent_json(transport: Transport, argv: list[str], timeout: float, what: str) -> Any:
    return agent_json(transport.run([AGENT, "backup", *argv], timeout=timeout, check=False), what)


@dataclass(frozen=True)
class Snapshot:
    id: str
    time: str
    host: str
    kind: str

    def line(self) -> str:
        return f"{self.time:<21} {self.kind:<7} {self.host:<16} {self.id}"


def list_backups(transport: Transport, of: str | None = None) -> list[Snapshot]:
    """The repository's snapshots (of host `of`), oldest first."""
    data = _agent_json(transport, ["list"] + (["--host", of] if of else []), LIST_TIMEOUT, "listing the backups")
    return [Snapshot(str(s.get("id")), str(s.get("time")), str(s.get("host")), str(s.get("kind")))
            for s in data if isinstance(s, dict)]


@dataclass(frozen=True)
class RestoreReport:
    at: str
    reached: str
    source: str
    tables: list[dict[str, Any]]

    def lines(self) -> list[str]:
        out = [f"restored {self.source} as of {self.reached} ({len(self.tables)} tables, "
               f"{sum(int(t['rows']) for t in self.tables)} rows, every table checked)"]
        out += [f"  {t['table']:<40} {t['rows']:>12} rows  checksum {t['checksum']}" for t in self.tables]
        if self.reached < self.at:
            out.append(f"the store's binary logs reach {self.reached} only: writes after that are not in it")
        return out


def restore_host(transport: Transport, at: datetime, source: str | None) -> RestoreReport:
    """Restore the SQL host behind transport (a fresh one) to `at` from `source`'s backups; the checked report."""
    argv = ["restore", "--at", iso(at)] + (["--source", source] if source else [])
    data = _agent_json(transport, argv, RESTORE_TIMEOUT, "the restore")
    tables = data.get("tables") if isinstance(data, dict) else None
    if not isinstance(tables, list) or any(not isinstance(t, dict) or not {"table", "rows", "checksum"} <= set(t)
                                           for t in tables):
        raise GoldenError("the restore reported no table check: it cannot be trusted",
                          hint="run `golden-firstboot backup restore` on the host and read its log")
    return RestoreReport(iso(at), str(data.get("reached")), source or "the host's own backups", tables)


def remote_path(text: str, option: str) -> str:
    """An absolute, plain path on the host (no `.`, `..`, empty part or control character); InputError."""
    shown = repr(text[:200])
    if not text.startswith("/"):
        raise InputError(f"{option} {shown}: not an absolute path", hint="write it as /srv/nfs/www/uploads/logo.png")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InputError(f"{option} {shown}: holds a control character")
    if text != "/" and any(part in ("", ".", "..") for part in text.split("/")[1:]):
        raise InputError(f"{option} {shown}: not a plain path (an empty, `.` or `..` part)",
                         hint="write it as /srv/nfs/www/uploads/logo.png")
    return text


@dataclass(frozen=True)
class FilesReport:
    path: str
    snapshot: str
    snapshot_time: str
    files: int
    size: int
    restored: str
    archived: str | None

    def lines(self) -> list[str]:
        out = [f"restored {self.path} as of files snapshot {self.snapshot} ({self.snapshot_time}): {self.files} "
               f"files, {self.size} bytes, each checked against the snapshot (sha256, size, mode, owner, mtime)"]
        if self.restored != self.path:
            out.append(f"  under {self.restored} (nothing live touched)")
        elif self.archived:
            out.append(f"  the version it replaced: {self.archived} (on the host)")
        else:
            out.append("  nothing was there to replace")
        return out


def restore_files(transport: Transport, path: str, at: datetime, to: str | None = None) -> FilesReport:
    """PATH on the host behind transport as it was in its newest files backup at or before `at`: in place (the
    live one archived on the host first) or under `to`; the checked report."""
    argv = ["restore-files", "--path", remote_path(path, "--path"), "--at", iso(at)]
    if to is not None:
        argv += ["--to", remote_path(to, "--to")]
    data = _agent_json(transport, argv, RESTORE_TIMEOUT, f"restoring {path}")
    if not isinstance(data, dict) or not data.get("checked") or not isinstance(data.get("files"), int):
        raise GoldenError(f"restoring {path}: the host reported no check of what it restored: it cannot be trusted",
                          hint="run `golden-firstboot backup restore-files` on the host and read its log")
    return FilesReport(path, str(data.get("snapshot")), str(data.get("snapshot_time")), int(data["files"]),
                       int(data.get("bytes") or 0), str(data.get("restored")),
                       str(data["archived"]) if data.get("archived") else None)
