"""common: what every host checks first. Hostname and /etc/hosts are cloud-init's (manage_etc_hosts)."""

from __future__ import annotations

import os

from ..steps import Context, step
from ..system import HOST


@step("common.host-settings-private", activate=[])
def host_settings_private(ctx: Context) -> bool:
    """host.json carries secrets: root only (0600), whatever wrote it."""
    path = ctx.path(HOST)
    if not os.path.exists(path) or (os.stat(path).st_mode & 0o777) == 0o600:
        return False
    os.chmod(path, 0o600)
    ctx.log(f"made {HOST} readable by root only")
    return True


STEPS = [host_settings_private]
