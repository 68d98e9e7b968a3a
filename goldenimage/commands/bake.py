"""`golden build`: bake a profile into a golden qcow2 in images/, or return the cached artifact."""

from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from ..bake import disk as disk_recipe
from ..bake import native, shared_store, store
from ..bake.accel import detect_accelerator, fall_back_to_tcg
from ..bake.base_image import (
    BaseImage,
    base_key,
    build_base,
    build_layer_tree,
    check_official_base,
    fetch_base,
    resolve_mirror,
)
from ..bake.packer_build import KvmHang, packer_build
from ..bake.packer_cli import packer_version, supports_required_plugins
from ..core.errors import GoldenError, InputError
from ..core.fs import sha256_file
from ..core.log import info, step
from ..core.run import require, run
from ..model.profiles import ResolvedProfile, resolve
from ..model.support import notice
from ..render.packer_template import MANIFEST_FILE, SCRIPTS, Target, render_template, script_text
from ..render.userdata import VM_PASS_STRICT, render_vm_pass_user_data
from .render import Rendered, bake_user_data, render

#: Stands in for the ephemeral build key when computing the content key (the key changes every bake).
KEY_PLACEHOLDER = "ssh-ed25519 BUILD-KEY golden-build"
#: A package layer is read only by this machine's QEMU (Debian 12's reads zstd): six times faster to write
#: than zlib for the same size. Artifacts stay zlib, which every consumer's qemu-img reads (README).
LAYER_COMPRESSION = "zstd"


def layer_packages(profile: ResolvedProfile) -> tuple[str, ...]:
    """The profile's packages that its package layer installs natively beside base_packages: all of them,
    unless the profile adds apt sources (their packages come from repositories only the VM pass configures)."""
    if profile.content.apt.sources:
        return ()
    base = set(profile.base_packages)
    return tuple(p for p in profile.packages if p not in base)


#: What an image is for: `cloud`, virtual machines (virtio; Debian's cloud kernel, small and quick to boot),
#: or `metal`, dedicated servers (the generic kernel, whose initramfs-tools default MODULES=most brings AHCI,
#: NVMe and the RAID HBAs' drivers, the server NICs' firmware, mdadm).
KINDS = ("cloud", "metal")


def kernel_flavour(kind: str) -> str:
    """The release matrix's kernel flavour of an image kind."""
    if kind not in KINDS:
        raise InputError(f"unknown image kind {kind!r}", hint=f"one of: {', '.join(KINDS)}")
    return "generic" if kind == "metal" else "cloud"


def kind_packages(profile: ResolvedProfile, kind: str) -> tuple[str, ...]:
    """The base packages an image of `kind` adds to the profile's: the release's metal_packages for metal."""
    extra = profile.release.metal_packages if kind == "metal" else ()
    return tuple(dict.fromkeys([*profile.base_packages, *extra]))


def layer_key(profile: ResolvedProfile, mirror: str | None = None, kind: str = "cloud") -> str:
    """The key of the profile's mirror-built base (its package layer): release, mirror, layout, package set and
    recipe version; never its files, settings, services or first-boot agent."""
    return base_key(profile.release, resolve_mirror(profile.release, mirror), kernel_flavour(kind),
                    profile.disk_layout, kind_packages(profile, kind), layer_packages(profile), LAYER_COMPRESSION)


def native_route(profile: ResolvedProfile, base_url: str | None = None) -> bool:
    """The native bake (converge into the package layer's tree, no VM unless vm_bake_commands) for a
    mirror-built base; an official image (--base-url) or a profile with its own apt sources (packages only
    the VM configures) keeps the VM pass with cloud-init."""
    return not base_url and not profile.content.apt.sources


def get_layer_tree(profile: ResolvedProfile, mirror: str | None = None, kind: str = "cloud") -> BaseImage:
    """The profile's package layer as a tree (the native bake's starting point), built or from the cache."""
    return build_layer_tree(profile.release, mirror=mirror, flavour=kernel_flavour(kind), layout=profile.disk_layout,
                            extra_packages=kind_packages(profile, kind), packages=layer_packages(profile))


def get_base(profile: ResolvedProfile, *, base_url: str | None = None, base_checksum: str | None = None,
             mirror: str | None = None, kind: str = "cloud") -> BaseImage:
    """The base image for the profile's release and disk layout: an official image by URL + checksum (one
    partition; the VM pass installs the packages), or mirror-built with every package of the profile in it."""
    if base_url:
        checksum = check_official_base(base_checksum, profile.disk_layout, f"profile {profile.name}")
        return fetch_base(base_url, checksum, profile.release)
    return build_base(profile.release, mirror=mirror, flavour=kernel_flavour(kind), layout=profile.disk_layout,
                      extra_packages=kind_packages(profile, kind), packages=layer_packages(profile),
                      compression=LAYER_COMPRESSION)


def profile_key(profile: ResolvedProfile, base: BaseImage) -> str:
    """The content key of baking `profile` on `base`."""
    template, _ = render_template(profile, Target.QEMU, required_plugins=supports_required_plugins())
    return store.content_key(
        profile,
        base_sha256=base.sha256,
        template=template,
        user_data=bake_user_data(profile, KEY_PLACEHOLDER),
        scripts={name: script_text(name) for name in SCRIPTS},
    )


def native_key(profile: ResolvedProfile, layer: BaseImage) -> str:
    """The content key of the native bake of `profile` on its package layer tree: the profile, the layer,
    the user-data the engine converges, the native recipe (this module's native steps and the disk), the VM
    pass's template and user-data when the profile has vm_bake_commands, and the first-boot agent (its
    converge engine included)."""
    vm_pass = bool(profile.content.vm_bake_commands)
    template: dict[str, Any] = {"route": "native"}
    user_data = bake_user_data(profile, None, vm_commands=False)
    # the disk's recipe too: a change to its fstab or GRUB setup must give a new artifact, not the stored one
    scripts = {"native.py": Path(native.__file__).read_text(), "disk.py": Path(disk_recipe.__file__).read_text()}
    if vm_pass:
        template["vm_pass"], _ = render_template(profile, Target.QEMU, required_plugins=supports_required_plugins())
        user_data += render_vm_pass_user_data(profile, KEY_PLACEHOLDER)
        scripts.update({name: script_text(name) for name in SCRIPTS})
    return store.content_key(profile, base_sha256=layer.sha256, template=template, user_data=user_data,
                             scripts=scripts)


def _qemu_version() -> str:
    out = run(["qemu-system-x86_64", "--version"]).stdout
    return out.splitlines()[0] if out else "unknown"


def bake(name: str, debian: int | str | None = None, overlays: tuple[Path, ...] = (), *, force: bool = False,
         base_url: str | None = None, base_checksum: str | None = None, mirror: str | None = None,
         memory: int = 2048, kind: str = "cloud") -> store.Artifact:
    """Bake (or find in the store) the artifact of a profile on a release with overlays, for virtual machines
    (`cloud`) or dedicated servers (`metal`)."""
    profile = resolve(name, debian, overlays)
    kernel_flavour(kind)  # an unknown kind fails before anything is built
    if kind == "metal" and base_url:
        raise InputError("--kind metal builds its base from the mirror (the generic kernel): --base-url cannot "
                         "be used with it", hint="drop --base-url")
    require("packer", "qemu-system-x86_64", "qemu-img", "ssh-keygen",
            purpose="to bake images (or run: make deps)")
    title = f"Baking {profile.name} on {profile.release.name}" + (" for metal" if kind == "metal" else "")
    if profile.release.support and (unsupported := notice(profile.release.name, profile.release.support)):
        info(unsupported)
    if native_route(profile, base_url):
        return _bake_native(profile, title, force=force, mirror=mirror, memory=memory, kind=kind)
    with step(title):
        base = get_base(profile, base_url=base_url, base_checksum=base_checksum, mirror=mirror, kind=kind)
        key = profile_key(profile, base)
        cached = _from_store(key, force)
        if cached:
            return cached
        started = time.time()
        with store.staging(prefix=key) as work:
            rendered = render(profile, Target.QEMU, work / "render", content_key=key)
            guest, accel = _vm_pass(rendered, base.path, base.sha256, work, memory)
            qcow2 = work / "output" / f"{json.loads(rendered.var_file.read_text())['image_name']}.qcow2"
            _report_vm_installs(base, guest)
            manifest = _manifest(profile, key, base, guest, accel, started, kind)
            manifest["route"] = {"name": "vm", "native": ["package layer (mmdebstrap)"],
                                 "vm": ["cloud-init (user-data)", "cleanup"]}
            with step("Publishing the artifact"):
                artifact = store.commit(qcow2, manifest, store.artifact_name(profile, key, started, kind))
            artifact = shared_store.share_new(artifact)
        info(f"{artifact.qcow2} ({artifact.qcow2.stat().st_size / 2**20:.0f} MiB)")
        return artifact


def _from_store(key: str, force: bool) -> store.Artifact | None:
    """The artifact already baked under this content key, unless --force asks for a new one."""
    cached = store.find(key)
    if cached and not force:
        info(f"cached: {cached.qcow2} (content key {key}); --force rebuilds")
        return shared_store.share_new(cached)  # one whose upload failed before is shared now
    return None if force else shared_store.look_up(key)


def _vm_pass(rendered: Rendered, disk: Path, disk_sha256: str, work: Path, memory: int) -> tuple[dict[str, Any], str]:
    """Packer boots `disk` with the rendered seed, runs the bake scripts and writes work/output/NAME.qcow2
    (zlib); returns the guest manifest and the accelerator. A guest that hangs under KVM before its kernel
    prints is baked again under TCG (and the rest of the process uses TCG)."""
    accel = detect_accelerator()
    values = json.loads(rendered.var_file.read_text())
    serial_log = work / "serial.log"
    values.update(
        base_image=str(disk),
        base_checksum=f"sha256:{disk_sha256}",
        seed_iso=str(rendered.seed_iso),
        output_directory=str(work / "output"),
        memory=memory,
        serial_log=str(serial_log),
        manifest_dir=str(work),
        ssh_private_key_file=str(rendered.build_key),
        scripts_dir=str(rendered.directory / "scripts"),
    )
    while True:
        values["accelerator"] = accel
        rendered.var_file.write_text(json.dumps(values, indent=2) + "\n")
        info(f"accelerator {accel}; disk {disk.name}")
        try:
            packer_build(rendered.template, rendered.var_file, serial_log=serial_log, title="packer build",
                         watch_kvm=accel == "kvm")
        except KvmHang as hang:
            fall_back_to_tcg(hang.message)
            info(f"the bake VM hung under KVM ({hang.message}): baking again under TCG, and TCG from now on")
            shutil.rmtree(work / "output", ignore_errors=True)  # Packer refuses an existing output directory
            accel = "tcg"
            continue
        return json.loads((work / MANIFEST_FILE).read_text()), accel


def _bake_native(profile: ResolvedProfile, title: str, *, force: bool, mirror: str | None,
                 memory: int, kind: str = "cloud") -> store.Artifact:
    """Package layer tree -> copy -> converge -> hygiene -> disk -> compression, natively; a VM pass on that
    disk only for the profile's vm_bake_commands."""
    with step(title):
        layer = get_layer_tree(profile, mirror=mirror, kind=kind)
        key = native_key(profile, layer)
        cached = _from_store(key, force)
        if cached:
            return cached
        started = time.time()
        seconds: dict[str, float] = {}
        vm_commands = list(profile.content.vm_bake_commands)
        info(f"native bake; layer {layer.path.name}; content key {key}"
             + (f"; a VM pass for {len(vm_commands)} vm_bake_commands" if vm_commands else "; no VM"))
        with store.staging(prefix=key) as work:
            root = work / "root"
            clock = time.monotonic()
            native.copy_layer(layer, root)
            seconds["copy"] = time.monotonic() - clock
            clock = time.monotonic()
            report = native.converge_tree(root, bake_user_data(profile, None, content_key=key, vm_commands=False),
                                          work)
            seconds["converge"] = time.monotonic() - clock
            guest = native.tree_manifest(root)
            clock = time.monotonic()
            native.clean_tree(root, profile)
            if vm_commands:
                native.mark_firstboot_done(root)
            seconds["hygiene"] = time.monotonic() - clock
            clock = time.monotonic()
            raw = native.assemble(root, profile, work)
            seconds["disk"] = time.monotonic() - clock
            clock = time.monotonic()
            name = f"{profile.name}-debian{profile.release.number}"
            accel = None
            if vm_commands:
                disk = native.to_qcow2(raw, work / "converged.qcow2", profile, None)
                seconds["convert"] = time.monotonic() - clock
                clock = time.monotonic()
                rendered = render(profile, Target.QEMU, work / "render", content_key=key, vm_pass_only=True)
                vm_guest, accel = _vm_pass(rendered, disk, sha256_file(disk), work, memory)
                guest.update(packages=vm_guest.get("packages", guest["packages"]),
                             kernels=vm_guest.get("kernels", guest["kernels"]))
                guest["vm_pass_dpkg"] = vm_guest.get("vm_pass_dpkg", [])
                guest["vm_pass_runcmd"] = check_vm_pass_ran(vm_commands, vm_guest)
                qcow2 = work / "output" / f"{name}.qcow2"
                seconds["vm_pass"] = time.monotonic() - clock
            else:
                qcow2 = native.to_qcow2(raw, work / "output" / f"{name}.qcow2", profile, "zlib")
                seconds["compression"] = time.monotonic() - clock
            manifest = _manifest(profile, key, layer, guest, accel or "none (no VM)", started, kind)
            if not vm_commands:
                manifest["build"]["packer"] = None  # installed here, not used
            manifest["route"] = {
                "name": "native",
                "native": ["package layer (mmdebstrap)", "copy", "converge", "hygiene", "disk assembly",
                           "compression" if not vm_commands else "conversion"],
                "vm": ["vm_bake_commands", "cleanup", "compression"] if vm_commands else [],
                # what cloud-init's runcmd script held in the VM pass (it stops at the first failing line)
                "vm_pass_runcmd": guest.get("vm_pass_runcmd", []),
                "seconds": {k: round(v, 1) for k, v in seconds.items()},
            }
            manifest["converge"] = {"summary": report[-1] if report else "", "changes": report[:-1]}
            manifest["after_layer_dpkg"] = guest.get("after_layer_dpkg", [])
            with step("Publishing the artifact"):
                artifact = store.commit(qcow2, manifest, store.artifact_name(profile, key, started, kind))
            artifact = shared_store.share_new(artifact)
        info(f"{artifact.qcow2} ({artifact.qcow2.stat().st_size / 2**20:.0f} MiB)")
        return artifact


def check_vm_pass_ran(vm_commands: list[str], guest: dict[str, Any]) -> list[str]:
    """The runcmd lines the VM pass's cloud-init ran (its guest manifest), checked to be the profile's
    vm_bake_commands after `set -e`: a pass that ran something else (or nothing) fails the bake."""
    ran = [str(line) for line in guest.get("runcmd", [])]
    if ran != [VM_PASS_STRICT, *vm_commands]:
        raise GoldenError(
            f"the VM pass did not run the profile's vm_bake_commands: cloud-init's runcmd held {ran or 'nothing'}",
            hint="the bake log above shows the output of the pass's cloud-init (wait-cloud-init.sh)",
        )
    return ran


def _report_vm_installs(base: BaseImage, guest: dict[str, Any]) -> None:
    """Say what dpkg installed during the VM pass: nothing on a mirror-built base (its package layer has the
    profile's packages), the profile's packages on an official image."""
    actions = guest.get("vm_pass_dpkg", [])
    if actions:
        names = sorted({line.split()[1].split(":")[0] for line in actions})
        where = "" if base.source != "mmdebstrap" else " (not in the package layer: a newer version on the mirror?)"
        info(f"the VM pass installed or upgraded {len(names)} packages{where}: {' '.join(names[:20])}")
    else:
        info("the VM pass installed no package (all were in the package layer)")


def _manifest(profile: ResolvedProfile, key: str, base: BaseImage, guest: dict[str, Any], accel: str,
              started: float, kind: str = "cloud") -> dict[str, Any]:
    finished = time.time()
    return {
        "format": 1,
        "content_key": key,
        # what the image is for: cloud (virtual machines) or metal (dedicated servers); verify and publish read it
        "kind": kind,
        "profile": profile.to_dict(),
        "release": {"number": profile.release.number, "codename": profile.release.codename},
        # security, lts or none when it was built; the extended-support source it took (ELTS), if any
        "support": profile.release.support.manifest() if profile.release.support else None,
        "base": {"source": base.source, "sha256": base.sha256, "key": base.key, "file": base.path.name},
        # the firmware the artifact boots: "bios", "uefi", "uefi-secureboot" (publish and verify read it)
        "firmware": list(base.firmware),
        "build": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(finished)),
            "seconds": round(finished - started, 1),
            "accelerator": accel,
            "host": platform.node(),
            "packer": ".".join(str(n) for n in packer_version()),
            "qemu": _qemu_version(),
        },
        "cloud_init": guest.get("cloud_init"),
        "kernels": guest.get("kernels", []),
        "packages": guest.get("packages", {}),
        # dpkg's install and upgrade actions during the VM pass, from the guest's /var/log/dpkg.log
        "vm_pass_dpkg": guest.get("vm_pass_dpkg", []),
    }
