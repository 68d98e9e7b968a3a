"""Render cloud-init user-data: the bake-time provisioning of a profile, and per-host first-boot data.

Everything is built as Python data and written with yaml.safe_dump under `#cloud-config`.
"""

from __future__ import annotations

import base64
import json
import shlex
from typing import Any

import yaml

from ..model.profiles import ResolvedProfile

#: The account Packer logs in with while baking; removed by the cleanup before shutdown.
BUILD_USER = "golden-build"
#: Where the image records what it is (profile, roles, release, content key): read by first boot.
IMAGE_INFO_PATH = "/etc/golden/image.json"
#: Where first boot finds this host's cluster settings, written by the first-boot user-data.
HOST_SETTINGS_PATH = "/etc/golden/host.json"
SYSCTL_PATH = "/etc/sysctl.d/60-golden.conf"
CLOUD_CFG_PATH = "/etc/cloud/cloud.cfg.d/90-golden.cfg"
#: The first runcmd line of the native bake's VM pass: its script stops at the first failing command.
VM_PASS_STRICT = "set -e"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so rendered files read like the profile."""


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_presenter)


def dump_cloud_config(data: dict[str, Any]) -> str:
    """The `#cloud-config` document for `data`."""
    return "#cloud-config\n" + yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=1000)


def sources_list(profile: ResolvedProfile) -> str:
    """/etc/apt/sources.list for the release: its mirror (or the archive), updates and security suites."""
    release = profile.release
    apt = profile.content.apt
    if release.archived:
        # Profile mirrors serve current releases; an archived one has its own (overridable) archive.
        mirror = apt.archive_mirror or release.mirror
        security = release.security_mirror
    else:
        mirror = apt.mirror or release.mirror
        security = apt.security_mirror or release.security_mirror
    components = " ".join(release.components)
    lines = [f"deb {mirror} {suite} {components}" for suite in release.suites]
    lines.append(f"deb {security} {release.security_suite} {components}")
    return "\n".join(lines) + "\n"


def _apt_config(profile: ResolvedProfile) -> dict[str, Any]:
    apt: dict[str, Any] = {"preserve_sources_list": False, "sources_list": sources_list(profile)}
    conf = ['Acquire::Retries "3";']
    if profile.release.archived:
        # The archive's Release files have expired on purpose; they stay signed.
        conf.append('Acquire::Check-Valid-Until "false";')
    apt["conf"] = "\n".join(conf) + "\n"
    extra = profile.content.apt.sources
    if extra:
        apt["sources"] = {
            f"{name}.list": {"source": src.source, **({"key": src.key} if src.key is not None else {})}
            for name, src in extra.items()
        }
    return apt


def _build_user(build_key: str) -> dict[str, Any]:
    return {
        "name": BUILD_USER,
        "gecos": "goldenimage build account (removed before shutdown)",
        "shell": "/bin/bash",
        "lock_passwd": True,
        "sudo": "ALL=(ALL) NOPASSWD:ALL",
        "ssh_authorized_keys": [build_key],
    }


def _users(profile: ResolvedProfile, build_key: str | None) -> list[dict[str, Any]]:
    users: list[dict[str, Any]] = [] if build_key is None else [_build_user(build_key)]
    for user in profile.content.users:
        entry: dict[str, Any] = {"name": user.name, "shell": user.shell, "lock_passwd": True}
        if user.groups:
            entry["groups"] = ", ".join(user.groups)
        if user.sudo:
            entry["sudo"] = "ALL=(ALL) NOPASSWD:ALL"
        if user.ssh_authorized_keys:
            entry["ssh_authorized_keys"] = list(user.ssh_authorized_keys)
        if user.system:
            entry["system"] = True
        users.append(entry)
    return users


def image_info(profile: ResolvedProfile, content_key: str | None) -> dict[str, Any]:
    """What the image says about itself at /etc/golden/image.json (first boot reads its roles here)."""
    return {
        "profile": profile.name,
        "roles": [str(r) for r in profile.roles],
        "debian": profile.release.number,
        "codename": profile.release.codename,
        "content_key": content_key,
        "settings": dict(profile.content.settings),
        "services": list(profile.content.services),
        "release_vars": dict(profile.release.vars),
    }


def _write_files(
    profile: ResolvedProfile, content_key: str | None, extra: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """write_files entries, and the chown commands for owners that exist only once packages are in."""
    files: list[dict[str, Any]] = []
    chowns: list[str] = []
    for spec in profile.content.files:
        files.append({"path": spec.path, "content": spec.content, "permissions": spec.permissions})
        if spec.owner != "root:root":
            chowns.append(shlex.join(["chown", spec.owner, spec.path]))
    system = profile.content.system
    per_instance = {k: v for k, v in (("locale", system.locale), ("timezone", system.timezone)) if v}
    if per_instance:
        # cloud-init applies locale and timezone again on every new instance: keep the profile's choice
        # there too, or the base image's defaults would win at first boot.
        files.append({"path": CLOUD_CFG_PATH, "content": "# goldenimage profile\n" + yaml.safe_dump(per_instance)})
    sysctls = profile.content.sysctls
    if sysctls:
        body = "".join(f"{k} = {v}\n" for k, v in sysctls.items())
        files.append({"path": SYSCTL_PATH, "content": "# goldenimage profile sysctls\n" + body})
    files.append(
        {
            "path": IMAGE_INFO_PATH,
            "content": json.dumps(image_info(profile, content_key), indent=2, sort_keys=True) + "\n",
        }
    )
    files.extend(extra)
    return files, chowns


def purge_command(names: list[str]) -> str:
    """A shell command purging those of `names` that are installed or left config files behind (the base or
    a dependency may have brought them); nothing when none is."""
    query = f"dpkg-query -W -f='${{Package}} ${{db:Status-Abbrev}}\\n' {shlex.join(names)} 2>/dev/null"
    return (
        f"pkgs=$({query} | awk '$2 ~ /^[ir]/ {{print $1}}'); "
        '[ -z "$pkgs" ] || DEBIAN_FRONTEND=noninteractive apt-get purge -y -q $pkgs'
    )


def render_user_data(
    profile: ResolvedProfile,
    build_key: str | None,
    *,
    content_key: str | None = None,
    extra_files: list[dict[str, Any]] | None = None,
    extra_commands: list[str] | None = None,
    vm_commands: bool = True,
) -> str:
    """Bake-time user-data: apt sources, packages, files, sysctls, users, services, bake commands.

    `build_key` None: no build account (the native bake and `golden apply` log in as no one). `vm_commands`
    False leaves out `vm_bake_commands` (the native bake runs them in a VM pass of their own)."""
    content = profile.content
    system = content.system
    files, chowns = _write_files(profile, content_key, extra_files or [])
    data: dict[str, Any] = {
        "manage_etc_hosts": True,
        "ssh_pwauth": False,
        "disable_root": True,
    }
    if system.locale:
        locale = system.locale
        data["locale"] = locale
        if not locale.startswith(("C.", "POSIX")):
            # Debian's locale-gen builds only what /etc/locale.gen lists; cloud-init's locale step needs it
            # there before it runs (bootcmd runs earlier, in the init stage).
            charset = locale.split(".", 1)[1] if "." in locale else "ISO-8859-1"
            data["bootcmd"] = [
                f"grep -q {shlex.quote(f'^{locale} ')} /etc/locale.gen || "
                f"echo {shlex.quote(f'{locale} {charset}')} >> /etc/locale.gen"
            ]
    if system.timezone:
        data["timezone"] = system.timezone
    if system.ntp_servers and system.ntp_client in (None, "chrony"):
        data["ntp"] = {"enabled": True, "ntp_client": "chrony", "servers": list(system.ntp_servers)}
    data["users"] = _users(profile, build_key)
    data["apt"] = _apt_config(profile)
    data["package_update"] = True
    data["package_upgrade"] = True
    data["packages"] = profile.packages
    data["write_files"] = files
    runcmd: list[str] = [*chowns]
    if content.sysctls:
        runcmd.append(f"sysctl -q -p {SYSCTL_PATH} || true")
    if content.remove_packages:
        runcmd.append(purge_command(list(content.remove_packages)))
    runcmd.extend(content.bake_commands)
    if vm_commands:
        runcmd.extend(content.vm_bake_commands)
    runcmd.extend(extra_commands or [])
    services = content.services
    if services:
        runcmd.append(shlex.join(["systemctl", "enable", *services]))
    data["runcmd"] = runcmd
    return dump_cloud_config(data)


def render_vm_pass_user_data(profile: ResolvedProfile, build_key: str) -> str:
    """The user-data of the native bake's VM pass: the build account and the profile's `vm_bake_commands`
    (everything else is already in the disk, converged natively).

    cloud-init runs runcmd as one /bin/sh script whose status is its last command's: `set -e` first, so that
    a failing command (update-grub) fails the pass instead of being hidden by the next one (a chmod)."""
    data: dict[str, Any] = {
        "manage_etc_hosts": True,
        "users": [_build_user(build_key)],
        "runcmd": [VM_PASS_STRICT, *profile.content.vm_bake_commands],
    }
    return dump_cloud_config(data)


def cloud_config_json(user_data: str) -> str:
    """The same cloud-config as JSON (YAML's JSON subset: cloud-init reads it as cloud-config too), which the
    first-boot agent's converge engine reads with the standard library alone."""
    data = yaml.safe_load(user_data)
    return "#cloud-config\n" + json.dumps(data, indent=1, sort_keys=False) + "\n"


def render_meta_data(instance_id: str, hostname: str) -> str:
    """NoCloud meta-data: a new instance-id makes cloud-init run its per-instance modules."""
    return yaml.safe_dump({"instance-id": instance_id, "local-hostname": hostname}, sort_keys=False)


def render_host_user_data(
    hostname: str | None,
    host_settings: dict[str, Any],
    *,
    ssh_authorized_keys: list[str] | None = None,
    extra: dict[str, Any] | None = None,
    extra_files: list[dict[str, Any]] | None = None,
) -> str:
    """First-boot user-data for one host: its name, access keys, and its cluster settings for first boot (and
    `extra_files`, write_files entries, after them).

    The settings go to /etc/golden/host.json (root only) through write_files, base64 so that secrets in
    them are not shown by `cloud-init query` in clear in logs. Without a hostname the datasource's metadata
    names the host (a config drive's or metadata service's meta_data.json).
    """
    payload = json.dumps(host_settings, indent=2, sort_keys=True) + "\n"
    data: dict[str, Any] = {"hostname": hostname} if hostname else {}
    data.update({"manage_etc_hosts": True, "ssh_pwauth": False})
    if ssh_authorized_keys:
        data["ssh_authorized_keys"] = list(ssh_authorized_keys)
    if host_settings:
        data["write_files"] = [_host_settings_file(payload)]
    if extra_files:
        data["write_files"] = data.get("write_files", []) + list(extra_files)
    if extra:
        data.update(extra)
    return dump_cloud_config(data)


def _host_settings_file(payload: str) -> dict[str, Any]:
    return {
        "path": HOST_SETTINGS_PATH,
        "owner": "root:root",
        "permissions": "0600",
        "encoding": "b64",
        "content": base64.b64encode(payload.encode()).decode(),
    }
