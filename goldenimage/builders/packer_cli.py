"""The packer command line: its version, `packer validate`, and its machine-readable output."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..run import require, run

#: Packer phones home for update checks unless told not to; nothing leaves this machine.
PACKER_ENV = {"CHECKPOINT_DISABLE": "1", "PACKER_NO_COLOR": "1"}


@cache
def packer_version() -> tuple[int, int, int]:
    """The installed Packer's version, such as (1, 6, 6)."""
    require("packer", purpose="to validate and bake images")
    out = run(["packer", "version"], env=PACKER_ENV).stdout
    m = re.search(r"v?(\d+)\.(\d+)\.(\d+)", out)
    if not m:
        return (0, 0, 0)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)))


def supports_required_plugins() -> bool:
    """`packer { required_plugins }` exists from Packer 1.7 on; 1.6 rejects the block."""
    return packer_version() >= (1, 7, 0)


@dataclass(frozen=True)
class MachineLine:
    """One line of `packer -machine-readable` output: timestamp,target,type,data..."""

    timestamp: str
    target: str
    type: str
    data: tuple[str, ...]


def parse_machine_line(line: str) -> MachineLine | None:
    """Parse a machine-readable line; Packer escapes commas as %!(PACKER_COMMA) and newlines as \\n."""
    parts = line.rstrip("\n").split(",")
    if len(parts) < 3 or not parts[0].isdigit():
        return None
    data = tuple(p.replace("%!(PACKER_COMMA)", ",").replace("\\n", "\n").replace("\\r", "") for p in parts[3:])
    return MachineLine(parts[0], parts[1], parts[2], data)


def validate(template: Path, var_file: Path, env: dict[str, str] | None = None) -> tuple[bool, str]:
    """Run `packer validate`; (ok, message) with Packer's own errors when it refuses the template."""
    proc = run(
        ["packer", "validate", "-machine-readable", f"-var-file={var_file.name}", template.name],
        cwd=template.parent,
        env={**PACKER_ENV, **(env or {})},
        check=False,
        timeout=120,
    )
    messages = []
    for line in proc.stdout.splitlines():
        parsed = parse_machine_line(line)
        if parsed and parsed.type == "ui" and len(parsed.data) >= 2 and parsed.data[0] == "error":
            messages.append(parsed.data[1].strip())
    text = "\n".join(messages) or proc.stderr.strip() or proc.stdout.strip()
    # Packer also warns about the base checksum "none" as an error-level UI line; only the exit counts.
    return proc.returncode == 0, text
