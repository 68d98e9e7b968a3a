"""User-facing errors: one line saying what and where, plus a hint saying what to do."""

from __future__ import annotations

# Exit statuses: 2 for bad input (profile, overlay, arguments), 1 for a failed operation.
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


class GoldenError(Exception):
    """An error the user can act on; printed as one line (plus hint) without a traceback."""

    exit_status = EXIT_FAILED

    def __init__(self, message: str, hint: str | None = None, lines: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        #: The lines the error is printed as. One by default: a line break inside the message (from input)
        #: is escaped when printed, never a line of its own; errors that list several problems pass them here.
        self.lines = list(lines) if lines is not None else [message]

    def __str__(self) -> str:
        return self.message


class InputError(GoldenError):
    """Bad input: a profile, overlay or cluster file, or a command-line argument. Exit status 2."""

    exit_status = EXIT_BAD_INPUT


class CommandError(GoldenError):
    """An external command failed; carries the command line and the tail of its stderr."""

    def __init__(self, cmdline: str, returncode: int, stderr_tail: str, hint: str | None = None) -> None:
        tail = stderr_tail.strip()
        lines = [f"command failed (exit {returncode}): {cmdline}", *("  " + line for line in tail.splitlines())]
        super().__init__("\n".join(lines), hint, lines=lines)
        self.cmdline = cmdline
        self.returncode = returncode
        self.stderr_tail = tail


class MissingToolError(GoldenError):
    """A required host tool is not installed."""
