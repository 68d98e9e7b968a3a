"""Commands and files to a running host over the system's OpenSSH client (`ssh`, `scp`), through run.py.

Key-based only (BatchMode: never a password prompt), bounded connect and keep-alive timeouts, one shared
connection per host (ControlMaster), `sudo -n` when the login user is not root. Host keys are checked
explicitly: against the user's known_hosts (or --known-hosts FILE) with StrictHostKeyChecking=yes by default;
`accept_new` trusts a host seen for the first time and records its key there (StrictHostKeyChecking=accept-new),
and a key that changed is always refused."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..core.errors import CommandError, GoldenError
from ..core.fs import private_dir
from ..core.run import STDERR_TAIL_LINES, require, run
from .target import SSHTarget

CONNECT_TIMEOUT = 15
#: ssh sends a keep-alive every 15 s and gives up after 4 unanswered: a dead host fails in about a minute.
ALIVE_INTERVAL = 15
ALIVE_COUNT = 4
#: How long the shared connection outlives its last command.
CONTROL_PERSIST = 120
#: A short command (probe, mktemp, status).
SHORT_TIMEOUT = 120.0
#: ssh's exit status for its own errors (the remote command's status otherwise).
SSH_FAILED = 255


def ssh_error(target: SSHTarget, stderr: str, what: str = "SSH") -> GoldenError:
    """ssh's own failure (exit 255: no route, refused, host key, authentication) as one line with a hint."""
    lines = [line for line in (stderr or "").strip().splitlines() if line.strip()]
    last = lines[-1] if lines else "no answer"
    hint = "check the address, the key (--identity) and the host key (--known-hosts, --accept-new-host-key)"
    if "Host key verification failed" in (stderr or "") or "REMOTE HOST IDENTIFICATION HAS CHANGED" in (stderr or ""):
        hint = ("the host's key is unknown or changed: add it to known_hosts (ssh-keyscan, checked by hand), "
                "or pass --accept-new-host-key for a host seen for the first time")
    return GoldenError(f"{target}: {what} failed: {last}", hint=hint)


class Transport(Protocol):
    """What apply needs from a host: run a command (as root), copy files there, and let go."""

    target: SSHTarget

    def run(self, argv: Sequence[str], *, root: bool = True, timeout: float = SHORT_TIMEOUT,
            check: bool = True, secrets: Iterable[str] = (), cleanup: bool = False
            ) -> subprocess.CompletedProcess[str]: ...

    def put(self, files: Sequence[Path], remote_dir: str, *, timeout: float = SHORT_TIMEOUT) -> None: ...

    def cancel(self) -> None: ...

    def close(self) -> None: ...


def interrupted(target: SSHTarget) -> GoldenError:
    return GoldenError(f"{target}: interrupted", hint="apply again: it converges")


def remote_command(argv: Sequence[str], *, sudo: bool) -> str:
    """The one string ssh hands to the remote login shell: argv quoted for a POSIX shell, behind `sudo -n --`
    when the login user is not root (-n: a sudo that wants a password fails at once instead of waiting)."""
    words = ["sudo", "-n", "--", *argv] if sudo else list(argv)
    return shlex.join(words)


@dataclass
class SSHOptions:
    """How to authenticate and trust hosts: the same for every host of a run."""

    identity: Path | None = None
    known_hosts: Path | None = None
    accept_new: bool = False
    connect_timeout: int = CONNECT_TIMEOUT
    extra: tuple[str, ...] = field(default_factory=tuple)

    def argv(self, control_path: Path | None) -> list[str]:
        """The -o options shared by ssh and scp."""
        opts = {
            "BatchMode": "yes",
            "ConnectTimeout": str(self.connect_timeout),
            "ServerAliveInterval": str(ALIVE_INTERVAL),
            "ServerAliveCountMax": str(ALIVE_COUNT),
            "StrictHostKeyChecking": "accept-new" if self.accept_new else "yes",
            "LogLevel": "ERROR",
        }
        if self.known_hosts is not None:
            opts["UserKnownHostsFile"] = str(self.known_hosts)
            opts["GlobalKnownHostsFile"] = "/dev/null"
        if self.identity is not None:
            opts["IdentitiesOnly"] = "yes"
        if control_path is not None:
            opts.update({"ControlMaster": "auto", "ControlPath": str(control_path),
                         "ControlPersist": str(CONTROL_PERSIST)})
        out: list[str] = []
        for key, value in opts.items():
            out += ["-o", f"{key}={value}"]
        if self.identity is not None:
            out += ["-i", str(self.identity)]
        return out + list(self.extra)


class SSHTransport:
    """One host over OpenSSH; a context manager that closes the shared connection on the way out."""

    def __init__(self, target: SSHTarget, options: SSHOptions | None = None) -> None:
        require("ssh", "scp", purpose="to apply a profile to a host over SSH")
        self.target = target
        self.options = options or SSHOptions()
        # A short private directory: the socket path must fit in sun_path (108 bytes); one a killed apply left
        # is removed here.
        self._control_dir = private_dir("golden-ssh")
        self._control = self._control_dir / "c"
        self.cancelled = False
        self._lock = threading.Lock()
        self._busy = 0  # commands other than cleanups under way

    def __enter__(self) -> SSHTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ssh_argv(self, argv: Sequence[str], *, root: bool = True) -> list[str]:
        """ssh's argv for running argv on the host (as root: directly, or through sudo)."""
        return ["ssh", *self.options.argv(self._control), "-p", str(self.target.port), "--",
                self.target.destination, remote_command(argv, sudo=root and self.target.needs_sudo)]

    def scp_argv(self, files: Sequence[Path], remote_dir: str) -> list[str]:
        """scp's argv copying files into remote_dir (as the login user)."""
        return ["scp", "-q", *self.options.argv(self._control), "-P", str(self.target.port), "--",
                *[str(f) for f in files], f"{self.target.scp_host}:{remote_dir}/"]

    def run(self, argv: Sequence[str], *, root: bool = True, timeout: float = SHORT_TIMEOUT,
            check: bool = True, secrets: Iterable[str] = (), cleanup: bool = False
            ) -> subprocess.CompletedProcess[str]:
        """Run argv on the host; CommandError (command, exit status, stderr tail) when it fails and check.
        After cancel() only a cleanup command runs; any other is refused as interrupted."""
        with self._busy_unless(cleanup):
            proc = run(self.ssh_argv(argv, root=root), check=False, timeout=timeout, secrets=secrets)
        if proc.returncode == SSH_FAILED:
            raise interrupted(self.target) if self.cancelled and not cleanup else ssh_error(self.target, proc.stderr)
        if check and proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-STDERR_TAIL_LINES:])
            for secret in secrets:
                if secret:
                    tail = tail.replace(secret, "***")
            hint = "sudo must not ask for a password (a NOPASSWD rule)" if "sudo" in tail and "password" in tail \
                else None
            raise CommandError(f"{self.target}: {shlex.join(argv)}", proc.returncode, tail, hint=hint)
        return proc

    def put(self, files: Sequence[Path], remote_dir: str, *, timeout: float = SHORT_TIMEOUT) -> None:
        """Copy files into remote_dir on the host."""
        with self._busy_unless(False):
            proc = run(self.scp_argv(files, remote_dir), check=False, timeout=timeout)
        if proc.returncode != 0:
            raise interrupted(self.target) if self.cancelled else ssh_error(self.target, proc.stderr,
                                                                             what="copying files")

    @contextmanager
    def _busy_unless(self, cleanup: bool) -> Iterator[None]:
        """Around a command: refused once cancelled (a cleanup excepted), counted while it runs."""
        with self._lock:
            if cleanup:
                busy = 0
            elif self.cancelled:
                raise interrupted(self.target)
            else:
                busy = 1
            self._busy += busy
        try:
            yield
        finally:
            with self._lock:
                self._busy -= busy

    def cancel(self) -> None:
        """Interrupt this host's apply from another thread (Ctrl-C or SIGTERM on `golden cluster apply`): no new
        command starts but a cleanup, and those under way end with the shared connection, stopped while any
        runs (asked again, it stops one that started as it was asked the first time; a cleanup is left alone)."""
        with self._lock:
            self.cancelled = True
            busy = self._busy
        if busy:
            self._stop_master()

    def _stop_master(self) -> None:
        if self._control.exists():
            try:
                run(["ssh", "-o", f"ControlPath={self._control}", "-O", "exit", "--", self.target.destination],
                    check=False, timeout=10)
            except CommandError:
                pass

    def close(self) -> None:
        """Stop the shared connection (if one was made) and remove its socket directory."""
        self._stop_master()
        shutil.rmtree(self._control_dir, ignore_errors=True)
