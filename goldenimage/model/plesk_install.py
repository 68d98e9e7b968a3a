"""The plesk role's VM-pass commands, built from its settings (`settings.plesk` in profiles/roles/plesk.yaml and
any overlay): Plesk's installer, fetched from `installer_url`, installs `release` with the component preset
`installation_type`, from Plesk's updates server or the mirror given as `source`.

The installer's documented unattended form (Plesk Obsidian deployment guide, "Installing Plesk for Linux in
Unattended Mode"): `plesk-installer install <RELEASE> --preset <PRESET> [--source <URL>]`, where RELEASE is the
product id `plesk` (the latest general release) optionally followed by a version, a release tier such as
`testing`, or a release id such as PLESK_18_0_71."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

INSTALLER = "/root/plesk-installer"
DEFAULT_URL = "https://autoinstall.plesk.com/plesk-installer"
#: `release` values: "current" (the latest general release), a tier, a release id or a version
RELEASE = re.compile(r"current|testing|PLESK_\d+(?:_\d+){1,3}|\d+(?:\.\d+){1,3}")
PRESETS = ("Recommended", "Full")


def release_args(release: str) -> list[str]:
    """The installer's RELEASE arguments for a `settings.plesk.release` value (checked by the schema)."""
    if release == "current":
        return ["plesk"]
    if release[0].isdigit():
        return ["plesk", release]
    return [release]


def install_commands(settings: Mapping[str, Any]) -> list[str]:
    """The shell lines of the VM pass that install Plesk (the pass runs under `set -e`: a failed download or
    install fails the bake, and a failed bake leaves no artifact)."""
    argv = [INSTALLER, "install", *release_args(settings.get("release") or "current"),
            "--preset", settings.get("installation_type") or PRESETS[0]]
    if settings.get("source"):
        argv += ["--source", settings["source"]]
    url = settings.get("installer_url") or DEFAULT_URL
    return [
        f"wget -q -O {INSTALLER} {shlex.quote(url)}",
        f"chmod 0700 {INSTALLER}",
        shlex.join(argv),
        f"rm -f {INSTALLER}",
    ]
