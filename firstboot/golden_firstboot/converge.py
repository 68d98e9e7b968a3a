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

from .system import FirstbootError, Result, Runner, log

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
#: Where the engine records the commands it ran (their digest): a converge that changes nothing runs none.
STATE_PATH = "/var/lib/golden/converge.json"
#: In a tree, commands find this directory first on PATH: its systemctl does what systemd's own does in a chroot.
SHIM_DIR = "/run/golden-converge"
CHROOT_PATH = SHIM_DIR + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
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


class ConvergeError(FirstbootError):
    """The cloud-config cannot be applied (an unknown key, a package missing from the layer...)."""

    exit_status = 2


class Report:
    """One line per change (or would-be change); counts for the summary."""

    def __init__(self, check: bool, verbose: bool = False, out: Any = None) -> None:
        self.check = check
        self.verbose = verbose
        self.changed = 0
        self.unchanged = 0
        self.commands = 0
        self.lines = []  # type: list[str]
        #: files this converge changed (not in check mode): a live host reloads the services they configure
        self.changed_paths = []  # type: list[str]
        self._out = out

    def _emit(self, line: str) -> None:
        self.lines.append(line)
        if self._out is not None:
            self._out.write(line + "\n")
            self._out.flush()

    def change(self, what: str) -> None:
        self.changed += 1
        self._emit(("would change: " if self.check else "changed: ") + what)

    def same(self, what: str) -> None:
        self.unchanged += 1
        if self.verbose:
            self._emit("unchanged: " + what)

    def ran(self, what: str) -> None:
        self.commands += 1
        self._emit(("would run: " if self.check else "ran: ") + what)

    def boot(self, what: str) -> None:
        if self.verbose:
            self._emit(("would run: " if self.check else "ran: ") + what)

    def note(self, what: str) -> None:
        self._emit("note: " + what)

    def summary(self) -> str:
        verb = "would change" if self.check else "changed"
        text = f"{verb}: {self.changed}, unchanged: {self.unchanged}"
        if self.commands:
            text += ", commands {}: {}".format("to run" if self.check else "run", self.commands)
        return text


class Host:
    """The system being converged: a tree under `root`, or the live host when root is "/"."""

    def __init__(self, root: str = "/", runner: Runner | None = None) -> None:
        self.root = os.path.abspath(root)
        self.live = self.root == "/"
        self.runner = runner or Runner(logger=lambda line: None)

    def path(self, path: str) -> str:
        """`path` inside the root, its symlinks followed inside the root too (an absolute link in a tree
        points into the tree, never at the build host)."""
        if self.live:
            return path
        parts = [p for p in path.split("/") if p]
        resolved = []  # type: list[str]
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == ".":
                continue
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = os.path.join(self.root, *resolved, part)
            if os.path.islink(candidate):
                hops += 1
                if hops > 40:
                    raise ConvergeError(f"too many symbolic links under {path} in {self.root}")
                target = os.readlink(candidate)
                if target.startswith("/"):
                    resolved = []
                parts = [p for p in target.split("/") if p] + parts
                continue
            resolved.append(part)
        return os.path.join(self.root, *resolved)

    def run(self, argv: list[str], check: bool = True, input: str | None = None) -> Result:
        """A command on the host: in a tree, chrooted with a clean environment and nothing mounted."""
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        if self.live:
            return self.runner.run(argv, input=input, check=check, env=env)
        prefix = ["chroot", self.root, "/usr/bin/env", "-i", "PATH=" + CHROOT_PATH, "HOME=/root",
                  "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive", "SYSTEMD_OFFLINE=1"]
        return self.runner.run(prefix + list(argv), input=input, check=check)

    def systemctl(self, *args: str, check: bool = True) -> Result:
        """systemctl on the live host, or offline on the tree (`--root`: enable and disable only)."""
        if self.live:
            return self.runner.run(["systemctl", *args], check=check)
        return self.runner.run(["systemctl", "--root", self.root, *args], check=check)

    def table(self, name: str) -> dict[str, list[str]]:
        """/etc/passwd, /etc/group or /etc/shadow of the root, by name."""
        rows = {}
        try:
            with open(self.path("/etc/" + name), encoding="utf-8") as handle:
                for line in handle:
                    fields = line.rstrip("\n").split(":")
                    if fields and fields[0]:
                        rows[fields[0]] = fields
        except FileNotFoundError:
            pass
        return rows

    def ids(self, owner: str) -> tuple:
        """(uid, gid) of "user" or "user:group" in the root's own account tables."""
        user, _, group = owner.partition(":")
        passwd, groups = self.table("passwd"), self.table("group")
        if user not in passwd:
            raise ConvergeError(f"owner {owner!r}: no such user in {self.root}",
                                hint="create the user first, or write the file with defer: true")
        if group and group not in groups:
            raise ConvergeError(f"owner {owner!r}: no such group in {self.root}")
        gid = int(groups[group][2]) if group else int(passwd[user][3])
        return int(passwd[user][2]), gid


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
    from . import converge_files as files
    from . import converge_system as system
    from .converge_restart import restart_changed

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


def load_state(host: Host) -> dict[str, Any]:
    """The engine's state on the host (digests of what it last ran and fetched); {} when there is none."""
    try:
        with open(host.path(STATE_PATH), encoding="utf-8") as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def save_state(host: Host, state: dict[str, Any]) -> None:
    """Replace the engine's state (root only, written whole or not at all)."""
    path = host.path(STATE_PATH)
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(state, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.chmod(path + ".tmp", 0o600)
    os.rename(path + ".tmp", path)


def main(user_data: str, root: str, check: bool, verbose: bool, out: Any) -> int:
    """`golden-firstboot converge`: apply, print each change, then the summary."""
    data = load_user_data(user_data)
    host = Host(root, Runner(logger=log if verbose else (lambda line: None)))
    if not host.live and not os.path.isdir(host.root):
        raise ConvergeError(f"--root {root} is not a directory")
    report = converge(data, host, Report(check, verbose, out))
    out.write(report.summary() + "\n")
    return 0
