"""The one place that runs external commands: argv lists only, logged with secrets redacted,
failures raised as CommandError carrying the command and its stderr tail."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from . import agent_contract
from .errors import CommandError, MissingToolError
from .log import log

#: Hints for tools a user may be missing: what to install on Debian.
INSTALL_HINTS: dict[str, str] = {
    "packer": "apt-get install packer",
    "cloud-init": "apt-get install cloud-init",
    "mmdebstrap": "apt-get install mmdebstrap",
    "qemu-system-x86_64": "apt-get install qemu-system-x86",
    "qemu-img": "apt-get install qemu-utils",
    "parted": "apt-get install parted",
    "mkfs.ext4": "apt-get install e2fsprogs",
    "debugfs": "apt-get install e2fsprogs",
    "grub-mkimage": "apt-get install grub-pc-bin grub2-common",
    "mkfs.vfat": "apt-get install dosfstools",
    "mcopy": "apt-get install mtools",
    "ssh": "apt-get install openssh-client",
    "ssh-keygen": "apt-get install openssh-client",
}

STDERR_TAIL_LINES = 20


def redact(argv: Sequence[str], secrets: Iterable[str] = ()) -> str:
    """The command line as a shell would read it, with every secret replaced by ***."""
    return agent_contract.redact(shlex.join(str(a) for a in argv), secrets)


def require(*tools: str, purpose: str) -> None:
    """Fail with one clear message naming every missing tool and how to install it."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        installs = sorted({INSTALL_HINTS.get(t, f"install {t}") for t in missing})
        raise MissingToolError(
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required {purpose}",
            hint="; ".join(installs),
        )


def run(
    argv: Sequence[object],
    *,
    check: bool = True,
    capture: bool = True,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float | None = None,
    secrets: Iterable[str] = (),
    hint: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv, log it (secrets redacted); on failure raise CommandError with the stderr tail."""
    args = [str(a) for a in argv]
    secrets = list(secrets)
    cmdline = redact(args, secrets)
    log.debug("$ %s", cmdline)
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    text_input = input.decode() if isinstance(input, bytes) else input
    try:
        proc = subprocess.run(
            args,
            input=text_input,
            text=True,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            env=full_env,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        require(args[0], purpose=f"to run {args[0]}")
        raise
    except subprocess.TimeoutExpired as exc:
        raise CommandError(cmdline, -1, f"timed out after {timeout}s", hint=hint) from exc
    if check and proc.returncode != 0:
        stderr = proc.stderr or proc.stdout or ""
        tail = agent_contract.redact("\n".join(stderr.strip().splitlines()[-STDERR_TAIL_LINES:]), secrets)
        raise CommandError(cmdline, proc.returncode, tail, hint=hint)
    return proc


def spawn(
    argv: Sequence[object],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    stdout: int | None = subprocess.PIPE,
    stderr: int | None = subprocess.STDOUT,
    secrets: Iterable[str] = (),
) -> subprocess.Popen[str]:
    """Start a long-running command (packer build, a QEMU guest) in its own process group."""
    args = [str(a) for a in argv]
    log.debug("$ %s &", redact(args, secrets))
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    return subprocess.Popen(
        args, env=full_env, cwd=cwd, stdout=stdout, stderr=stderr, text=True, start_new_session=True
    )


def stop(proc: subprocess.Popen[str], grace: float = 10.0) -> None:
    """Stop a spawned command and everything it started (its whole process group)."""
    if proc.poll() is not None:
        return
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=grace)


def kill(proc: subprocess.Popen[str]) -> None:
    """Kill a spawned command and its process group at once (SIGKILL: no chance to clean up)."""
    if proc.poll() is not None:
        return
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
