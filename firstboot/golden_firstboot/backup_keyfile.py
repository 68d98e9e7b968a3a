"""The key file of a server encrypted at rest, for the full backup (backup_keys.py: the restore with it)."""

from __future__ import annotations

import os
from typing import Callable

from .system import FirstbootError

#: The key plugin the banking variant's servers run (roles/hardened.py); the only one a restore can bring back.
KEY_PLUGIN = "file_key_management"


def server_keyfile(sql: Callable[[str], list[list[str]]]) -> str | None:
    """The key file of a server encrypted at rest (as the server itself names it), None for one without a key
    management plugin; FirstbootError for another plugin (its keys are not in a file this job can save)."""
    plugins = [r[0] for r in sql("SELECT PLUGIN_NAME FROM information_schema.PLUGINS WHERE PLUGIN_TYPE = "
                                      "'ENCRYPTION' AND PLUGIN_STATUS = 'ACTIVE';\n")]
    if not plugins:
        return None
    if plugins != [KEY_PLUGIN]:
        raise FirstbootError(f"the server's key management plugin is {', '.join(plugins)}: backups of an encrypted "
                             f"server need {KEY_PLUGIN}, whose key file the full backup saves")
    found = sql("SELECT @@GLOBAL.file_key_management_filename;\n")
    path = found[0][0] if found and found[0] else ""
    if not path or path == "NULL":
        raise FirstbootError(f"{KEY_PLUGIN} runs without file_key_management_filename: no key file to save")
    return path


def check_copy(spool: str, keyfile: str) -> None:
    """mariabackup read the server's key settings (it writes them into the copy's backup-my.cnf, which --prepare
    reads), and the key file is where the server said."""
    with open(os.path.join(spool, "backup-my.cnf"), encoding="utf-8") as handle:
        if f"{KEY_PLUGIN}_filename=" not in handle.read():
            raise FirstbootError(f"mariabackup recorded no {KEY_PLUGIN} settings in backup-my.cnf: the copy of this "
                                 "encrypted server could not be prepared")
    if not os.path.isfile(keyfile):
        raise FirstbootError(f"{keyfile}: the server's key file is not readable here")
