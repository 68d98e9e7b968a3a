"""The hardened role's login.defs settings, run against the lines of Debian's own login.defs.

Debian 13's login.defs (shadow 4.17) has no UMASK line any more, so the bake's `sed` that rewrote it changed
nothing there and the image kept pam_umask's default: `golden verify --all-firmwares` on banking-hardened-13
failed `test_login_umask_is_027` on all three clones. The line must end up set whether or not the release's
file has it, and a second run must not add it twice."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from goldenimage.model.profiles import resolve

LOGIN_DEFS = "/etc/login.defs"

#: The lines that matter of login (Debian 12, shadow 4.13) and login.defs (Debian 13, shadow 4.17).
DEBIAN_LOGIN_DEFS = {
    12: "ERASECHAR\t0177\nKILLCHAR\t025\nUMASK\t\t022\nHOME_MODE\t0700\nPASS_MAX_DAYS\t99999\n"
        "PASS_MIN_DAYS\t0\nPASS_WARN_AGE\t7\nUSERGROUPS_ENAB yes\nENCRYPT_METHOD SHA512\n",
    13: "ERASECHAR\t0177\nKILLCHAR\t025\nHOME_MODE\t0700\nPASS_MAX_DAYS\t99999\nPASS_MIN_DAYS\t0\n"
        "PASS_WARN_AGE\t7\nENCRYPT_METHOD YESCRYPT\nUSERGROUPS_ENAB yes\n",
}


def run_login_defs_commands(debian: int, path: Path) -> None:
    commands = [c for c in resolve("banking-hardened", debian).content.bake_commands if LOGIN_DEFS in c]
    assert commands, "no bake command touches login.defs"
    for command in commands:
        subprocess.run(["sh", "-c", command.replace(LOGIN_DEFS, str(path))], check=True, timeout=30)


@pytest.mark.parametrize("debian", [12, 13])
def test_banking_hardened_sets_umask_027_and_password_ageing(tmp_path: Path, debian: int) -> None:
    path = tmp_path / "login.defs"
    path.write_text(DEBIAN_LOGIN_DEFS[debian])
    run_login_defs_commands(debian, path)
    run_login_defs_commands(debian, path)  # a second run (an apply, a rebake) changes nothing more
    text = path.read_text()
    assert re.findall(r"^UMASK.*$", text, re.M) == ["UMASK\t\t027"]
    assert re.findall(r"^PASS_MAX_DAYS.*$", text, re.M) == ["PASS_MAX_DAYS\t365"]
    assert re.findall(r"^PASS_MIN_DAYS.*$", text, re.M) == ["PASS_MIN_DAYS\t1"]
    assert len(re.findall(r"^SHA_CRYPT_MIN_ROUNDS", text, re.M)) == 1
    assert "HOME_MODE\t0700" in text  # the rest of the file is left as it was
