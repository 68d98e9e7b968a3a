"""The step contract, in the spirit of cloud-init's cc_* modules: what a step is (id, roles, the settings
keys that activate it, the keys it requires) and an apply() that compares, acts on the difference only,
and says so when there is nothing to do."""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Callable, Iterable, Sequence

from . import system
from .host import Host
from .host_schema import find_secrets
from .system import HOST, RetryPolicy, Runner, SettingsError

MISSING = object()


def lookup(settings: dict[str, Any], dotted: str, default: Any = MISSING) -> Any:
    """settings["a"]["b"] for "a.b"; default (or MISSING) when a level is absent."""
    node: Any = settings
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """base with override laid over it: nested maps merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def http_status(url: str, timeout: float = 5.0) -> int:
    """The HTTP status of a GET on url; 0 when nothing answers."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return 0


def tcp_open(host: str, port: int, timeout: float = 3.0) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


class Context:
    """What a step sees: the image and host settings, the machine (`host.Host`: the live host, or a fake root in
    tests) and its tools.

    Every side effect goes through an attribute here, so tests swap in a fake root and fake runner."""

    def __init__(
        self,
        image: dict[str, Any],
        host: dict[str, Any],
        root: str = "/",
        runner: Runner | None = None,
        logger: Callable[[str], None] = system.log,
        sleep: Callable[[float], None] = time.sleep,
        probe: Callable[[str, int], bool] = tcp_open,
        chown: Callable[[str, str, str], None] = system.chown,
        haproxy: Callable[[str], str] | None = None,
        http_status: Callable[[str], int] = http_status,
        hostname: Callable[[], str] = socket.gethostname,
        check: bool = False,
    ) -> None:
        self.image = image
        self.host = host
        self.root = root
        self.settings = deep_merge(image.get("settings") or {}, host)
        self.secrets = find_secrets(host)
        self.runner = runner if runner is not None else Runner(self.secrets, logger)
        self.runner.secrets = list(self.secrets)
        #: The machine, as the converge engine sees it too: paths under the root follow its links inside it.
        self.machine = Host(root, self.runner)
        self.log = logger
        self.sleep = sleep
        self.probe = probe
        self.chown = chown
        self.haproxy = haproxy
        self.http_status = http_status
        self.hostname = hostname
        policy = self.settings.get("firstboot") or {}
        self.policy = RetryPolicy(
            attempts=policy.get("retry_attempts", 20),
            delay=policy.get("retry_delay", 2),
            max_delay=policy.get("retry_max_delay", 30),
        )
        #: How often a step restarts a unit it found failed, and how long one `systemctl start` may take.
        self.service_restarts = int(policy.get("service_restarts", 3))
        self.service_timeout = float(policy.get("service_timeout", 600))
        #: What the running step learnt about the units it depends on (state, restarts, journal tail).
        self.units: dict[str, dict[str, Any]] = {}
        #: Restarts of each unit in this run, whichever step made them: the budget is per unit and run.
        self.restarts: dict[str, int] = {}
        #: Called when that changes: the agent saves it into the status file while the step runs.
        self.on_progress: Callable[[], None] | None = None
        #: `run --check`: steps only plan (read, compare, say what they would change); nothing is changed.
        self.check = check

    @property
    def roles(self) -> list[str]:
        return list(self.image.get("roles") or [])

    def path(self, absolute: str) -> str:
        """Where an absolute in-image path lives under this context's root."""
        return self.machine.path(absolute)

    def get(self, dotted: str, default: Any = None) -> Any:
        """A merged setting (role defaults from image.json under host.json)."""
        value = lookup(self.settings, dotted)
        return default if value is MISSING else value

    def need(self, dotted: str, why: str) -> Any:
        """A setting the step cannot do without: a SettingsError naming the key when it is missing."""
        value = lookup(self.settings, dotted)
        if value is MISSING or value in ("", None, [], {}):
            raise SettingsError(f"{HOST}: {dotted}: missing: {why}",
                                hint="add it to the host's first-boot settings, then `golden-firstboot --rerun`")
        return value

    def run(self, argv: Sequence[str], **kwargs: Any) -> system.Result:
        return self.runner.run(argv, **kwargs)

    def retry(self, action: Callable[[], Any], what: str, retry_on: tuple = (Exception,),
              give_up_on: tuple = ()) -> Any:
        return system.retry(action, what, self.policy, sleep=self.sleep, logger=self.log, retry_on=retry_on,
                            give_up_on=give_up_on)

    def progress(self) -> None:
        """Tell the agent that the running step's unit reports changed."""
        if self.on_progress is not None:
            self.on_progress()

    def write(self, absolute: str, content: str, mode: int = 0o644) -> bool:
        """Write an in-image file if its content (or mode) differs; log what happened."""
        changed = system.write_file(self.path(absolute), content, mode)
        if changed:
            self.log("wrote " + absolute)
        return changed

    def differs(self, absolute: str, content: str, mode: int = 0o644) -> bool:
        """Whether write(absolute, content, mode) would change the file (a plan's read, nothing written)."""
        path = self.path(absolute)
        if system.read_text(path) != content:
            return True
        return (os.stat(path).st_mode & 0o7777) != mode

    def remove(self, absolute: str) -> bool:
        """Remove an in-image file if present; True when it was there."""
        return system.remove_file(self.path(absolute))

    def read(self, absolute: str) -> str | None:
        return system.read_text(self.path(absolute))

    def exists(self, absolute: str) -> bool:
        return os.path.lexists(self.path(absolute))

    def state_file(self, name: str) -> str:
        """An in-image path under /var/lib/golden, where steps keep their progress markers."""
        return "/var/lib/golden/" + name


class Step:
    """One first-boot operation: applies to any of `roles` (all roles when empty), runs when host.json has
    one of the `activate` keys (always when empty), needs every `require` key in the merged settings.

    A step with a plan (`@the_step.planner`) plans, then acts: its plan reads the host and lists what would
    change, read only; the step acts only when that list is not empty, and `run --check` reports the list."""

    def __init__(
        self,
        id: str,
        func: Callable[[Context], bool],
        roles: Iterable[str] = (),
        activate: Iterable[str] = (),
        require: Iterable[str] = (),
        when: Callable[[Context], bool] | None = None,
        early: bool = False,
    ) -> None:
        self.id = id
        #: Also run by golden-firstboot-early.service, before the services that need what it makes.
        self.early = early
        self.func = func
        self.roles = tuple(roles)
        self.activate = tuple(activate)
        self.require = tuple(require)
        self.when = when
        self.doc = (func.__doc__ or "").strip().splitlines()[0] if func.__doc__ else id
        self.plan: Callable[[Context], list[str]] | None = None

    def planner(self, plan: Callable[[Context], list[str]]) -> Callable[[Context], list[str]]:
        """Decorator: `plan(ctx)` lists what the step would change (one line each), reading only."""
        self.plan = plan
        return plan

    def planned(self, ctx: Context) -> list[str] | None:
        """What the step would change on this host; None for a step that has no plan yet (it cannot say)."""
        return None if self.plan is None else list(self.plan(ctx))

    def applies(self, ctx: Context) -> bool:
        """Whether this host runs the step: its role is baked in and its settings are given."""
        if self.roles and not set(self.roles) & set(ctx.roles):
            return False
        # Activated by what the host was given, not by the image's defaults: an image booted without
        # cluster settings (a verification boot) runs no cluster step.
        if self.activate and all(lookup(ctx.host, key) in (MISSING, None, False) for key in self.activate):
            return False
        return self.when(ctx) if self.when is not None else True

    def missing(self, ctx: Context) -> list[str]:
        """The required settings keys this host lacks, one message each."""
        return [key for key in self.require if lookup(ctx.settings, key) in (MISSING, None, "", [], {})]

    def apply(self, ctx: Context) -> bool:
        """Bring the host to the step's state; True when something changed, False after a logged no-op."""
        if self.plan is not None:
            changes = self.planned(ctx)
            if not changes:
                ctx.log(f"{self.id}: no change (already in place)")
                return False
            for change in changes:
                ctx.log(f"{self.id}: {change}")
        changed = bool(self.func(ctx))
        if not changed:
            ctx.log(f"{self.id}: no change (already in place)")
        return changed


def step(id: str, roles: Iterable[str] = (), activate: Iterable[str] = (), require: Iterable[str] = (),
         when: Callable[[Context], bool] | None = None,
         early: bool = False) -> Callable[[Callable[[Context], bool]], Step]:
    """Decorator making a function `f(ctx) -> changed` into a Step."""

    def wrap(func: Callable[[Context], bool]) -> Step:
        return Step(id, func, roles, activate, require, when, early)

    return wrap
