"""A second look at rendered output: every value taken from input is one token for a shell and one line for
a config parser. The schema refuses such values first; this check is what `golden validate` and the tests
hold the rendered files to, so that a renderer that forgot a rule cannot pass."""

from __future__ import annotations

import base64
import json
import shlex
from collections.abc import Callable, Iterable
from typing import Any

import yaml

from ..model.values import (
    check_glob_path,
    check_host_label,
    check_locale,
    check_mode,
    check_ntp_server,
    check_owner,
    check_package,
    check_path,
    check_ssh_public_key,
    check_sysctl_key,
    check_sysctl_value,
    check_time_zone,
    check_unit,
    check_url,
    check_user,
)
from .userdata import BUILD_USER, SYSCTL_PATH


def _one_line(value: Any) -> bool:
    return isinstance(value, str) and not any(ord(c) < 32 or ord(c) == 127 for c in value)


class _Problems:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def check(self, where: str, check: Callable[[Any], Any], value: Any) -> None:
        try:
            check(value)
        except (ValueError, TypeError) as exc:
            self.lines.append(f"{where}: {exc}")

    def each(self, where: str, check: Callable[[Any], Any], values: Iterable[Any]) -> None:
        for i, value in enumerate(values):
            self.check(f"{where}[{i}]", check, value)


def _command(where: str, line: Any, problems: _Problems) -> None:
    """A runcmd/bootcmd item: one line; the lines golden generates hold only checked tokens."""
    if not _one_line(line):
        problems.lines.append(f"{where}: not one line: {str(line)[:80]!r}")
        return
    try:
        argv = shlex.split(line)
    except ValueError as exc:
        problems.lines.append(f"{where}: unbalanced quoting ({exc}): {line[:80]!r}")
        return
    if argv[:1] == ["chown"]:
        if len(argv) != 3:
            problems.lines.append(f"{where}: chown with {len(argv) - 1} arguments: {line[:80]!r}")
        else:
            problems.check(f"{where} owner", check_owner, argv[1])
            problems.check(f"{where} path", check_path, argv[2])
    elif argv[:2] == ["systemctl", "enable"]:
        problems.each(f"{where} unit", check_unit, argv[2:])


def _sysctl_lines(where: str, content: str, problems: _Problems) -> None:
    for n, line in enumerate(content.splitlines()):
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(" = ")
        if not sep:
            problems.lines.append(f"{where}: line {n + 1} is not 'key = value': {line[:80]!r}")
            continue
        problems.check(f"{where}: line {n + 1}", check_sysctl_key, key)
        problems.check(f"{where}: line {n + 1}", check_sysctl_value, value)


def check_user_data(text: str) -> list[str]:
    """Problems in a rendered bake-time user-data (empty when every input-derived value is safe)."""
    problems = _Problems()
    data = yaml.safe_load(text)
    for key in ("bootcmd", "runcmd"):
        for i, line in enumerate(data.get(key) or []):
            _command(f"{key}[{i}]", line, problems)
    problems.each("packages", check_package, data.get("packages") or [])
    for i, spec in enumerate(data.get("write_files") or []):
        problems.check(f"write_files[{i}].path", check_path, spec.get("path"))
        if "owner" in spec:
            problems.check(f"write_files[{i}].owner", check_owner, spec["owner"])
        if "permissions" in spec:
            problems.check(f"write_files[{i}].permissions", check_mode, spec["permissions"])
        if spec.get("path") == SYSCTL_PATH:
            _sysctl_lines(f"write_files[{i}] {SYSCTL_PATH}", spec.get("content", ""), problems)
    for i, user in enumerate(data.get("users") or []):
        problems.check(f"users[{i}].name", check_user, user.get("name"))
        problems.each(f"users[{i}].groups", check_user, [g for g in str(user.get("groups", "")).split(", ") if g])
        problems.check(f"users[{i}].shell", check_path, user.get("shell", "/bin/sh"))
        if user.get("name") != BUILD_USER:
            problems.each(f"users[{i}].ssh_authorized_keys", check_ssh_public_key, user.get("ssh_authorized_keys", []))
    apt = data.get("apt") or {}
    for n, line in enumerate(str(apt.get("sources_list", "")).splitlines()):
        fields = line.split(" ")
        if len(fields) < 4 or fields[0] != "deb" or fields[1].startswith("["):
            problems.lines.append(f"apt.sources_list: line {n + 1} is not 'deb URL SUITE COMPONENT...': {line[:80]!r}")
        else:
            problems.check(f"apt.sources_list: line {n + 1}", check_url, fields[1])
    problems.each("ntp.servers", check_ntp_server, (data.get("ntp") or {}).get("servers", []))
    if "locale" in data:
        problems.check("locale", check_locale, data["locale"])
    if "timezone" in data:
        problems.check("timezone", check_time_zone, data["timezone"])
    return problems.lines


def check_template(template: dict[str, Any]) -> list[str]:
    """Problems in a rendered Packer template: the cleanup's environment holds only checked tokens."""
    problems = _Problems()
    for provisioner in template.get("build", {}).get("provisioner", []):
        for i, assignment in enumerate((provisioner.get("shell") or {}).get("environment_vars", [])):
            name, _, value = assignment.partition("=")
            where = f"cleanup environment_vars[{i}] {name}"
            if not _one_line(value) or "${" in value:
                problems.lines.append(f"{where}: not one plain line: {value[:80]!r}")
            elif name == "GOLDEN_SERVICES":
                problems.each(where, check_unit, value.split())
            elif name == "GOLDEN_INSTANCE_UNIQUE":
                problems.each(where, check_glob_path, value.split())
    return problems.lines


def _strings(value: Any, where: str) -> Iterable[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{where}.{key}", key
            yield from _strings(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")
    elif isinstance(value, str):
        yield where, value


def check_host_user_data(text: str) -> list[str]:
    """Problems in a rendered first-boot user-data: its host name, keys, and every string of host.json is
    one line (first boot writes them into config files)."""
    problems = _Problems()
    data = yaml.safe_load(text)
    problems.check("hostname", check_host_label, data.get("hostname"))
    problems.each("ssh_authorized_keys", check_ssh_public_key, data.get("ssh_authorized_keys") or [])
    for i, spec in enumerate(data.get("write_files") or []):
        problems.check(f"write_files[{i}].path", check_path, spec.get("path"))
        if spec.get("encoding") == "b64":
            settings = json.loads(base64.b64decode(spec["content"]))
            for where, value in _strings(settings, spec["path"]):
                if not _one_line(value):
                    problems.lines.append(f"{where}: not one line: {value[:80]!r}")
    return problems.lines
