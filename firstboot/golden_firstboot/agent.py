"""Run the steps that apply to this host, in order, recording each one's state in the status file.

Status: /var/lib/golden/firstboot.json, per step pending | running | done | failed | skipped, with
timestamps, whether it changed anything, and the error. /var/lib/golden/firstboot.done marks a
complete run: the unit's condition, and the reason a plain second start does nothing."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from . import __version__, host_schema
from .roles import STEPS
from .steps import Context, Step
from .system import HOST, FirstbootError, SettingsError, failure_fields, write_file

IMAGE_INFO = "/etc/golden/image.json"
HOST_SETTINGS = HOST
STATUS = "/var/lib/golden/firstboot.json"
DONE = "/var/lib/golden/firstboot.done"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def load_json(root: str, path: str, required: bool) -> dict[str, Any]:
    """A JSON object from the image; {} for an optional file that is absent."""
    full = os.path.join(root, path.lstrip("/"))
    try:
        with open(full, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        if required:
            raise SettingsError(f"{path}: missing: this is not a golden image",
                                hint="golden-firstboot runs inside images baked by goldenimage") from None
        return {}
    except ValueError as exc:
        raise SettingsError(f"{path}: not valid JSON: {exc}",
                            hint="fix the first-boot user-data that wrote it") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: must hold a JSON object")
    return data


def check_host_settings(data: dict[str, Any], where: str) -> dict[str, Any]:
    """data when it matches the host.json contract (host_schema); else SettingsError naming every mismatch."""
    errors = host_schema.validate(data)
    if errors:
        raise SettingsError("{}: does not match the agent's host.json contract: {}".format(where, "; ".join(errors)),
                            hint="render it with the same goldenimage version as this agent (golden cluster render)")
    return data


def install_host_settings(root: str, source: str, install: bool = True) -> dict[str, Any]:
    """The settings in `source` (a file outside the image: `golden apply` ships one), copied to host.json
    (0600, rewritten only when it differs) so that later runs, the early unit and `status` read the same;
    only read and checked when not `install` (`run --check`)."""
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
        data = json.loads(text)
    except OSError as exc:
        raise SettingsError(f"{source}: cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise SettingsError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{source}: must hold a JSON object")
    check_host_settings(data, source)
    if not install:
        return data
    write_file(os.path.join(root, HOST_SETTINGS.lstrip("/")), json.dumps(data, indent=2, sort_keys=True) + "\n",
               0o600)
    return data


class Status:
    """The status file: rewritten atomically at every transition, so a crash leaves the last state. `run --json`
    prints its data at the end; a check (`run --check`) keeps it in memory only: it changes nothing."""

    def __init__(self, root: str, persist: bool = True) -> None:
        self.path = os.path.join(root, STATUS.lstrip("/"))
        self.persist = persist
        self.data: dict[str, Any] = {"version": __version__, "steps": {}}

    def load(self) -> dict[str, Any] | None:
        try:
            with open(self.path, encoding="utf-8") as handle:
                return json.load(handle)
        except (FileNotFoundError, ValueError):
            return None

    def save(self) -> None:
        if not self.persist:
            return
        write_file(self.path, json.dumps(self.data, indent=2) + "\n", 0o600)

    def begin(self, ctx: Context, steps: list[Step], selected: list[Step]) -> None:
        self.data.update({"started": now(), "finished": None, "result": "running",
                          "profile": ctx.image.get("profile"), "roles": ctx.roles, "error": None})
        chosen = {s.id for s in selected}
        self.data["steps"] = {
            s.id: {"state": "pending" if s.id in chosen else "skipped", "description": s.doc}
            for s in steps if s.id in chosen or not s.roles or set(s.roles) & set(ctx.roles)
        }
        self.save()

    def mark(self, step_id: str, state: str, **fields: Any) -> None:
        entry = self.data["steps"].setdefault(step_id, {})
        entry["state"] = state
        entry.update(fields)
        self.save()

    def finish(self, result: str, error: str | None = None, failure: dict[str, Any] | None = None) -> None:
        self.data.update({"finished": now(), "result": result, "error": error, "failure": failure})
        self.save()

    def fail(self, step_id: str, exc: BaseException, started: float, ctx: Context) -> None:
        """The step failed: its entry and the run's result carry the message, and for a command its command
        line and stderr tail (what `golden apply` prints in its summary)."""
        fields = failure_fields(exc)
        message = exc.message if isinstance(exc, FirstbootError) else fields["message"]
        self.mark(step_id, "failed", finished=now(), error=message, failure=fields,
                  seconds=round(time.time() - started, 1), **_units(ctx))
        self.finish("failed", f"{step_id}: {fields['message']}", dict(fields, step=step_id))


def select(ctx: Context, steps: list[Step]) -> list[Step]:
    """The steps this host runs; SettingsError naming every missing key of all of them at once."""
    selected = [s for s in steps if s.applies(ctx)]
    problems = [f"{key} (for {s.id})" for s in selected for key in s.missing(ctx)]
    if problems:
        raise SettingsError("{}: missing settings: {}".format(HOST_SETTINGS, ", ".join(problems)),
                            hint="add them to the host's first-boot user-data, then `golden-firstboot --rerun`")
    return selected


def run(ctx: Context, rerun: bool = False, steps: list[Step] | None = None, status: Status | None = None) -> int:
    """Run every applicable step once (with ctx.check: plan each, change nothing); the exit status (0 done,
    1 failed, 2 bad settings, 75 peer not up). `status` ends holding the run's result."""
    steps = STEPS if steps is None else steps
    done_marker = ctx.path(DONE)
    status = status if status is not None else Status(ctx.root, persist=not ctx.check)
    if os.path.exists(done_marker) and not rerun and not ctx.check:
        ctx.log(f"first boot already completed ({DONE}); `golden-firstboot --rerun` runs it again")
        status.data = status.load() or status.data
        return 0
    ctx.log("first boot of {} (roles: {})".format(ctx.image.get("profile", "?"), ", ".join(ctx.roles) or "none"))
    try:
        selected = select(ctx, steps)
    except SettingsError as exc:
        status.begin(ctx, steps, [])
        status.finish("failed", exc.message, failure_fields(exc))
        return _fail(ctx, exc)
    status.begin(ctx, steps, selected)
    if ctx.check:
        return check(ctx, selected, status)
    for item in selected:
        started = time.time()
        # The units a step depends on are reported as it learns about them, so `status` shows a slow step's.
        ctx.units = {}
        ctx.on_progress = lambda step_id=item.id: status.mark(step_id, "running", units=ctx.units)
        status.mark(item.id, "running", started=now(), error=None)
        ctx.log(f"step {item.id}: {item.doc}")
        try:
            changed = item.apply(ctx)
        except FirstbootError as exc:
            status.fail(item.id, exc, started, ctx)
            return _fail(ctx, exc, item.id)
        except Exception as exc:  # a bug or an unexpected system state: recorded, never a silent stop
            bug = FirstbootError(f"{type(exc).__name__}: {exc}", hint="this is a bug in golden-firstboot: report it")
            status.fail(item.id, bug, started, ctx)
            return _fail(ctx, bug, item.id)
        finally:
            ctx.on_progress = None
        status.mark(item.id, "done", finished=now(), changed=changed, seconds=round(time.time() - started, 1),
                    **_units(ctx))
    status.finish("done")
    write_file(done_marker, now() + "\n", 0o644)
    ctx.log("first boot complete: {} step(s), {} changed".format(
        len(selected), sum(1 for s in selected if status.data["steps"][s.id].get("changed"))))
    return 0


def check(ctx: Context, selected: list[Step], status: Status) -> int:
    """`run --check`: each step's plan (what it would change), nothing changed; a step without a plan yet is
    listed as unplanned. The exit status as for a run."""
    for item in selected:
        started = time.time()
        try:
            changes = item.planned(ctx)
        except FirstbootError as exc:
            status.fail(item.id, exc, started, ctx)
            return _fail(ctx, exc, item.id)
        if changes is None:
            status.mark(item.id, "unplanned")
        else:
            status.mark(item.id, "planned", changed=bool(changes), changes=changes)
    status.finish("checked")
    return 0


def _units(ctx: Context) -> dict[str, Any]:
    """The status fields of the step's units: present only for steps that depend on a service."""
    return {"units": ctx.units} if ctx.units else {}


def run_early(ctx: Context, steps: list[Step] | None = None) -> int:
    """The early steps only (per-instance keys and certificates), before the services that read them start:
    run by golden-firstboot-early.service at every boot, each a no-op once its material exists."""
    selected = [s for s in (STEPS if steps is None else steps) if s.early and s.applies(ctx)]
    for item in selected:
        try:
            item.apply(ctx)
        except FirstbootError as exc:
            # The main run does the step again and fails there with the status recorded.
            return _fail(ctx, exc, item.id)
    return 0


def _fail(ctx: Context, exc: FirstbootError, step_id: str = "") -> int:
    where = f"step {step_id} failed: " if step_id else ""
    ctx.log("error: " + where + exc.message)
    if exc.hint:
        ctx.log("hint: " + exc.hint)
    return exc.exit_status


def format_status(data: dict[str, Any] | None) -> str:
    """`golden-firstboot status`: the run's result, then one line per step."""
    if not data:
        return f"golden-firstboot has not run on this host yet ({STATUS} is absent)\n"
    lines = ["first boot: {} (started {}, finished {})".format(
        data.get("result"), data.get("started"), data.get("finished") or "-")]
    if data.get("error"):
        lines.append("error: " + data["error"])
    width = max([len(k) for k in data.get("steps", {})] + [4])
    for step_id, entry in data.get("steps", {}).items():
        state = entry.get("state", "?")
        detail = ""
        if state == "done":
            detail = "changed" if entry.get("changed") else "no change"
        elif state == "failed":
            detail = (entry.get("error") or "").splitlines()[0] if entry.get("error") else ""
        elif state == "running" and entry.get("started"):
            detail = "since " + entry["started"]
        lines.append("  {:<{w}}  {:<8} {}".format(step_id, state, detail, w=width).rstrip())
        lines += _format_units(entry, pad=" " * (width + 4))
    return "\n".join(lines) + "\n"


def _format_units(entry: dict[str, Any], pad: str) -> list[str]:
    """Under a step that depends on services: each unit's state and restarts; the journal's last lines for a
    unit that failed at some point, and for every unit of a step that failed or is still running."""
    out = []
    for unit, info in sorted((entry.get("units") or {}).items()):
        restarts = int(info.get("restarts") or 0)
        line = "{}unit {}: {}".format(pad, unit, info.get("state", "?"))
        if restarts:
            line += f", restarted {restarts} time(s) by golden-firstboot"
        if info.get("last_error"):
            line += "; last start: " + info["last_error"]
        out.append(line)
        if info.get("journal") and (restarts or entry.get("state") in ("failed", "running")):
            out += [f"{pad}  | {text}" for text in info["journal"][-8:]]
    return out
