"""plesk: licence and initial configuration of the Plesk baked into the image.

The commands are built by a pure function (plesk_commands) and unit-tested; they are executed only on a
host where Plesk is installed, and a marker keeps a rerun from installing the same licence twice."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, List, Optional, Tuple

from ..steps import Context, step
from ..system import FirstbootError

PLESK = "/usr/sbin/plesk"
DONE = "/var/lib/golden/plesk.json"

Command = Tuple[List[str], Optional[Dict[str, str]]]


def plesk_commands(settings: dict[str, Any]) -> list[Command]:
    """(argv, extra environment) for each Plesk command first boot runs, in order."""
    commands: list[Command] = [
        # A clone has new addresses: Plesk learns them before anything else.
        ([PLESK, "bin", "ipmanage", "--reread"], None),
        ([PLESK, "bin", "license", "--install", str(settings["license_key"])], None),
    ]
    if settings.get("admin_email"):
        argv = [PLESK, "bin", "init_conf", "--init", "-email", str(settings["admin_email"]),
                "-name", str(settings.get("admin_name", "Administrator")), "-passwd", ""]
        env = None
        if settings.get("admin_password"):
            # An empty -passwd makes Plesk read PSA_PASSWORD: the password stays out of argv.
            env = {"PSA_PASSWORD": str(settings["admin_password"])}
        commands.append((argv, env))
    return commands


def _fingerprint(settings: dict[str, Any]) -> str:
    keys = ("license_key", "admin_email", "admin_name", "admin_password")
    return hashlib.sha256(json.dumps([settings.get(k) for k in keys]).encode()).hexdigest()


@step("plesk.license", roles=["plesk"], activate=["plesk.license_key"])
def license(ctx: Context) -> bool:
    """Install the licence (and the admin account when given), once per set of settings."""
    settings = ctx.get("plesk")
    fingerprint = _fingerprint(settings)
    done = ctx.read(DONE)
    if done and json.loads(done).get("settings") == fingerprint:
        return False
    if not ctx.exists(PLESK):
        raise FirstbootError(f"Plesk is not installed in this image ({PLESK} is missing)",
                             hint="bake the plesk profile again; first boot downloads nothing")
    for argv, env in plesk_commands(settings):
        ctx.run(argv, env=env)
    ctx.write(DONE, json.dumps({"settings": fingerprint}) + "\n", 0o600)
    return True


STEPS = [license]
