"""System modules of the converge engine, each after its cloud-init namesake: groups, users (sudo rules, SSH
keys, locked passwords), ssh_pwauth, manage_etc_hosts, locale, timezone, ntp (chrony), packages, and the
bootcmd/runcmd commands (a `systemctl enable UNIT...` line is a services item: enabled in a tree, enabled
and started on a live host)."""

from __future__ import annotations

import os
import re
import shlex
import socket
from typing import Any

from .converge_apt import APT_GET, apt_install, apt_update, dpkg_interrupted, lists_current, wait_dpkg_idle
from .converge_files import ensure_file
from .converge_host import ConvergeError, Host, Report
from .converge_restart import AGENT_UNITS, unit_name

SUDOERS = "/etc/sudoers.d/90-cloud-init-users"
SSHD_CONFIG = "/etc/ssh/sshd_config"
CHRONY_CONF = "/etc/chrony/chrony.conf"
LOCALE_FILE = "/etc/default/locale"
NO_REGEN = ("c", "c.utf-8", "posix")
#: cloud-init's chrony.conf.debian template below its pool and server lines.
CHRONY_BODY = """
# This directive specify the location of the file containing ID/key pairs for
# NTP authentication.
keyfile /etc/chrony/chrony.keys

# This directive specify the file into which chronyd will store the rate
# information.
driftfile /var/lib/chrony/chrony.drift

# Uncomment the following line to turn logging on.
#log tracking measurements statistics

# Log files location.
logdir /var/log/chrony

# Stop bad estimates upsetting machine clock.
maxupdateskew 100.0

# This directive enables kernel synchronisation (every 11 minutes) of the
# real-time clock. Note that it can\u2019t be used along with the 'rtcfile' directive.
rtcsync

# Step the system clock instead of slewing it if the adjustment is larger than
# one second, but only in the first three clock updates.
makestep 1 3
"""


def _names(value: Any) -> list[str]:
    """A list of names from cloud-init's "a, b" string or a list."""
    if not value:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(item).strip() for item in items if str(item).strip()]


def groups(host: Host, report: Report, entries: list[Any]) -> None:
    """cloud-init's groups: each group made when missing, with its members."""
    for entry in entries:
        specs = entry.items() if isinstance(entry, dict) else [(entry, [])]
        for name, members in specs:
            _ensure_group(host, report, str(name))
            for member in _names(members):
                _ensure_member(host, report, member, str(name))


def _ensure_group(host: Host, report: Report, name: str) -> None:
    if name in host.table("group"):
        report.same("group " + name)
        return
    report.change(f"group {name} (created)")
    if not report.check:
        host.run(["groupadd", name])


def _ensure_member(host: Host, report: Report, user: str, group: str) -> None:
    row = host.table("group").get(group)
    if row and user in _names(row[3] if len(row) > 3 else ""):
        report.same(f"user {user} in group {group}")
        return
    report.change(f"user {user} in group {group}")
    if not report.check:
        host.run(["usermod", "-a", "-G", group, user])


def users(host: Host, report: Report, entries: list[Any]) -> None:
    """cloud-init's users: created when missing (home made unless a system account), supplementary groups,
    a locked password, a sudo rule appended to 90-cloud-init-users, SSH keys merged into authorized_keys."""
    for entry in entries:
        if entry == "default":
            continue  # the distribution's default user is the clone's, made by cloud-init at first boot
        name = str(entry["name"])
        wanted_groups = _names(entry.get("groups"))
        for group in wanted_groups:
            _ensure_group(host, report, group)
        passwd = host.table("passwd")
        if name not in passwd:
            report.change(f"user {name} (created)")
            if report.check:
                continue
            argv = ["useradd"]
            if entry.get("gecos"):
                argv += ["-c", str(entry["gecos"])]
            if entry.get("shell"):
                argv += ["-s", str(entry["shell"])]
            if wanted_groups:
                argv += ["-G", ",".join(wanted_groups)]
            argv += ["--system"] if entry.get("system") else ["-m"]
            host.run(argv + [name])
        else:
            report.same("user " + name)
            if entry.get("shell") and passwd[name][6] != entry["shell"]:
                report.change("user {} shell -> {}".format(name, entry["shell"]))
                if not report.check:
                    host.run(["usermod", "-s", str(entry["shell"]), name])
            for group in wanted_groups:
                _ensure_member(host, report, name, group)
        if report.check and name not in host.table("passwd"):
            continue
        if entry.get("lock_passwd", True):
            shadow = host.table("shadow").get(name)
            if shadow and not shadow[1].startswith(("!", "*")):
                report.change(f"user {name} password locked")
                if not report.check:
                    host.run(["usermod", "--lock", name])
        if entry.get("sudo"):
            _sudo_rules(host, report, name, entry["sudo"])
        if entry.get("ssh_authorized_keys"):
            _authorized_keys(host, report, name, [str(k) for k in entry["ssh_authorized_keys"]])


def _sudo_rules(host: Host, report: Report, name: str, rules: Any) -> None:
    rules = [rules] if isinstance(rules, str) else list(rules)
    real = host.path(SUDOERS)
    current = open(real, encoding="utf-8").read() if os.path.exists(real) else ""
    lines = [f"{name} {rule}" for rule in rules]
    if all(line in current.splitlines() for line in lines):
        report.same("sudo rule for " + name)
        return
    block = "\n# User rules for {}\n{}\n".format(name, "\n".join(lines))
    header = "" if current else "# Created by golden-firstboot converge (cloud-init's users module)\n"
    ensure_file(host, report, SUDOERS, (header + current + block).encode(), 0o440, what=f"sudo rule for {name} in")


def _authorized_keys(host: Host, report: Report, name: str, keys: list[str]) -> None:
    row = host.table("passwd")[name]
    home = row[5]
    owner = name + ":" + next((g for g, r in host.table("group").items() if r[2] == row[3]), "root")
    path = home.rstrip("/") + "/.ssh/authorized_keys"
    real = host.path(path)
    current = open(real, encoding="utf-8").read() if os.path.exists(real) else ""
    missing = [k for k in keys if k not in current.splitlines()]
    content = current + "".join(k + "\n" for k in missing) if missing else current
    ssh_dir = host.path(home.rstrip("/") + "/.ssh")
    if not report.check and not os.path.isdir(ssh_dir):
        os.makedirs(ssh_dir, 0o700)
        uid, gid = host.ids(owner)
        os.chown(ssh_dir, uid, gid)
        os.chmod(ssh_dir, 0o700)
    ensure_file(host, report, path, content.encode(), 0o600, owner, what=f"SSH keys of {name} in")


def _sshd_option(host: Host, report: Report, key: str, value: str) -> None:
    """cloud-init's update_ssh_config: the first uncommented `key` line gets the value, else one is appended."""
    real = host.path(SSHD_CONFIG)
    if not os.path.exists(real):
        report.note(f"{SSHD_CONFIG} absent: {key} not set")
        return
    with open(real, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    found = False
    for i, line in enumerate(lines):
        words = line.split()
        if words and words[0].lower() == key.lower():
            if not found:
                lines[i] = f"{key} {value}"
            found = True
    if not found:
        lines.append(f"{key} {value}")
    mode = os.stat(real).st_mode & 0o7777
    if ensure_file(host, report, SSHD_CONFIG, ("\n".join(lines) + "\n").encode(), mode,
                   what=f"{key} {value} in") and host.live and not report.check:
        host.systemctl("reload-or-restart", "ssh", check=False)


def ssh_settings(host: Host, report: Report, data: dict[str, Any]) -> None:
    """ssh_pwauth (PasswordAuthentication in sshd_config); disable_root acts only on keys cloud-init installs
    for root, which a cloud-config without top-level SSH keys has none of."""
    if "ssh_pwauth" in data and data["ssh_pwauth"] not in (None, "unchanged"):
        value = data["ssh_pwauth"]
        enabled = value is True or str(value).lower() in ("true", "yes", "1")
        _sshd_option(host, report, "PasswordAuthentication", "yes" if enabled else "no")
    if "disable_root" in data:
        report.same("disable_root (no key for root in this cloud-config)")


def manage_etc_hosts(host: Host, report: Report, value: Any) -> None:
    """A tree: cloud-init rewrites /etc/hosts at each boot of the image (nothing to bake). A live host: its
    name on 127.0.1.1, as cloud-init's Debian template writes it."""
    if not value:
        return
    if not host.live:
        report.same("/etc/hosts (cloud-init writes it at each boot)")
        return
    fqdn, name = socket.getfqdn(), socket.gethostname().split(".")[0]
    path = "/etc/hosts"
    current = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    wanted = f"127.0.1.1 {fqdn} {name}" if fqdn != name else f"127.0.1.1 {name}"
    lines = [line for line in current.splitlines() if not line.startswith("127.0.1.1")]
    ensure_file(host, report, path, ("\n".join([wanted] + lines) + "\n").encode(),
                what="host name in") if wanted not in current.splitlines() else report.same("/etc/hosts")


def locale(host: Host, report: Report, name: str) -> None:
    """cloud-init's locale: locale-gen when the locale is not built yet, then update-locale LANG=."""
    if name.lower() not in NO_REGEN and _normal(name) not in _built_locales(host):
        report.change(f"locale {name} generated")
        if not report.check:
            host.run(["locale-gen"])
    current = ""
    real = host.path(LOCALE_FILE)
    if os.path.exists(real):
        match = re.search(r"^LANG=\"?([^\"\n]*)\"?$", open(real, encoding="utf-8").read(), re.M)
        current = match.group(1) if match else ""
    if current == name:
        report.same("locale " + name)
        return
    report.change(f"{LOCALE_FILE} LANG={name}")
    if not report.check:
        host.run(["update-locale", "--locale-file=" + LOCALE_FILE, "LANG=" + name])


def _normal(name: str) -> str:
    lang, _, codeset = name.partition(".")
    return lang + ("." + codeset.lower().replace("-", "") if codeset else "")


def _built_locales(host: Host) -> set[str]:
    result = host.run(["localedef", "--list-archive"], check=False)
    return {_normal(line.strip()) for line in result.stdout.splitlines() if line.strip()}


def timezone(host: Host, report: Report, name: str) -> None:
    """cloud-init's timezone on Debian: /etc/timezone, and /etc/localtime a link to the zone file."""
    zone = "/usr/share/zoneinfo/" + name
    if not os.path.exists(host.path(zone)):
        raise ConvergeError(f"timezone {name}: no {zone} (is tzdata installed?)")
    ensure_file(host, report, "/etc/timezone", (name + "\n").encode())
    link = host.path("/etc/localtime") if host.live else os.path.join(host.root, "etc/localtime")
    if os.path.islink(link) and os.readlink(link) == zone:
        report.same("/etc/localtime")
        return
    report.change(f"/etc/localtime -> {zone}")
    if not report.check:
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(zone, link)


def ntp(host: Host, report: Report, config: dict[str, Any]) -> None:
    """cloud-init's ntp with chrony: its Debian template rendered with the pools and servers; chrony enabled
    (and restarted on a live host when its configuration changed)."""
    if not config.get("enabled", True):
        return
    client = config.get("ntp_client", "chrony")
    if client != "chrony":
        raise ConvergeError(f"ntp: ntp_client {client!r} is not handled by the converge engine (chrony only)")
    if host.live and "chrony" not in installed_packages(host):
        # cloud-init's ntp module installs its client when it is missing; the packages module comes later
        report.change("package chrony (installed: the NTP client)")
        if report.check:
            return
        apt_install(host, ["chrony"], update=True)
    head = "# Welcome to the chrony configuration file. See chrony.conf(5) for more\n" \
           "# information about usuable directives.\n"
    pools, servers = list(config.get("pools") or []), list(config.get("servers") or [])
    if pools:
        head += "# pools\n" + "".join(f"pool {p} iburst\n" for p in pools)
    if servers:
        head += "# servers\n" + "".join(f"server {s} iburst\n" for s in servers)
    if ensure_file(host, report, CHRONY_CONF, (head + CHRONY_BODY).encode(), what="NTP servers in") \
            and host.live and not report.check:
        host.systemctl("reload-or-restart", "chrony", check=False)
    service(host, report, "chrony")


def installed_packages(host: Host) -> set[str]:
    """What dpkg's status file says is installed in the root."""
    names, name = set(), ""
    with open(host.path("/var/lib/dpkg/status"), encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith("Package: "):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("Status: ") and line.split()[-1] == "installed":
                names.add(name)
    return names


def packages(host: Host, report: Report, wanted: list[Any], update: bool, upgrade: bool) -> None:
    """cloud-init's package_update_upgrade_install. A tree: the packages must be there already (the package
    layer installed them natively); a live host: apt-get installs what is missing, and upgrades. On a live host
    `update` (package_update, or sources changed) refreshes the lists only when they are not current: something
    must be installed, or a source or key changed since the engine's last apt-get update (converge_apt); a
    converge with every package installed and the same sources fetches nothing, and upgrades from the lists
    the host has (apt-daily refreshes them)."""
    if not wanted and not host.live:
        return
    names = []
    for item in wanted:
        if not isinstance(item, str):
            raise ConvergeError(f"packages: {item!r}: only package names are handled")
        names.append(item)
    have = installed_packages(host)
    missing = [n for n in names if n not in have]
    for name in names:
        if name in have:
            report.same("package " + name)
    if missing and not host.live:
        raise ConvergeError("packages not in the tree: {}".format(" ".join(missing)),
                            hint="the package layer installs the profile's packages; rebuild it")
    if not host.live:
        return
    if (update or upgrade or missing) and not report.check and dpkg_interrupted(host):
        # an apply killed while dpkg worked: its dpkg may still be running (then it is waited for), or it
        # stopped midway: finish what it started before asking apt for more
        wait_dpkg_idle(host)
        if dpkg_interrupted(host):
            report.note("dpkg was interrupted: dpkg --configure -a")
            host.run(["dpkg", "--configure", "-a", "--force-confold"])
    if (update or upgrade or missing) and not report.check and (missing or not lists_current(host)):
        apt_update(host)
    if upgrade:
        sim = host.run(["apt-get", "-s", "-q", "upgrade"], check=False).stdout
        pending = [line.split()[1] for line in sim.splitlines() if line.startswith("Inst ")]
        if pending:
            report.change("packages upgraded: {}".format(" ".join(pending)))
            if not report.check:
                host.run(APT_GET + ["upgrade"])
    for name in missing:
        report.change(f"package {name} (installed)")
    if missing and not report.check:
        host.run(APT_GET + ["install"] + missing)


def service(host: Host, report: Report, unit: str) -> None:
    """A unit enabled (a tree: offline, never started; a live host: enabled, then started when inactive)."""
    state = host.systemctl("is-enabled", unit, check=False).stdout.strip()
    if state in ("enabled", "enabled-runtime", "static", "alias", "indirect", "generated"):
        report.same(f"service {unit} enabled")
    else:
        report.change(f"service {unit} enabled")
        if not report.check:
            host.systemctl("enable", unit)
    if host.live and unit_name(unit) in AGENT_UNITS:
        # the agent's run-once units: `golden apply` runs the agent itself next, with the host's settings
        return
    if host.live:
        if host.systemctl("is-active", unit, check=False).stdout.strip() == "active":
            report.same(f"service {unit} running")
        else:
            report.change(f"service {unit} started")
            if not report.check:
                host.systemctl("start", unit)


def commands(host: Host, report: Report, entries: list[Any], what: str, always: bool) -> None:
    """bootcmd/runcmd: each line through /bin/sh (a list is an argv), as root; in a tree, chrooted. A line
    `systemctl enable UNIT...` is handled as services. `always` false: plain commands are skipped."""
    skipped = 0
    for entry in entries:
        argv = list(map(str, entry)) if isinstance(entry, list) else None
        words = argv or (shlex.split(entry) if isinstance(entry, str) else [])
        if len(words) > 2 and words[:2] == ["systemctl", "enable"] and all(not w.startswith("-") for w in words):
            for unit in words[2:]:
                service(host, report, unit)
            continue
        if not always:
            skipped += 1
            continue
        text = " ".join(shlex.quote(a) for a in argv) if argv else str(entry)
        text = "{}: {}".format(what, text if len(text) < 160 else text[:157] + "...")
        if what == "bootcmd":
            report.boot(text)  # every converge, as cloud-init runs it at every boot: not counted as a change
        else:
            report.ran(text)
        if not report.check:
            host.run(argv or ["/bin/sh", "-c", str(entry)])
    if skipped:
        report.same(f"{what}: {skipped} commands (nothing changed since they last ran)")
