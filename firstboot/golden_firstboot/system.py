"""The agent's one door to the system: commands (argv lists, redacted logs), files written only when
their content changes, and bounded retries with backoff."""

from __future__ import annotations

import functools
import os
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Callable, Iterable, Sequence, TypeVar

from .host_schema import redact

T = TypeVar("T")

STDERR_TAIL_LINES = 15
#: This host's cluster settings (cloud-init write_files, root only): named in every settings error.
HOST = "/etc/golden/host.json"


def log(message: str) -> None:
    """One line to stderr: under systemd it lands in the journal of golden-firstboot.service."""
    sys.stderr.write("golden-firstboot: " + message + "\n")
    sys.stderr.flush()


class FirstbootError(Exception):
    """A failure the operator can act on: one line, and a hint saying what to do."""

    exit_status = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class SettingsError(FirstbootError):
    """host.json or image.json is missing something a step needs: nothing can fix it by waiting."""

    exit_status = 2


class ConvergeError(FirstbootError):
    """The cloud-config cannot be applied (an unknown key, a package missing from the layer, an owner or a path
    that is not in the tree)."""

    exit_status = 2


class RetryExhausted(FirstbootError):
    """A peer never came up within the retry budget (EX_TEMPFAIL: the next boot or --rerun may pass)."""

    exit_status = 75


def one_line(message: str) -> str:
    """A failure in one line: its first, and for a command its stderr's last (the tool's own reason, which the
    first line alone, `command failed (exit 1): restic backup ...`, leaves out)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return "failed"
    return lines[0] if len(lines) == 1 else f"{lines[0]}: {lines[-1]}"


class CommandError(FirstbootError):
    """An external command failed; the message carries the redacted command and its stderr tail."""

    def __init__(self, cmdline: str, returncode: int, stderr_tail: str) -> None:
        message = f"command failed (exit {returncode}): {cmdline}"
        if stderr_tail.strip():
            message += "\n" + "\n".join("  " + line for line in stderr_tail.strip().splitlines())
        super().__init__(message)
        self.cmdline = cmdline
        self.returncode = returncode
        self.stderr_tail = stderr_tail


def failure_fields(exc: BaseException) -> dict:
    """A failure as the agent reports it in JSON (`run --json`, `converge --json`, the status file): its message's
    first line and hint; for a failed command, or one a retry gave up on, the command line (redacted), its exit
    status and the tail of its stderr."""
    message = exc.message if isinstance(exc, FirstbootError) else f"{type(exc).__name__}: {exc}"
    out = {"message": (message.splitlines() or [""])[0], "hint": getattr(exc, "hint", "")}
    command = exc if isinstance(exc, CommandError) else exc.__cause__
    if isinstance(command, CommandError):
        out.update(command=command.cmdline, exit=command.returncode,
                   stderr_tail=command.stderr_tail.strip().splitlines())
    return out


class Result:
    """What a finished command returned."""

    def __init__(self, returncode: int, stdout: str = "", stderr: str = "") -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def _die_with_the_agent(agent: int) -> None:
    """In a command's process before it starts: the kernel sends it SIGTERM when the agent dies (Linux's
    PR_SET_PDEATHSIG). A killed agent (an interrupted `golden apply`) left its seed import running, and the rerun's
    import beside it failed: two imports of one dump at once exit 1 (ERROR 1146, a table dropped by the other)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: nothing to ask for
        return
    if os.getppid() != agent:  # the agent died before the request was in place
        os.kill(os.getpid(), signal.SIGTERM)


class Runner:
    """Runs every external command of the agent. Tests subclass it and replace `execute`.

    `die_with_agent`: the commands end when the agent dies (the role steps); the converge engine's are left
    to finish (an apt-get killed midway leaves dpkg to repair, which a rerun does)."""

    def __init__(self, secrets: Iterable[str] = (), logger: Callable[[str], None] = log,
                 die_with_agent: bool = True) -> None:
        self.secrets = [s for s in secrets if s]
        self.log = logger
        self.die_with_agent = die_with_agent

    def run(
        self,
        argv: Sequence[str],
        input: str | None = None,
        check: bool = True,
        env: dict[str, str] | None = None,
        stdin_path: str | None = None,
        stdout_path: str | None = None,
        timeout: float | None = None,
    ) -> Result:
        """Run argv (stdin from `input` or a file, stdout to a file if asked); raise CommandError on failure."""
        args = [str(a) for a in argv]
        cmdline = redact(" ".join(shlex.quote(a) for a in args), self.secrets)
        if stdin_path:
            cmdline += " < " + stdin_path
        if stdout_path:
            cmdline += " > " + stdout_path
        self.log("$ " + cmdline)
        result = self.execute(args, input, env, stdin_path, stdout_path, timeout)
        if check and result.returncode != 0:
            text = (result.stderr or result.stdout or "").strip().splitlines()
            tail = redact("\n".join(text[-STDERR_TAIL_LINES:]), self.secrets)
            raise CommandError(cmdline, result.returncode, tail)
        return result

    def execute(
        self,
        args: list[str],
        input: str | None,
        env: dict[str, str] | None,
        stdin_path: str | None,
        stdout_path: str | None,
        timeout: float | None,
    ) -> Result:
        """Start the process for real: the only subprocess call of the agent."""
        full_env = None
        if env:
            full_env = dict(os.environ)
            full_env.update(env)
        stdin = open(stdin_path, "rb") if stdin_path else None
        stdout = open(stdout_path, "wb") if stdout_path else None
        try:
            proc = subprocess.run(
                args,
                input=input.encode() if input is not None else None,
                stdin=stdin if input is None else None,
                stdout=stdout if stdout is not None else subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=full_env,
                timeout=timeout,
                preexec_fn=functools.partial(_die_with_the_agent, os.getpid()) if self.die_with_agent else None,
            )
        except FileNotFoundError:
            return Result(127, "", f"{args[0]}: command not found")
        except subprocess.TimeoutExpired:
            return Result(124, "", f"timed out after {timeout}s")
        finally:
            for handle in (stdin, stdout):
                if handle is not None:
                    handle.close()
        out = proc.stdout.decode(errors="replace") if proc.stdout else ""
        return Result(proc.returncode, out, proc.stderr.decode(errors="replace"))


def read_text(path: str) -> str | None:
    """The file's text, or None when it does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def write_file(path: str, content: str, mode: int = 0o644) -> bool:
    """Write content atomically when it differs from what is there; True when the file changed.

    The mode is set on the temporary file before the rename, so a secret is never readable by others."""
    if read_text(path) == content:
        if (os.stat(path).st_mode & 0o7777) != mode:
            os.chmod(path, mode)
            return True
        return False
    os.makedirs(os.path.dirname(path), exist_ok=True)
    replace_file(path, content.encode("utf-8"), mode)
    return True


def replace_file(path: str, data: bytes, mode: int, owner: tuple[int, int] | None = None,
                 prefix: str = ".golden-") -> None:
    """Write data to path through a temporary file in its directory, mode (and owner) set before the rename:
    a reader sees the old file or the new one, never a part, and a secret is never readable by others."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=prefix)
    try:
        if owner is not None:
            os.fchown(fd, owner[0], owner[1])
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_file(path: str) -> bool:
    """Remove path if present; True when something was removed."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def chown(path: str, user: str, group: str) -> None:
    """Give path to user:group, by name (the accounts exist only inside the image)."""
    import grp
    import pwd

    os.chown(path, pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid)


class RetryPolicy:
    """How long to keep trying while a peer is not up: attempts, first delay, doubling up to max_delay."""

    def __init__(self, attempts: int = 20, delay: float = 2.0, max_delay: float = 30.0) -> None:
        self.attempts = max(1, int(attempts))
        self.delay = float(delay)
        self.max_delay = float(max_delay)

    def delays(self) -> list[float]:
        """The pauses between attempts (one fewer than attempts)."""
        out = []
        delay = self.delay
        for _ in range(self.attempts - 1):
            out.append(min(delay, self.max_delay))
            delay *= 2
        return out

    def budget(self) -> float:
        """Seconds spent sleeping when every attempt fails: what the systemd timeout must allow for."""
        return sum(self.delays())


def retry(
    action: Callable[[], T],
    what: str,
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    logger: Callable[[str], None] = log,
    retry_on: tuple = (Exception,),
    give_up_on: tuple = (),
) -> T:
    """Call action until it returns without raising one of retry_on; RetryExhausted when the budget is spent.

    An exception in give_up_on goes through at once: waiting cannot fix it."""
    delays = policy.delays()
    for attempt in range(1, policy.attempts + 1):
        try:
            return action()
        except give_up_on:
            raise
        except retry_on as exc:  # noqa: B030 -- a tuple of exception classes given by the caller
            last = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if attempt == policy.attempts:
                raise RetryExhausted(
                    f"gave up {what} after {attempt} attempts over {policy.budget():.0f}s: {last}",
                    hint="start the peer, then run `golden-firstboot --rerun` (or reboot)",
                ) from exc
            pause = delays[attempt - 1]
            logger(f"{what}: attempt {attempt}/{policy.attempts} failed ({last}); next in {pause:.0f}s")
            sleep(pause)
    raise AssertionError("unreachable")
