"""The converge engine's parts that every module of it shares: the report of changes and the engine's state file,
beside the machine (`host.Host`) and the engine's error, handed on from where they live. The modules (converge_apt,
converge_files, converge_system, converge_restart) import this; converge.py, above them, orders them."""

from __future__ import annotations

import json
import os
from typing import Any

from .host import CHROOT_PATH, SHIM_DIR, Host
from .system import ConvergeError

__all__ = ["CHROOT_PATH", "SHIM_DIR", "STATE_PATH", "ConvergeError", "Host", "Report", "load_state", "save_state"]

#: Where the engine records the commands it ran (their digest): a converge that changes nothing runs none.
STATE_PATH = "/var/lib/golden/converge.json"


class Report:
    """One line per change (or would-be change); counts for the summary."""

    def __init__(self, check: bool, verbose: bool = False, out: Any = None) -> None:
        self.check = check
        self.verbose = verbose
        self.changed = 0
        self.unchanged = 0
        self.commands = 0
        self.lines = []  # type: list[str]
        #: files this converge changed (not in check mode): a live host reloads the services they configure
        self.changed_paths = []  # type: list[str]
        self._out = out

    def _emit(self, line: str) -> None:
        self.lines.append(line)
        if self._out is not None:
            self._out.write(line + "\n")
            self._out.flush()

    def change(self, what: str) -> None:
        self.changed += 1
        self._emit(("would change: " if self.check else "changed: ") + what)

    def same(self, what: str) -> None:
        self.unchanged += 1
        if self.verbose:
            self._emit("unchanged: " + what)

    def ran(self, what: str) -> None:
        self.commands += 1
        self._emit(("would run: " if self.check else "ran: ") + what)

    def boot(self, what: str) -> None:
        if self.verbose:
            self._emit(("would run: " if self.check else "ran: ") + what)

    def note(self, what: str) -> None:
        self._emit("note: " + what)

    def summary(self) -> str:
        verb = "would change" if self.check else "changed"
        text = f"{verb}: {self.changed}, unchanged: {self.unchanged}"
        if self.commands:
            text += ", commands {}: {}".format("to run" if self.check else "run", self.commands)
        return text


def load_state(host: Host) -> dict[str, Any]:
    """The engine's state on the host (digests of what it last ran and fetched); {} when there is none."""
    try:
        with open(host.path(STATE_PATH), encoding="utf-8") as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def save_state(host: Host, state: dict[str, Any]) -> None:
    """Replace the engine's state (root only, written whole or not at all)."""
    path = host.path(STATE_PATH)
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(state, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.chmod(path + ".tmp", 0o600)
    os.rename(path + ".tmp", path)
