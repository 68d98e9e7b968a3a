"""The hardened role's AIDE setting, run against the lines of Debian's own aide.conf that it changes.

Debian's `Checksums = H` made AIDE compute eleven digests of every file: under TCG the first database took
25 minutes and `aide --check` as long again, past `golden verify`'s suite timeout. The bake command that
sets SHA-512 alone must change that line and fail the bake if the line is not there to change."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from goldenimage.model.profiles import resolve

AIDE_CONF = "/etc/aide/aide.conf"

#: The checksum lines of aide-common's aide.conf, the same in 0.18.3 (Debian 12) and 0.19.1 (Debian 13).
DEBIAN_AIDE_CONF = """\
# Set to H to use all compiled-in hashsums
Checksums = H

# database_attrs is a list of attributes that are used to verify the integrity of the database
database_attrs = Checksums
StaticFile = m+c+Checksums
"""


def aide_commands(debian: int) -> list[str]:
    return [c for c in resolve("banking-hardened", debian).content.bake_commands if AIDE_CONF in c]


def run_on(command: str, conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command.replace(AIDE_CONF, str(conf))], capture_output=True, text=True,
                          check=False, timeout=30)


@pytest.mark.parametrize("debian", [12, 13])
def test_banking_hardened_sets_aide_to_sha512_alone(tmp_path, debian):
    conf = tmp_path / "aide.conf"
    conf.write_text(DEBIAN_AIDE_CONF)
    commands = aide_commands(debian)
    assert len(commands) == 1
    assert run_on(commands[0], conf).returncode == 0
    lines = conf.read_text().splitlines()
    assert "Checksums = sha512" in lines and "Checksums = H" not in lines
    # the groups that use it are untouched: they now mean SHA-512
    assert "database_attrs = Checksums" in lines and "StaticFile = m+c+Checksums" in lines


def test_the_aide_setting_fails_the_bake_when_debian_changes_the_line(tmp_path):
    conf = tmp_path / "aide.conf"
    conf.write_text(DEBIAN_AIDE_CONF.replace("Checksums = H", "Checksums = sha256+sha512+whirlpool"))
    assert run_on(aide_commands(12)[0], conf).returncode != 0
