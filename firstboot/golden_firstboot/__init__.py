"""golden-firstboot: the in-image agent that finishes a golden image's role on its first boot.

Standard library only; runs on Debian 10's Python 3.7 through Debian 13's 3.13.
"""

__version__ = "1.0"

import os

#: The backup modules (backup_jobs, backup_restore, backup_command, roles/backup): not in the image's agent
#: (OpenStack's bake user-data must stay under 64 KiB); a host whose cluster settings back something up gets
#: them with those settings (`golden cluster render` writes this zip), and they load from it as part of the package.
BACKUP_ZIP = os.environ.get("GOLDEN_FIRSTBOOT_BACKUP_ZIP", "/usr/local/lib/golden/golden-firstboot-backup.zip")
if os.path.isfile(BACKUP_ZIP):
    __path__.append(os.path.join(BACKUP_ZIP, "golden_firstboot"))  # type: ignore[name-defined]  # noqa: F821
