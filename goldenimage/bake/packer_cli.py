"""The packer command line: its version, `packer init` of the plugins a template needs, `packer validate`,
and its machine-readable output.

Packer 1.6 has every builder inside; from 1.7 builders are plugins that `packer init` installs from the
template's `packer { required_plugins }` block (from 1.10 none is bundled). They are kept under the cache
directory, or in $PACKER_PLUGIN_PATH when the user set one.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..core.errors import GoldenError, InputError
from ..core.paths import cache_dir
from ..core.run import require, run

#: Packer phones home for update checks unless told not to; nothing leaves this machine.
PACKER_ENV = {"CHECKPOINT_DISABLE": "1", "PACKER_NO_COLOR": "1"}
#: Downloading a plugin takes seconds; a stuck download is stopped.
INIT_TIMEOUT_S = 600

_init_lock = threading.Lock()
#: Per set of plugins: None once installed, or the error that the one attempt met (not retried per template).
_init_results: dict[str, PluginError | None] = {}


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
    return packer_version() >= PLUGINS_FROM


#: Templates are HCL2 in JSON syntax with the builders of Packer 1.6 (Debian 12's 1.6.6) or, from 1.7, with
#: the external plugins' options and a `packer { required_plugins }` block: every release from 1.7 takes the
#: plugin form. NEWEST_PACKER is the release a rendering is for when no Packer is installed to ask.
OLDEST_PACKER = (1, 6, 0)
PLUGINS_FROM = (1, 7, 0)
NEWEST_PACKER = (1, 14, 0)


def parse_packer_version(text: str) -> tuple[int, int, int]:
    """X.Y or X.Y.Z (a leading v allowed) as a version tuple; InputError for anything else or below 1.6."""
    m = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not m:
        raise InputError(f"--packer-version: {text!r} is not a Packer version", hint="give X.Y, such as 1.11")
    version = (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))
    if version < OLDEST_PACKER:
        raise InputError(f"--packer-version: {text} is older than Packer 1.6, the oldest the templates are for",
                         hint="give 1.6 or later")
    return version


def render_packer_version(requested: str | None = None) -> tuple[int, int, int]:
    """The Packer a template is rendered for: the one asked for, else the installed one, else the newest
    supported. Rendering never needs a local Packer."""
    if requested:
        return parse_packer_version(requested)
    if shutil.which("packer") is None:
        return NEWEST_PACKER
    return packer_version()


def plugin_dir() -> Path:
    """Where Packer 1.7+ finds and installs plugins: $PACKER_PLUGIN_PATH, else the cache's packer-plugins."""
    return Path(os.environ.get("PACKER_PLUGIN_PATH") or cache_dir() / "packer-plugins")


def packer_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every packer command: no update check, no colours, the plugin directory."""
    env = dict(PACKER_ENV)
    if supports_required_plugins():
        env["PACKER_PLUGIN_PATH"] = str(plugin_dir())
    return {**env, **(extra or {})}


class PluginError(GoldenError):
    """A Packer plugin a template needs could not be installed."""


def required_plugins(template: Path) -> dict[str, dict[str, str]]:
    """The template's `packer { required_plugins }`: {name: {source, version}} (empty without the block)."""
    block = json.loads(template.read_text()).get("packer", {})
    plugins: dict[str, dict[str, str]] = block.get("required_plugins", {}) if isinstance(block, dict) else {}
    return plugins


def init(template: Path) -> None:
    """`packer init` the template's plugins on Packer 1.7+ (nothing to do on 1.6), once per process and set
    of plugins; several goldens at once take turns through a lock file in the plugin directory."""
    if not supports_required_plugins():
        return
    plugins = required_plugins(template)
    if not plugins:
        return
    directory = plugin_dir()
    key = json.dumps([str(directory), plugins], sort_keys=True)
    with _init_lock:
        if key not in _init_results:
            directory.mkdir(parents=True, exist_ok=True)
            with open(directory / ".golden-init.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                proc = run(["packer", "init", template.name], cwd=template.parent, env=packer_env(),
                           check=False, timeout=INIT_TIMEOUT_S)
            failed = proc.returncode != 0
            _init_results[key] = _init_error(plugins, directory, proc.stderr or proc.stdout or "") if failed else None
        error = _init_results[key]
    if error is not None:
        raise error


def _init_error(plugins: dict[str, dict[str, str]], directory: Path, output: str) -> PluginError:
    """One line naming the plugin and Packer's reason; the hint says how to install it without a network."""
    lines = [line.strip(" *\t") for line in output.splitlines() if line.strip(" *\t")]
    reason = lines[-1] if lines else "no output"
    spec = next(iter(plugins.values()))
    host, owner, name = (spec["source"].split("/") + ["", ""])[:3]
    names = ", ".join(f"{p['source']} {p['version']}" for p in plugins.values())
    return PluginError(
        f"packer init could not install the Packer plugin {names}: {reason}",
        hint=f"without network access: download packer-plugin-{name} for linux_amd64 (a version {spec['version']}) "
             f"from https://{host}/{owner}/packer-plugin-{name}/releases, unzip it, then run "
             f"PACKER_PLUGIN_PATH={directory} packer plugins install "
             f"--path ./packer-plugin-{name}_VERSION_x5.0_linux_amd64 {spec['source']} (Packer 1.10+)",
    )


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
    """Run `packer validate` (after `packer init` on Packer 1.7+); (ok, message) with Packer's own errors when
    it refuses the template."""
    init(template)
    proc = run(
        ["packer", "validate", "-machine-readable", f"-var-file={var_file.name}", template.name],
        cwd=template.parent,
        env=packer_env(env),
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
