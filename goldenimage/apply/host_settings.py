"""A host.json given to `golden apply --host-settings`, read bounded and checked against the agent's contract
before anything is sent to the host."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..core.agent_contract import host_errors
from ..core.errors import InputError
from ..core.inert import CONTROL, excerpt
from ..core.yamlfile import display_path, read_input_text


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON: Python's parser takes them unless told."""
    raise ValueError(f"{name} is not a JSON number")


#: host.json as `golden cluster render` writes it is small and shallow: a bound on what one may hold.
MAX_SETTINGS_NODES = 100_000
MAX_SETTINGS_DEPTH = 32
MAX_KEY = 256


def check_host_settings(settings: dict[str, Any], where: str) -> None:
    """The shape every host.json has: keys one short line each (no control character or line break), nesting
    and size bounded; InputError naming the key otherwise. The values are the agent's to check."""
    stack: list[tuple[Any, str, int]] = [(settings, "", 0)]
    nodes = 0
    while stack:
        value, key, depth = stack.pop()
        nodes += 1
        if nodes > MAX_SETTINGS_NODES or depth > MAX_SETTINGS_DEPTH:
            raise InputError(f"{where}: too large or nested too deep (at most {MAX_SETTINGS_NODES} values, "
                             f"{MAX_SETTINGS_DEPTH} levels)")
        if isinstance(value, dict):
            for name, item in value.items():
                path = f"{key}.{name}" if key else str(name)
                if not name or len(name) > MAX_KEY or CONTROL.search(name):
                    raise InputError(f"{where}: {excerpt(path)}: not a settings key (one short line)")
                stack.append((item, path, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{key}[{i}]", depth + 1) for i, item in enumerate(value))


def read_host_settings(path: Path, option: str) -> dict[str, Any]:
    """The host settings in `path`: a JSON object whose shape is bounded and which the agent's host.json
    contract accepts; InputError naming `option`, the file and the first problem otherwise."""
    where = f"{option} {display_path(path)}"
    text = read_input_text(path, what=where)  # bounded: never /dev/zero or a FIFO
    try:
        settings = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        problem = f"{exc.msg} (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise InputError(f"{where}: not valid JSON: {problem}"[:300]) from None
    if not isinstance(settings, dict):
        raise InputError(f"{where}: must hold a JSON object")
    check_host_settings(settings, where)
    errors = host_errors(settings)
    if errors:
        raise InputError(f"{where}: {errors[0]}" + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
                         hint="host.json is the agent's contract: firstboot/golden_firstboot/host_schema.py")
    return settings
