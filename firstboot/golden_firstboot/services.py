"""Services a step depends on: enabled, started, restarted when they failed (a bounded number of times), and
what systemd and the journal say about them kept for `golden-firstboot status`.

A role step never only waits for a service to answer: on a starved host a unit can miss its start timeout
once, and nothing else would ever start it again."""

from __future__ import annotations

from typing import Any, Callable

from .steps import Context
from .system import CommandError, FirstbootError

JOURNAL_LINES = 12
PROPERTIES = ("ActiveState", "SubState", "UnitFileState", "Result", "NRestarts")


class ServiceFailed(FirstbootError):
    """A unit stayed in `failed` after every restart the settings allow: waiting longer cannot help."""


UNIT_SUFFIXES = (".service", ".socket", ".target", ".mount", ".timer", ".path")


def unit_name(unit: str) -> str:
    """The full unit name: `php8.2-fpm` is `php8.2-fpm.service` (a dot alone does not make a suffix)."""
    return unit if unit.endswith(UNIT_SUFFIXES) else unit + ".service"


def unit_state(ctx: Context, unit: str) -> dict[str, str]:
    """systemd's view of the unit: ActiveState, SubState, UnitFileState, Result, NRestarts."""
    argv = ["systemctl", "show", unit_name(unit)] + ["--property=" + p for p in PROPERTIES]
    out = ctx.run(argv, check=False).stdout
    state = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            state[key.strip()] = value.strip()
    return state


def journal_tail(ctx: Context, unit: str, lines: int = JOURNAL_LINES) -> list[str]:
    """The unit's last journal lines of this boot (what it said before failing)."""
    argv = ["journalctl", "--unit", unit_name(unit), "--boot", "--no-pager", "--output", "short-monotonic",
            "--lines", str(lines)]
    out = ctx.run(argv, check=False).stdout
    return [line for line in out.splitlines() if line.strip() and not line.startswith("-- ")][-lines:]


def _record(ctx: Context, unit: str, **fields: Any) -> dict[str, Any]:
    entry = ctx.units.setdefault(unit, {"restarts": ctx.restarts.get(unit, 0)})
    entry.update(fields)
    ctx.progress()
    return entry


def _describe(state: dict[str, str]) -> str:
    active = state.get("ActiveState", "unknown")
    sub = state.get("SubState", "")
    result = state.get("Result", "")
    text = f"{active} ({sub})" if sub and sub != active else active
    if result and result != "success":
        text += f", result {result}"
    return text


def ensure_running(ctx: Context, unit: str) -> bool:
    """The unit enabled and active: started when inactive, restarted when failed (at most
    firstboot.service_restarts times per run), left alone while systemd is still starting it.

    True when something was changed. Raises ServiceFailed when the unit is failed and no restart is left,
    CommandError-free otherwise: a failed start is recorded and retried by the caller's wait."""
    changed = False
    state = unit_state(ctx, unit)
    entry = _record(ctx, unit, state=_describe(state))
    if state.get("UnitFileState") == "disabled":  # static, indirect, generated units are not ours to enable
        ctx.run(["systemctl", "enable", "--quiet", unit_name(unit)])
        changed = True
    active = state.get("ActiveState", "")
    if active in ("active", "reloading", "activating"):
        # activating includes systemd's own auto-restart: let it finish before acting on it.
        return changed
    if active == "failed":
        entry["journal"] = journal_tail(ctx, unit)
        done = ctx.restarts.get(unit, 0)
        if done >= ctx.service_restarts:
            raise ServiceFailed(
                "{} is {} after {} restart(s) by golden-firstboot; last journal line: {}".format(
                    unit, _describe(state), done, (entry["journal"] or ["(none)"])[-1]),
                hint=f"journalctl -u {unit_name(unit)}; fix it, then `golden-firstboot --rerun`")
        ctx.restarts[unit] = entry["restarts"] = done + 1
        ctx.log("{} is {}: restarting it ({}/{}); its journal ends:\n{}".format(
            unit, _describe(state), entry["restarts"], ctx.service_restarts,
            "\n".join("  " + line for line in entry["journal"][-5:]) or "  (empty)"))
        ctx.run(["systemctl", "reset-failed", unit_name(unit)], check=False)
    else:
        ctx.log(f"{unit} is {_describe(state)}: starting it")
    try:
        ctx.run(["systemctl", "start", unit_name(unit)], timeout=ctx.service_timeout)
    except CommandError as exc:
        # Recorded, not fatal: the caller's wait looks again, restarts within the budget, or gives up.
        _record(ctx, unit, state=_describe(unit_state(ctx, unit)), last_error=exc.message.splitlines()[0])
        return True
    _record(ctx, unit, state=_describe(unit_state(ctx, unit)))
    return True


def plan_running(ctx: Context, unit: str) -> list[str]:
    """What ensure_running would do to the unit, read only: enable it, start or restart it."""
    state = unit_state(ctx, unit)
    plan = []
    if state.get("UnitFileState") == "disabled":
        plan.append(f"enable {unit_name(unit)}")
    if state.get("ActiveState", "") not in ("active", "reloading", "activating"):
        verb = "restart" if state.get("ActiveState") == "failed" else "start"
        plan.append(f"{verb} {unit_name(unit)} (it is {_describe(state)})")
    return plan


def require_active(ctx: Context, unit: str) -> None:
    """A check for wait_serving: the unit is active (FirstbootError while it is not)."""
    if ctx.run(["systemctl", "is-active", "--quiet", unit], check=False).returncode != 0:
        raise FirstbootError(f"{unit} is not active yet")


def wait_serving(ctx: Context, units: list[str], check: Callable[[], None], what: str) -> bool:
    """Make sure every unit runs, then wait until check() passes; each failed attempt looks at the units
    again (a unit that failed meanwhile is restarted). True when a unit had to be enabled or (re)started."""
    acted = []

    def attempt() -> None:
        for unit in units:
            if ensure_running(ctx, unit):
                acted.append(unit)
        check()

    try:
        ctx.retry(attempt, what, give_up_on=(ServiceFailed,))
    except FirstbootError:
        # What `status` shows for the failed step: each unit as it is now, with its journal's last lines.
        for unit in units:
            _record(ctx, unit, state=_describe(unit_state(ctx, unit)), journal=journal_tail(ctx, unit))
        raise
    return bool(acted)


def restart(ctx: Context, unit: str, why: str, ready: Callable[[], None]) -> None:
    """Restart a unit because its configuration changed, then wait until ready() passes; a restart that
    fails on a slow host is retried within the same budget as any failed unit."""
    ctx.log(f"restarting {unit}: {why}")
    try:
        ctx.run(["systemctl", "restart", unit_name(unit)], timeout=ctx.service_timeout)
    except CommandError as exc:
        _record(ctx, unit, last_error=exc.message.splitlines()[0])
    wait_serving(ctx, [unit], ready, f"waiting for {unit} after its restart")
