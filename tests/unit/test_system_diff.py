"""The differential test's comparison: every difference outside the allow-list is reported with its path and
area; each allow-list entry says why."""

from __future__ import annotations

import os
from pathlib import Path

from tests.e2e.system_diff import ALLOWED, differences, snapshot


def _tree(root: Path, files: dict[str, tuple[str, int]]) -> Path:
    for rel, (text, mode) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
    return root


def test_content_mode_and_presence_differences_are_named_with_their_area(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a", {"etc/sudoers.d/90-users": ("web ALL=(ALL) ALL\n", 0o440),
                               "etc/sysctl.d/60-golden.conf": ("net.ipv4.ip_forward = 0\n", 0o644),
                               "etc/timezone": ("Etc/UTC\n", 0o644), "var/log/syslog": ("", 0o640)})
    b = _tree(tmp_path / "b", {"etc/sudoers.d/90-users": ("web ALL=(ALL) ALL\n", 0o644),
                               "etc/sysctl.d/60-golden.conf": ("net.ipv4.ip_forward = 1\n", 0o644),
                               "etc/apt/sources.list": ("deb http://deb.debian.org/debian bookworm main\n", 0o644)})
    os.symlink("../usr/share/zoneinfo/Etc/UTC", a / "etc/localtime")
    os.symlink("../usr/share/zoneinfo/Europe/Paris", b / "etc/localtime")
    found = differences(snapshot(a), snapshot(b))
    text = "\n".join(found)
    for line in ("apt sources: /etc/apt/sources.list only in the VM bake",
                 "time zone: /etc/timezone only in the native bake",
                 "sudoers: /etc/sudoers.d/90-users native file 0440 ",
                 "sysctls: /etc/sysctl.d/60-golden.conf native file 0644",
                 "time zone: /etc/localtime native link 0777"):
        assert line in text, (line, found)
    # /var/log/syslog is on the allow-list (present in one only)
    assert "/var/log/syslog" not in text


def test_identical_trees_have_no_difference(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a", {"etc/passwd": ("root:x:0:0::/root:/bin/sh\n", 0o644)})
    assert differences(snapshot(a), snapshot(a)) == []


def test_every_allow_list_entry_says_why() -> None:
    for pattern, what, reason in ALLOWED:
        assert what in ("content", "any") and len(reason) > 20, pattern
