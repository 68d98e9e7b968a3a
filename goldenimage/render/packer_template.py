"""Packer templates (HCL2 in JSON syntax) per target: qemu, proxmox (clone), openstack.

Packer only boots the base with the profile's user-data, waits for cloud-init, collects the manifest,
runs the golden-image cleanup and shuts down. The values a user changes go to a *.pkrvars.json file.
"""

from __future__ import annotations

import base64
import gzip
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ..core.errors import InputError
from ..model.disk_layout import DiskLayout
from ..model.profiles import ResolvedProfile
from .proxmox_hardware import HARDWARE, TASK_TIMEOUT_S, VM_STORAGE
from .targets import Target
from .userdata import BUILD_USER

SOURCE_NAME = "golden"
SCRIPTS = (
    "apply-user-data.sh", "wait-cloud-init.sh", "collect-manifest.sh", "cleanup.sh", "remove-build-account.sh",
)
GUEST_MANIFEST = "/tmp/golden-guest-manifest.json"
MANIFEST_FILE = "guest-manifest.json"
#: Where Packer uploads the bake scripts and runs them: /tmp may be mounted noexec (disk_layout
#: separate-mounts); /var/tmp is writable by the build account and allows exec.
REMOTE_FOLDER = "/var/tmp"

#: Nova refuses a server whose user-data is longer than this once base64-encoded.
NOVA_USER_DATA_MAX = 65535
#: The bake user-data as the openstack builder sends it: gzip, which cloud-init reads as it reads plain text.
OPENSTACK_USER_DATA = "user-data.gz"

# Plugins for Packer 1.7+, which split the builders out of the core binary: the oldest release with every
# option the templates use (proxmox 1.2.4: cloud_init_disable_upgrade_packages), below the next major release.
# Current in 2026-11: qemu 1.1.4, proxmox 1.2.4, openstack 1.1.4.
PLUGINS = {
    "qemu": ("github.com/hashicorp/qemu", ">= 1.1.0, < 2.0.0"),
    "proxmox": ("github.com/hashicorp/proxmox", ">= 1.2.4, < 2.0.0"),
    "openstack": ("github.com/hashicorp/openstack", ">= 1.1.0, < 2.0.0"),
}


@dataclass(frozen=True)
class Variable:
    """A template variable: its type, its value in the rendered *.pkrvars.json, and whether it is secret."""

    type: str
    value: Any
    description: str
    sensitive: bool = False
    env_default: str | None = None  # secrets come from the environment, never from a file


def script_text(name: str) -> str:
    """The text of one of the bake scripts shipped beside this module."""
    return resources.files(__package__).joinpath("scripts", name).read_text()


def _common_variables(profile: ResolvedProfile) -> dict[str, Variable]:
    return {
        "image_name": Variable("string", f"{profile.name}-debian{profile.release.number}", "Name of the result"),
        "ssh_private_key_file": Variable(
            "string", "build_key", f"Private key of the {BUILD_USER} account (ephemeral, made by golden render)"
        ),
        "manifest_dir": Variable("string", ".", "Where the guest manifest (packages, versions) is downloaded"),
        "scripts_dir": Variable("string", "scripts", "Directory holding the bake scripts"),
    }


def _qemu(profile: ResolvedProfile) -> tuple[dict[str, Variable], dict[str, Any]]:
    variables = {
        "base_image": Variable("string", "base.qcow2", "Base qcow2 (golden base, or an official cloud image)"),
        "base_checksum": Variable("string", "none", "Checksum of the base image, such as sha256:HEX"),
        "seed_iso": Variable("string", "seed.iso", "NoCloud seed ISO carrying the bake user-data"),
        "output_directory": Variable("string", "output", "Packer's output directory (must not exist)"),
        "accelerator": Variable("string", "tcg", "kvm where KVM works, tcg otherwise (golden probes it)"),
        "memory": Variable("number", 2048, "Guest memory in MiB"),
        "cpus": Variable("number", 2, "Guest CPUs"),
        "disk_size": Variable("string", profile.disk_size, "Virtual size of the image"),
        "serial_log": Variable("string", "serial.log", "File receiving the guest's serial console"),
    }
    source = {
        "disk_image": True,
        "iso_url": "${var.base_image}",
        "iso_checksum": "${var.base_checksum}",
        "output_directory": "${var.output_directory}",
        "vm_name": "${var.image_name}.qcow2",
        "format": "qcow2",
        "disk_compression": True,
        "disk_size": "${var.disk_size}",
        "disk_interface": "virtio",
        "disk_discard": "unmap",
        "disk_detect_zeroes": "unmap",
        "net_device": "virtio-net",
        "accelerator": "${var.accelerator}",
        "memory": "${var.memory}",
        "cpus": "${var.cpus}",
        "headless": True,
        "qemuargs": [
            ["-cdrom", "${var.seed_iso}"],
            ["-serial", "file:${var.serial_log}"],
            # Packer's own forward listens on every interface: keep SSH to the build VM on loopback.
            ["-netdev", "user,id=user.0,hostfwd=tcp:127.0.0.1:{{ .SSHHostPort }}-:22"],
        ],
        "ssh_host": "127.0.0.1",
        "ssh_username": BUILD_USER,
        "ssh_private_key_file": "${var.ssh_private_key_file}",
        "ssh_timeout": "20m",
        "boot_wait": "5s",
        "shutdown_command": _shutdown_command(),
        "shutdown_timeout": "10m",
    }
    return variables, source


def _base_template_name(profile: ResolvedProfile) -> str:
    """golden-base-debian12; a layout other than single is part of the name (the template must have it)."""
    name = f"golden-base-debian{profile.release.number}"
    return name if profile.disk_layout is DiskLayout.SINGLE else f"{name}-{profile.disk_layout}"


def _source_image_name(profile: ResolvedProfile) -> str:
    """The cloud's own Debian image has one partition: other layouts start from a golden base uploaded there."""
    if profile.disk_layout is DiskLayout.SINGLE:
        return f"Debian {profile.release.number}"
    return _base_template_name(profile)


def _proxmox(profile: ResolvedProfile) -> tuple[dict[str, Variable], dict[str, Any]]:
    """What Packer 1.6's bundled proxmox-clone takes; _proxmox_plugin adds what only the plugin knows."""
    hw = HARDWARE
    variables = {
        "proxmox_url": Variable("string", "https://pve.example.net:8006/api2/json", "Proxmox VE API URL"),
        "proxmox_username": Variable("string", "packer@pve", "Proxmox user (user@realm)"),
        "proxmox_password": Variable(
            "string", None, "Proxmox password (from $PROXMOX_PASSWORD)", sensitive=True,
            env_default="PROXMOX_PASSWORD",
        ),
        "proxmox_node": Variable("string", "pve", "Node that runs the bake"),
        "proxmox_insecure": Variable("bool", False, "Skip TLS verification (self-signed PVE)"),
        "clone_vm": Variable("string", _base_template_name(profile), "Base template to clone"),
        "cloud_init_storage_pool": Variable("string", VM_STORAGE, "Storage of the template's cloud-init drive"),
        "user_data_file": Variable("string", "user-data", "The bake user-data"),
        "bridge": Variable("string", "vmbr0", "Network bridge for the build VM"),
        "memory": Variable("number", hw.memory_mb, "Guest memory in MiB"),
        "cores": Variable("number", hw.cores, "Guest cores"),
    }
    source = {
        "proxmox_url": "${var.proxmox_url}",
        "username": "${var.proxmox_username}",
        "password": "${var.proxmox_password}",
        "node": "${var.proxmox_node}",
        "insecure_skip_tls_verify": "${var.proxmox_insecure}",
        "clone_vm": "${var.clone_vm}",
        "full_clone": True,
        "template_name": "${var.image_name}",
        "template_description": f"goldenimage {profile.name} on {profile.release.name}",
        # The clone's hardware: the same as `golden publish --to proxmox` gives its templates. The disks
        # are the base template's own (a `disks` list would replace them).
        "memory": "${var.memory}",
        "cores": "${var.cores}",
        "os": hw.ostype,
        "cpu_type": hw.cpu,
        "scsi_controller": hw.scsihw,
        "boot": f"order={hw.boot_disk}",
        "vga": {"type": hw.vga},
        "qemu_agent": hw.agent,
        "network_adapters": [{"model": hw.nic_model, "bridge": "${var.bridge}"}],
        # The template's cloud-init drive gives the build account its key; the profile's user-data is
        # applied by apply-user-data.sh (Packer 1.6's HCL2 proxmox-clone rejects additional_iso_files).
        "cloud_init": True,
        "cloud_init_storage_pool": "${var.cloud_init_storage_pool}",
        "ssh_username": BUILD_USER,
        "ssh_private_key_file": "${var.ssh_private_key_file}",
        "ssh_timeout": "20m",
    }
    return variables, source


def _proxmox_plugin(variables: dict[str, Variable], source: dict[str, Any]) -> None:
    """The proxmox plugin (Packer 1.7+): an API token, as `golden publish --to proxmox` uses, the serial port,
    the cloud-init drive's bus and upgrade setting, and a task timeout for a full clone (default 1 minute)."""
    hw = HARDWARE
    for name in ("proxmox_username", "proxmox_password"):
        del variables[name]
    variables["proxmox_token_id"] = Variable(
        "string", None, "API token id, USER@REALM!TOKENID ($PROXMOX_TOKEN_ID)", env_default="PROXMOX_TOKEN_ID")
    variables["proxmox_token_secret"] = Variable(
        "string", None, "API token secret ($PROXMOX_TOKEN_SECRET)", sensitive=True,
        env_default="PROXMOX_TOKEN_SECRET")
    del source["password"]
    source.update({
        "username": "${var.proxmox_token_id}",
        "token": "${var.proxmox_token_secret}",
        "task_timeout": f"{TASK_TIMEOUT_S // 60}m",
        "serials": [hw.serial],
        "cloud_init_disk_type": hw.cloud_init_bus,
        "cloud_init_disable_upgrade_packages": not hw.ciupgrade,
    })


def _openstack(profile: ResolvedProfile) -> tuple[dict[str, Variable], dict[str, Any]]:
    variables = {
        "identity_endpoint": Variable(
            "string", "https://auth.cloud.ovh.net/v3", "Keystone URL (OVH Public Cloud by default; or $OS_AUTH_URL)"
        ),
        "region": Variable("string", "GRA11", "OpenStack region"),
        "os_username": Variable("string", None, "OpenStack user ($OS_USERNAME)", env_default="OS_USERNAME"),
        "os_password": Variable(
            "string", None, "OpenStack password ($OS_PASSWORD)", sensitive=True, env_default="OS_PASSWORD"
        ),
        "tenant_name": Variable("string", None, "Project name ($OS_PROJECT_NAME)", env_default="OS_PROJECT_NAME"),
        "domain_name": Variable("string", "Default", "User and project domain"),
        "source_image_name": Variable(
            "string", _source_image_name(profile), "Name of the image to start from (the newest of that name)"),
        "flavor": Variable("string", "b2-7", "Flavor of the build instance"),
        "networks": Variable("list(string)", [], "Network IDs (empty: the project's default)"),
        "user_data_file": Variable("string", OPENSTACK_USER_DATA, "The bake user-data, gzip-compressed"),
    }
    source = {
        "identity_endpoint": "${var.identity_endpoint}",
        "region": "${var.region}",
        "username": "${var.os_username}",
        "password": "${var.os_password}",
        "tenant_name": "${var.tenant_name}",
        "domain_name": "${var.domain_name}",
        # Clouds keep several images of one name (a provider's updated Debian, base uploads): the newest wins.
        "source_image_filter": {"filters": {"name": "${var.source_image_name}"}, "most_recent": True},
        "flavor": "${var.flavor}",
        "networks": "${var.networks}",
        "image_name": "${var.image_name}",
        # The builder reads the file's bytes and its OpenStack library base64-encodes them for Nova.
        "user_data_file": "${var.user_data_file}",
        "ssh_ip_version": "4",
        "ssh_username": BUILD_USER,
        "ssh_private_key_file": "${var.ssh_private_key_file}",
        "ssh_timeout": "20m",
        "metadata": {"golden_profile": profile.name, "os_distro": "debian",
                     "os_version": str(profile.release.number)},
    }
    return variables, source


def openstack_user_data(profile: ResolvedProfile, user_data: str) -> bytes:
    """The bake user-data for the openstack builder: gzip (deterministic), checked against Nova's limit."""
    data = gzip.compress(user_data.encode(), compresslevel=9, mtime=0)
    size = len(base64.b64encode(data))
    if size > NOVA_USER_DATA_MAX:
        raise InputError(
            f"profile {profile.name}: the bake user-data is {size} bytes once gzip-compressed and base64-encoded, "
            f"over Nova's limit of {NOVA_USER_DATA_MAX} for an OpenStack server",
            hint="move large files out of the profile (into a package, or fetched by bake_commands), or bake "
                 "with --target qemu and ship the image with golden publish --to openstack",
        )
    return data


def _shutdown_command() -> str:
    # The build account goes last, in the command that stops the machine: nothing logs in after it.
    # cloud-init's sudoers file also holds the profile's users' rules (the native converge writes the same
    # file): only the build account's lines go, and the file when no rule is left (remove-build-account.sh).
    # disable_root: cloud-init put the build key into root's authorized_keys too, behind a "login as" command.
    rules = "/etc/sudoers.d/90-cloud-init-users"
    keys = "/root/.ssh/authorized_keys"
    return (
        f"sudo sh -c 'userdel -rf {BUILD_USER}; if [ -e {rules} ]; then "
        f'sed -i "/^# User rules for {BUILD_USER}\\$/d; /^{BUILD_USER}[[:space:]]/d" {rules}; '
        f'grep -q "^[^#[:space:]]" {rules} || rm -f {rules}; fi; '
        f'if [ -e {keys} ]; then '
        f'sed -i "/Please login as the user .*{BUILD_USER}.* rather than the user/d" {keys}; fi; '
        "shutdown -P now'"
    )


_AS_ROOT = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"


def _shell(script: str, **options: Any) -> dict[str, Any]:
    """A shell provisioner running one of the bake scripts from REMOTE_FOLDER."""
    return {"shell": {"script": "${var.scripts_dir}/" + script, "remote_folder": REMOTE_FOLDER, **options}}


def _apply_user_data() -> list[dict[str, Any]]:
    return [
        {"file": {"source": "${var.user_data_file}", "destination": "/tmp/golden-user-data"}},
        _shell("apply-user-data.sh"),
    ]


def _provisioners(profile: ResolvedProfile, target: Target) -> list[dict[str, Any]]:
    release = profile.release
    unique = " ".join(profile.content.instance_unique)
    cleanup_env = [
        f"GOLDEN_SERVICES={' '.join(profile.content.services)}",
        f"GOLDEN_INSTANCE_UNIQUE={unique}",
        f"GOLDEN_CLEAN_MACHINE_ID={1 if release.clean_machine_id else 0}",
    ]
    first = _apply_user_data() if target is Target.PROXMOX else []
    # The qemu builder runs a shutdown_command, which removes the account as it stops the machine; the
    # proxmox and openstack builders stop it through their API, so their last provisioner removes it.
    last = [] if target is Target.QEMU else [_remove_build_account()]
    return [
        *first,
        _shell("wait-cloud-init.sh"),
        _shell("collect-manifest.sh"),
        {"file": {
            "direction": "download",
            "source": GUEST_MANIFEST,
            "destination": "${var.manifest_dir}/" + MANIFEST_FILE,
        }},
        _shell(
            "cleanup.sh",
            environment_vars=cleanup_env,
            execute_command=_AS_ROOT,
        ),
        *last,
    ]


def _remove_build_account() -> dict[str, Any]:
    """The last provisioner where no shutdown_command runs: nothing logs in after it, so Packer must not
    clean up the uploaded script (skip_clean: the script removes itself)."""
    return _shell("remove-build-account.sh", environment_vars=[f"GOLDEN_BUILD_USER={BUILD_USER}"],
                  execute_command=_AS_ROOT, skip_clean=True)


_SOURCES = {Target.QEMU: ("qemu", _qemu), Target.PROXMOX: ("proxmox-clone", _proxmox),
            Target.OPENSTACK: ("openstack", _openstack)}
#: Options only the external plugins (Packer 1.7+) know: Packer 1.6's bundled builders reject them.
_PLUGIN_ONLY = {Target.PROXMOX: _proxmox_plugin}


def render_template(
    profile: ResolvedProfile, target: Target, *, required_plugins: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(template, vars): the *.pkr.json document and the *.pkrvars.json values for one target.

    required_plugins: the template is for Packer 1.7+, whose builders are plugins: it pins the plugin and
    uses the options only the plugin knows. Without it, the template is what Packer 1.6 accepts."""
    builder, make = _SOURCES[target]
    variables = _common_variables(profile)
    target_vars, source = make(profile)
    variables.update(target_vars)
    template: dict[str, Any] = {}
    if required_plugins:
        if target in _PLUGIN_ONLY:
            _PLUGIN_ONLY[target](variables, source)
        name = target.value
        src, version = PLUGINS[name]
        template["packer"] = {"required_plugins": {name: {"source": src, "version": version}}}
    decls: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for name, var in variables.items():
        decl: dict[str, Any] = {"type": var.type, "description": var.description}
        if var.sensitive:
            decl["sensitive"] = True
        if var.env_default:
            decl["default"] = f'${{env("{var.env_default}")}}'
        else:
            values[name] = var.value
        decls[name] = decl
    template["variable"] = decls
    template["source"] = {builder: {SOURCE_NAME: source}}
    template["build"] = {
        "name": f"{profile.name}-debian{profile.release.number}",
        "sources": [f"source.{builder}.{SOURCE_NAME}"],
        "provisioner": _provisioners(profile, target),
    }
    return template, values
