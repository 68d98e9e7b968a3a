"""nfs: exports from the settings, each open to the cluster network only."""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Any

from ..services import require_active, wait_serving
from ..steps import Context, step
from ..system import HOST, SettingsError

EXPORTS = "/etc/exports.d/golden.exports"
DEFAULT_OPTIONS = "rw,sync,no_subtree_check,root_squash"
# Options are a bare comma list: a client spec or a second host smuggled in would widen the export.
OPTIONS = re.compile(r"^[a-z_]+(=[A-Za-z0-9:/._-]+)?(,[a-z_]+(=[A-Za-z0-9:/._-]+)?)*$")


def render_exports(exports: list[dict[str, Any]], network: str) -> str:
    """/etc/exports.d/golden.exports: every path exported to `network` and nothing else."""
    net = ipaddress.ip_network(network, strict=False)
    lines = [f"# goldenimage first boot: exports limited to the cluster network {net} (golden-firstboot)."]
    for index, export in enumerate(exports):
        path = str(export.get("path") or "")
        options = str(export.get("options") or DEFAULT_OPTIONS)
        if not path.startswith("/") or any(c.isspace() for c in path):
            raise SettingsError(f"{HOST}: nfs.exports[{index}].path: {path!r} is not an absolute path")
        if not OPTIONS.match(options):
            raise SettingsError(f"{HOST}: nfs.exports[{index}].options: {options!r} is not an option list",
                                hint="e.g. rw,sync,no_subtree_check")
        lines.append(f"{path} {net}({options})")
    return "\n".join(lines) + "\n"


@step("nfs.exports", roles=["nfs"], activate=["nfs.exports"], require=["network"])
def exports(ctx: Context) -> bool:
    """Export directories created, the exports file written, `exportfs -ra` when it changed."""
    wanted = ctx.get("nfs.exports") or []
    for export in wanted:
        os.makedirs(ctx.path(str(export.get("path") or "/")), exist_ok=True)
    changed = ctx.write(EXPORTS, render_exports(wanted, ctx.get("network")))
    changed = wait_nfs_server(ctx) or changed
    if changed:
        ctx.run(["exportfs", "-ra"])
    return changed


def wait_nfs_server(ctx: Context) -> bool:
    """nfs-server enabled and active, (re)started within the budget; True when it had to be."""

    return wait_serving(ctx, ["nfs-server"], lambda: require_active(ctx, "nfs-server"), "waiting for nfs-server")


STEPS = [exports]
