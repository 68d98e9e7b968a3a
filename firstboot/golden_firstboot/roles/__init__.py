"""One module per role; STEPS is the order the agent runs them in.

Order matters: MariaDB runs (restarted if it failed at boot) before anything talks to it, its encryption comes
before the server holds data, the replica waits for nothing the primary does on the same host, the exporters
answer once their services do, and AIDE records the system after everything else has changed it."""

from __future__ import annotations

import os

from .. import BACKUP_ZIP
from ..steps import Step
from . import common, galera, hardened, lb, mariadb, monitoring, nfs, plesk, sql_primary, sql_replica, web

if os.path.isfile(BACKUP_ZIP):
    __path__.append(os.path.join(BACKUP_ZIP, "golden_firstboot", "roles"))  # type: ignore[name-defined]  # noqa: F821
try:
    from .backup import STEPS as BACKUP_STEPS
except ModuleNotFoundError as exc:  # an image whose roles back nothing up carries no backup modules
    if exc.name != __name__ + ".backup":
        raise
    BACKUP_STEPS = []  # type: ignore[no-redef]

STEPS: list[Step] = [
    *common.STEPS,
    *mariadb.FIRST,
    *hardened.BEFORE_MARIADB,
    *mariadb.STEPS,
    *galera.STEPS,
    *sql_primary.STEPS,
    *sql_replica.STEPS,
    *nfs.STEPS,
    *web.STEPS,
    *lb.STEPS,
    *galera.LB_STEPS,
    *plesk.STEPS,
    *monitoring.STEPS,
    *BACKUP_STEPS,
    *hardened.LAST,
]
