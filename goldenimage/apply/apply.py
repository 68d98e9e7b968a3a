"""`golden apply`: converge one running Debian host to a profile over SSH.

The host's release is read from its /etc/os-release; the profile is resolved for it and rendered into the
same cloud-init user-data a bake runs (without the build account), with the first-boot agent in it. The
agent (a zipapp) and that user-data go to a private temporary directory on the host; the agent's `converge`
applies the user-data live, with cloud-init's semantics, idempotently; then the agent's role steps run with
the host's cluster settings (the host.json `golden cluster render` would put into its seed). Nothing an image
alone needs runs (no machine-id or host-key reset, no cloud-init clean, no log cleanup): those live in the
bake's cleanup script, never in the user-data."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.agent_contract import find_secrets, host_errors, redact
from ..core.errors import GoldenError, InputError
from ..core.fs import scratch
from ..model.profiles import ResolvedProfile, resolve
from ..model.releases import matrix
from ..render.firstboot_bundle import build_zipapp, bundle_commands, bundle_files
from ..render.userdata import cloud_config_json, render_user_data
from .transport import Transport

AGENT = "golden-firstboot.pyz"
USER_DATA = "user-data"
HOST_SETTINGS = "host.json"
#: Installing a role's packages on a slow host (TCG guests take a quarter of an hour for web) and waiting
#: for cluster peers (the agent's own budget is about 8.5 minutes per wait).
CONVERGE_TIMEOUT = 3600.0
AGENT_TIMEOUT = 3600.0
#: Python 3.7 is the agent's floor (Debian 10).
PROBE = "cat /etc/os-release; python3 -c 'import sys; print(\"python=%d.%d\" % sys.version_info[:2])' || true"
#: Where apply keeps the agent, the user-data and the host settings on the host (mktemp -d: 0700, the login user's).
REMOTE_DIR = "/tmp"
REMOTE_PREFIX = "golden-apply."
#: Removes, as root, the temporary directories of earlier applies that were killed before they could (SIGKILL, a
#: lost connection) and that no running process names (an agent still running from one keeps it); prints each
#: path removed. $1 the directory, $2 the name pattern, $3 the login user (only its directories), $4 this apply's
#: own. grep looks for a regular expression with each `.` written `[.]`: it can never find its own command line.
STALE_CLEANUP = r"""find "$1" -mindepth 1 -maxdepth 1 -type d -name "$2" -user "$3" ! -path "$4" |
while IFS= read -r d; do
  pattern=$(printf '%s/' "$d" | sed 's/[.]/[.]/g')
  grep -qsE -- "$pattern" /proc/[0-9]*/cmdline && continue
  rm -rf -- "$d" && printf '%s\n' "$d"
done
exit 0"""

Phase = Callable[[str], None]


@dataclass
class HostReport:
    """What apply did (or, with check, would do) on one host."""

    name: str
    target: str
    release: int | None = None
    changes: list[str] = field(default_factory=list)
    changed: int = 0
    unchanged: int = 0
    error: str | None = None
    #: Under a failure: the failed command and the tail of its stderr, one line each (redacted).
    detail: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self, check: bool = False) -> str:
        if self.error is not None:
            return f"{self.name}: FAILED: {self.error.splitlines()[0]}"
        verb = "would change" if check else "changed"
        return f"{self.name}: {verb}: {self.changed}, unchanged: {self.unchanged}"

    def summary_lines(self, check: bool = False) -> list[str]:
        """The summary, and under a failure its command and stderr tail, indented."""
        return [self.summary(check)] + [f"  {line}" for line in self.detail]


class AgentFailure(GoldenError):
    """The agent reported a failure: its message, and the command and stderr tail behind it."""

    def __init__(self, message: str, detail: list[str]) -> None:
        super().__init__(message)
        self.detail = detail


def failure_detail(failure: Mapping[str, Any] | None) -> tuple[str, list[str]]:
    """(message, detail lines) of the agent's JSON failure (`failure_fields`): the step, the command, the tail."""
    failure = failure or {}
    where = f"step {failure['step']}: " if failure.get("step") else ""
    detail = []
    if failure.get("command"):
        detail.append(f"command (exit {failure.get('exit', '?')}): {failure['command']}")
        detail += [f"| {line}" for line in failure.get("stderr_tail") or []]
    if failure.get("hint"):
        detail.append(f"hint: {failure['hint']}")
    return where + str(failure.get("message") or "failed, saying nothing"), detail


def parse_os_release(text: str) -> dict[str, str]:
    """/etc/os-release as a dict (values unquoted as a shell would)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            try:
                words = shlex.split(value)
            except ValueError:
                continue
            out[key.strip()] = words[0] if words else ""
    return out


def host_release(probe_output: str, where: str) -> int:
    """The Debian release a host runs, from its os-release; GoldenError for anything else."""
    info = parse_os_release(probe_output)
    if info.get("ID") != "debian":
        name = info.get("PRETTY_NAME") or info.get("ID") or "an unknown system"
        raise GoldenError(f"{where}: runs {name}, not Debian", hint="golden apply converges Debian 10 to 13 hosts")
    releases = {r.codename: r.number for r in matrix()}
    version = info.get("VERSION_ID", "").split(".")[0]
    if version.isdigit() and int(version) in releases.values():
        return int(version)
    if info.get("VERSION_CODENAME") in releases:
        return releases[info["VERSION_CODENAME"]]
    raise GoldenError(f"{where}: Debian {info.get('VERSION_ID') or info.get('VERSION_CODENAME') or '?'} "
                      f"is not a release goldenimage supports",
                      hint=f"supported: Debian {', '.join(str(n) for n in sorted(releases.values()))}")


def python_version(probe_output: str) -> tuple[int, int] | None:
    for line in probe_output.splitlines():
        if line.startswith("python="):
            major, minor = line.removeprefix("python=").split(".")
            return int(major), int(minor)
    return None


def apply_user_data(profile: ResolvedProfile) -> str:
    """What apply converges the host to: the bake's user-data for the profile and release, with the agent,
    without the build account; in JSON form (YAML's JSON subset), which the agent reads with its stdlib."""
    return cloud_config_json(render_user_data(profile, None, extra_files=bundle_files(backup=True),
                                              extra_commands=bundle_commands()))


def agent_json(stdout: str, what: str) -> dict[str, Any]:
    """The JSON object the agent printed last on stdout (`converge --json`, `run --json`); GoldenError without."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                break
            if isinstance(data, dict):
                return data
            break
    raise GoldenError(f"the agent's {what} printed no JSON result",
                      hint="run `golden apply --debug` and read its output")


def parse_converge(output: str) -> tuple[list[str], int, int]:
    """(change lines, changed, unchanged) from `converge --json`; GoldenError without a result."""
    data = agent_json(output, "converge")
    return [str(line) for line in data.get("changes") or []], int(data.get("changed") or 0), \
        int(data.get("unchanged") or 0)


def parse_steps(data: Mapping[str, Any]) -> tuple[list[str], int, int]:
    """(change lines, changed, unchanged) of the role steps, from `run --json` (with --check: their plans); a
    step counts once, however many lines its plan has."""
    changes: list[str] = []
    changed = unchanged = 0
    for step_id, entry in (data.get("steps") or {}).items():
        state = entry.get("state")
        if state == "planned" and entry.get("changes"):
            changes += [f"role step {step_id}: would change: {line}" for line in entry["changes"]]
            changed += 1
        elif state == "unplanned":
            changes.append(f"note: role step {step_id}: not checked (it has no plan yet; a run converges it)")
        elif state == "done" and entry.get("changed"):
            changes.append(f"role step {step_id}: {entry.get('description') or 'changed'}")
            changed += 1
        elif state in ("planned", "done"):
            unchanged += 1
    return changes, changed, unchanged


class HostApply:
    """One host's apply: probe, render, ship, converge, role steps, clean up; every phase reported."""

    def __init__(self, name: str, profile: str, transport: Transport, *, overlays: Sequence[Path] = (),
                 check: bool = False, settings: Mapping[str, Any] | None = None,
                 phase: Phase = lambda _: None) -> None:
        self.name = name
        self.profile = profile
        self.transport = transport
        self.overlays = tuple(overlays)
        self.check = check
        self.settings = dict(settings) if settings is not None else None
        self.phase = phase
        self.secrets = find_secrets(self.settings or {})
        self.report = HostReport(name=name, target=str(transport.target))

    def run(self) -> HostReport:
        """Apply; the report carries the error instead of raising (input errors in the profile excepted)."""
        started = time.monotonic()
        try:
            self._apply()
        except InputError:
            raise
        except AgentFailure as exc:
            self.report.error = redact(exc.message, self.secrets)
            self.report.detail = [redact(line, self.secrets) for line in exc.detail]
        except GoldenError as exc:
            self.report.error = redact(exc.message, self.secrets)
        finally:
            self.report.seconds = time.monotonic() - started
        return self.report

    def _apply(self) -> None:
        if self.settings is not None:
            # The agent's own contract, before anything is sent: it would refuse the same at its start.
            errors = host_errors(self.settings)
            if errors:
                raise GoldenError(f"host.json for {self.name}: {'; '.join(errors)}",
                                  hint="host.json is the agent's contract: firstboot/golden_firstboot/host_schema.py")
        self.phase("connecting")
        probe = self.transport.run(["sh", "-c", PROBE], root=False).stdout
        release = host_release(probe, str(self.transport.target))
        self.report.release = release
        profile = resolve(self.profile, release, self.overlays)
        user_data = apply_user_data(profile)
        prefix = f"{REMOTE_DIR}/{REMOTE_PREFIX}"
        remote = self.transport.run(["mktemp", "-d", prefix + "XXXXXXXX"], root=False).stdout.strip()
        if not remote.startswith(prefix):
            raise GoldenError(f"{self.transport.target}: mktemp gave {remote!r}")
        try:
            self._remove_stale(remote)
            if python_version(probe) is None:
                self._install_python()
            self.phase("shipping the agent")
            self._ship(remote, user_data)
            self.phase("converging" if not self.check else "checking")
            self._converge(remote)
            self.phase("role steps" if not self.check else "checking role steps")
            self._role_steps(remote)
        finally:
            try:
                self.transport.run(["rm", "-rf", "--", remote], check=False, cleanup=True)
            except GoldenError:
                pass  # the host went away: the apply's own error says so

    def _remove_stale(self, own: str) -> None:
        """Remove what earlier applies killed midway left in /tmp (their host.json carries the cluster's secrets);
        each one is a note, not a change of the host."""
        proc = self.transport.run(["sh", "-c", STALE_CLEANUP, "sh", REMOTE_DIR, REMOTE_PREFIX + "*",
                                   self.transport.target.user, own], check=False)
        removed = [line.strip() for line in proc.stdout.splitlines() if line.strip().startswith(REMOTE_DIR + "/")]
        self._record([f"note: removed {path} (left by an interrupted apply)" for path in removed], 0, 0)

    def _install_python(self) -> None:
        """A host without python3 (a minimal install) gets Debian's python3 first: the agent needs it."""
        if self.check:
            self._record(["python3 (the agent's interpreter): would be installed"], 1, 0)
            raise GoldenError(f"{self.transport.target}: python3 is not installed; --check cannot go further",
                              hint="run golden apply without --check: it installs python3 first")
        self.phase("installing python3")
        self.transport.run(["sh", "-c", "apt-get update -q && DEBIAN_FRONTEND=noninteractive "
                            "apt-get install -y -q python3"], timeout=CONVERGE_TIMEOUT)
        self._record(["package python3: installed (the agent's interpreter)"], 1, 0)

    def _ship(self, remote: str, user_data: str) -> None:
        with scratch("golden-apply") as tmp:
            local = Path(tmp)
            files = [local / AGENT, local / USER_DATA]
            (local / AGENT).write_bytes(build_zipapp())
            (local / USER_DATA).write_text(user_data)
            (local / USER_DATA).chmod(0o600)
            if self.settings is not None:  # with --check too: the role steps plan with them (installing nothing)
                (local / HOST_SETTINGS).touch(mode=0o600)
                (local / HOST_SETTINGS).write_text(json.dumps(self.settings, indent=2, sort_keys=True) + "\n")
                files.append(local / HOST_SETTINGS)
            self.transport.put(files, remote)

    def _converge(self, remote: str) -> None:
        argv = ["python3", f"{remote}/{AGENT}", "converge", "--json", "--user-data", f"{remote}/{USER_DATA}"]
        if self.check:
            argv.append("--check")
        proc = self.transport.run(argv, timeout=CONVERGE_TIMEOUT, check=False, secrets=self.secrets)
        if proc.returncode != 0:
            # what the engine changed before it stopped is reported, then why it stopped
            try:
                data = agent_json(proc.stdout, "converge")
            except GoldenError:
                raise AgentFailure(f"converge failed (exit {proc.returncode}): {self._stderr_tail(proc.stderr)}",
                                   []) from None
            self._record([redact(str(line), self.secrets) for line in data.get("changes") or []], 0, 0)
            message, detail = failure_detail(data.get("failure"))
            raise AgentFailure(f"converge failed (exit {proc.returncode}): {message}", detail)
        changes, changed, unchanged = parse_converge(proc.stdout)
        self._record([redact(line, self.secrets) for line in changes], changed, unchanged)

    def _role_steps(self, remote: str) -> None:
        argv = ["python3", f"{remote}/{AGENT}", "run", "--rerun", "--json"]
        if self.check:
            argv.append("--check")
        if self.settings is not None:
            argv += ["--host-settings", f"{remote}/{HOST_SETTINGS}"]
        proc = self.transport.run(argv, timeout=AGENT_TIMEOUT, check=False, secrets=self.secrets)
        try:
            data = agent_json(proc.stdout, "run")
        except GoldenError:
            if proc.returncode == 0:
                raise
            raise AgentFailure(f"role steps failed (exit {proc.returncode}): {self._stderr_tail(proc.stderr)}",
                               []) from None
        self._record(*parse_steps(data))
        if proc.returncode != 0:
            message, detail = failure_detail(data.get("failure"))
            raise AgentFailure(f"role steps failed (exit {proc.returncode}): {message}", detail)

    def _stderr_tail(self, stderr: str) -> str:
        """The agent's last stderr lines, for a failure it could not report in JSON (it did not start)."""
        lines = [line.removeprefix("golden-firstboot: ").strip() for line in stderr.strip().splitlines()]
        return redact("; ".join(line for line in lines[-6:] if line), self.secrets) or "no output"

    def _record(self, changes: list[str], changed: int, unchanged: int) -> None:
        self.report.changes += changes
        self.report.changed += changed
        self.report.unchanged += unchanged


def apply_host(name: str, profile: str, transport: Transport, **kwargs: Any) -> HostReport:
    """Converge (or with check=True, inspect) the host behind transport to profile; a HostReport."""
    return HostApply(name, profile, transport, **kwargs).run()
