"""Converge a system to a cloud-config, with cloud-init's semantics, for the keys goldenimage renders.

Two modes: a tree (`root` a directory: the native bake writes into the package layer's copy; commands run in a
chroot with nothing mounted, services are enabled, never started) and a live host (`root` "/": what `golden
apply` uses; missing packages are installed, services enabled and started). Every item is read first and
changed only when it differs; `check` reports what would change and changes nothing.

The engine reads the cloud-config as JSON (YAML's JSON subset, which cloud-init reads as cloud-config too):
the standard library has no YAML parser, and `golden` converts the rendered user-data before handing it over.
A key the engine does not handle is refused before anything changes: the renderer and the engine cannot
drift silently (a unit test renders every profile and checks its keys against HANDLED).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from . import converge_files as files
from . import converge_system as system
from .converge_host import SHIM_DIR, ConvergeError, Host, Report, load_state, save_state
from .converge_restart import restart_changed
from .system import FirstbootError, Runner, failure_fields, log

__all__ = ["HANDLED", "SHIM_DIR", "ConvergeError", "Host", "Report", "check_keys", "converge", "load_user_data",
           "main"]

#: Every key the engine applies, with the sub-keys it reads (None: the value is a scalar or a list of them).
HANDLED = {
    "bootcmd": None,
    "write_files": {"path", "content", "encoding", "owner", "permissions", "append", "defer"},
    "groups": None,
    "users": {"name", "gecos", "shell", "lock_passwd", "sudo", "ssh_authorized_keys", "groups", "system"},
    "manage_etc_hosts": None,
    "ssh_pwauth": None,
    "disable_root": None,
    "locale": None,
    "timezone": None,
    "apt": {"preserve_sources_list", "sources_list", "conf", "sources"},
    "ntp": {"enabled", "ntp_client", "servers", "pools"},
    "package_update": None,
    "package_upgrade": None,
    "packages": None,
    "runcmd": None,
}
#: Sub-keys of one apt source (apt: sources: NAME: {...}).
APT_SOURCE_KEYS = {"source", "key"}
#: In a tree, maintainer scripts and init scripts called by commands must not start services on the build host.
POLICY_RC_D = "/usr/sbin/policy-rc.d"
#: systemctl in a tree with nothing mounted cannot tell it is in a chroot (no /proc): unit-file verbs run
#: offline (SYSTEMD_OFFLINE=1), verbs that need a running manager are ignored as in a chroot.
SYSTEMCTL_SHIM = """#!/bin/sh
# golden-firstboot converge: systemctl in a tree (no running system), as systemd behaves in a chroot
for arg in "$@"; do
  case "$arg" in
    -*) ;;
    enable|disable|reenable|preset|preset-all|mask|unmask|link|revert|add-wants|add-requires|set-default|\
get-default|is-enabled|list-unit-files|cat|edit|help) exec /bin/systemctl "$@" ;;
    *) echo "systemctl $arg: ignored in a tree (no running system)" >&2; exit 0 ;;
  esac
done
exec /bin/systemctl "$@"
"""


def load_user_data(path: str) -> dict[str, Any]:
    """The cloud-config in `path`: JSON, optionally after a `#cloud-config` line."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConvergeError(f"cannot read {path}: {exc.strerror}") from exc
    if text.startswith("#cloud-config"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConvergeError(
            f"{path} is not cloud-config in JSON form",
            hint="convert it: golden writes it with goldenimage.render.userdata.cloud_config_json",
        ) from exc
    if not isinstance(data, dict):
        raise ConvergeError(f"{path}: a cloud-config is a mapping")
    check_keys(data, path)
    return data


def check_keys(data: dict[str, Any], where: str = "user-data") -> None:
    """Refuse, all at once, every key and sub-key the engine does not apply."""
    errors = []
    for key, value in data.items():
        if key not in HANDLED:
            errors.append(f"{where}: key {key!r} is not handled by the converge engine")
            continue
        subkeys = HANDLED[key]
        if subkeys is None:
            continue
        items = value if isinstance(value, list) else [value]
        for item in items:
            if not isinstance(item, dict):
                if key == "users" and item == "default":
                    continue
                errors.append(f"{where}: {key}: expected a mapping, got {item!r}")
                continue
            for sub in sorted(set(item) - subkeys):
                errors.append(f"{where}: {key}.{sub} is not handled by the converge engine")
    for name, source in (data.get("apt") or {}).get("sources", {}).items():
        for sub in sorted(set(source) - APT_SOURCE_KEYS):
            errors.append(f"{where}: apt.sources.{name}.{sub} is not handled by the converge engine")
    if errors:
        raise ConvergeError("; ".join(errors),
                            hint="keep the renderer and firstboot/golden_firstboot/converge.py in step")


def converge(data: dict[str, Any], host: Host, report: Report) -> Report:
    """Apply `data` to `host` in cloud-init's module order; report every change."""
    check_keys(data)
    shims = [] if host.live or report.check else _tree_shims(host)
    try:
        system.commands(host, report, data.get("bootcmd") or [], "bootcmd", always=True)
        entries = data.get("write_files") or []
        files.write_files(host, report, [e for e in entries if not e.get("defer")])
        system.groups(host, report, data.get("groups") or [])
        system.users(host, report, data.get("users") or [])
        system.ssh_settings(host, report, data)
        system.manage_etc_hosts(host, report, data.get("manage_etc_hosts"))
        if data.get("locale"):
            system.locale(host, report, data["locale"])
        if data.get("timezone"):
            system.timezone(host, report, data["timezone"])
        apt_changed = files.apt(host, report, data.get("apt") or {})
        if data.get("ntp"):
            system.ntp(host, report, data["ntp"])
        system.packages(host, report, data.get("packages") or [], bool(data.get("package_update")) or apt_changed,
                        bool(data.get("package_upgrade")))
        files.write_files(host, report, [e for e in entries if e.get("defer")])
        runcmd = data.get("runcmd") or []
        digest = hashlib.sha256(json.dumps(runcmd).encode()).hexdigest()
        state = load_state(host)
        # runcmd is once per instance in cloud-init; here: again whenever this converge changed something
        # (the commands are idempotent by contract) or the list itself is new.
        needed = report.changed > 0 or state.get("runcmd") != digest
        system.commands(host, report, runcmd, "runcmd", always=needed)
        if needed and not report.check:
            state = load_state(host)
            state["runcmd"] = digest
            save_state(host, state)
        restart_changed(host, report, report.changed_paths, runcmd)
    finally:
        for path in reversed(shims):
            if os.path.isdir(path):
                os.rmdir(path)
            else:
                os.unlink(path)
    return report


def _tree_shims(host: Host) -> list[str]:
    """While commands run in the tree: policy-rc.d answering 101 (no service starts) and the systemctl shim;
    the paths made, removed after (an existing policy-rc.d is left as it is)."""
    made = []
    policy = host.path(POLICY_RC_D)
    if not os.path.lexists(policy) and os.path.isdir(os.path.dirname(policy)):
        with open(policy, "w") as handle:
            handle.write("#!/bin/sh\n# golden-firstboot converge: no service starts in a tree\nexit 101\n")
        os.chmod(policy, 0o755)
        made.append(policy)
    shim_dir = host.path(SHIM_DIR)
    if os.path.isdir(os.path.dirname(shim_dir)) and not os.path.lexists(shim_dir):
        os.mkdir(shim_dir, 0o755)
        made.append(shim_dir)
        shim = os.path.join(shim_dir, "systemctl")
        with open(shim, "w") as handle:
            handle.write(SYSTEMCTL_SHIM)
        os.chmod(shim, 0o755)
        made.append(shim)
    return made


def main(user_data: str, root: str, check: bool, verbose: bool, out: Any, as_json: bool = False) -> int:
    """`golden-firstboot converge`: apply, print each change, then the summary; with `as_json`, one JSON object
    at the end instead (result(), a failure's command and stderr tail included)."""
    report = Report(check, verbose, None if as_json else out)
    try:
        data = load_user_data(user_data)
        host = Host(root, Runner(logger=log if verbose else (lambda line: None), die_with_agent=False))
        if not host.live and not os.path.isdir(host.root):
            raise ConvergeError(f"--root {root} is not a directory")
        converge(data, host, report)
    except FirstbootError as exc:
        if as_json:
            out.write(json.dumps(result(report, exc), sort_keys=True) + "\n")
        raise
    out.write((json.dumps(result(report), sort_keys=True) if as_json else report.summary()) + "\n")
    return 0


def result(report: Report, error: BaseException | None = None) -> dict[str, Any]:
    """What `converge --json` prints: every change line, the counts, and the failure (None when it converged)."""
    return {"check": report.check, "changes": list(report.lines), "changed": report.changed,
            "unchanged": report.unchanged, "commands": report.commands,
            "failure": failure_fields(error) if error is not None else None}
