"""`golden build`: bake a profile into a golden qcow2 in images/, or return the cached artifact."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from ..bake import store
from ..bake.accel import detect_accelerator
from ..bake.base import BaseImage, base_key, build_base, fetch_base, resolve_mirror
from ..bake.packer_build import packer_build
from ..bake.packer_cli import packer_version, supports_required_plugins
from ..core.errors import GoldenError, InputError
from ..core.log import info, step
from ..core.run import require, run
from ..model.disk_layout import DiskLayout
from ..model.profiles import ResolvedProfile, resolve
from ..render.packer_template import MANIFEST_FILE, SCRIPTS, Target, render_template, script_text
from .render import bake_user_data, render

#: Stands in for the ephemeral build key when computing the content key (the key changes every bake).
KEY_PLACEHOLDER = "ssh-ed25519 BUILD-KEY golden-build"
#: A package layer is read only by this machine's QEMU (Debian 12's reads zstd): six times faster to write
#: than zlib for the same size. Artifacts stay zlib, which every consumer's qemu-img reads (README).
LAYER_COMPRESSION = "zstd"


def layer_packages(profile: ResolvedProfile) -> tuple[str, ...]:
    """The profile's packages that its package layer installs natively beside base_packages: all of them,
    unless the profile adds apt sources (their packages come from repositories only the VM pass configures)."""
    if profile.content.get("apt", {}).get("sources"):
        return ()
    base = set(profile.base_packages)
    return tuple(p for p in profile.packages if p not in base)


def layer_key(profile: ResolvedProfile, mirror: str | None = None, flavour: str = "cloud") -> str:
    """The key of the profile's mirror-built base (its package layer): release, mirror, layout, package set and
    recipe version; never its files, settings, services or first-boot agent."""
    return base_key(profile.release, resolve_mirror(profile.release, mirror), flavour, profile.disk_layout,
                    profile.base_packages, layer_packages(profile), LAYER_COMPRESSION)


def get_base(profile: ResolvedProfile, *, base_url: str | None = None, base_checksum: str | None = None,
             mirror: str | None = None, flavour: str = "cloud") -> BaseImage:
    """The base image for the profile's release and disk layout: an official image by URL + checksum (one
    partition; the VM pass installs the packages), or mirror-built with every package of the profile in it."""
    if base_url:
        if not base_checksum:
            raise GoldenError("--base-url needs --base-checksum (sha256:HEX or sha512:HEX)",
                              hint="take the checksum from the image's SHA512SUMS file")
        if profile.disk_layout is not DiskLayout.SINGLE:
            raise InputError(
                f"profile {profile.name} wants the {profile.disk_layout} disk layout, but an official cloud image "
                "(--base-url) has one partition",
                hint="leave out --base-url: the base is then built from the Debian mirror with that layout",
            )
        return fetch_base(base_url, base_checksum, profile.release)
    return build_base(profile.release, mirror=mirror, flavour=flavour, layout=profile.disk_layout,
                      extra_packages=profile.base_packages, packages=layer_packages(profile),
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


def _qemu_version() -> str:
    out = run(["qemu-system-x86_64", "--version"]).stdout
    return out.splitlines()[0] if out else "unknown"


def bake(name: str, debian: int | str | None = None, overlays: tuple[Path, ...] = (), *, force: bool = False,
         base_url: str | None = None, base_checksum: str | None = None, mirror: str | None = None,
         memory: int = 2048) -> store.Artifact:
    """Bake (or find in the store) the artifact of a profile on a release with overlays."""
    profile = resolve(name, debian, overlays)
    require("packer", "qemu-system-x86_64", "qemu-img", "ssh-keygen",
            purpose="to bake images (or run: make deps)")
    title = f"Baking {profile.name} on {profile.release.name}"
    with step(title):
        base = get_base(profile, base_url=base_url, base_checksum=base_checksum, mirror=mirror)
        key = profile_key(profile, base)
        cached = store.find(key)
        if cached and not force:
            info(f"cached: {cached.qcow2} (content key {key}); --force rebuilds")
            return cached
        started = time.time()
        with store.staging(prefix=key) as work:
            rendered = render(profile, Target.QEMU, work / "render", content_key=key)
            accel = detect_accelerator()
            values = json.loads(rendered.var_file.read_text())
            serial_log = work / "serial.log"
            values.update(
                base_image=str(base.path),
                base_checksum=f"sha256:{base.sha256}",
                seed_iso=str(rendered.seed_iso),
                output_directory=str(work / "output"),
                accelerator=accel,
                memory=memory,
                serial_log=str(serial_log),
                manifest_dir=str(work),
                ssh_private_key_file=str(rendered.build_key),
                scripts_dir=str(rendered.directory / "scripts"),
            )
            rendered.var_file.write_text(json.dumps(values, indent=2) + "\n")
            info(f"accelerator {accel}; base {base.path.name}; content key {key}")
            packer_build(rendered.template, rendered.var_file, serial_log=serial_log, title="packer build")
            qcow2 = work / "output" / f"{values['image_name']}.qcow2"
            guest = json.loads((work / MANIFEST_FILE).read_text())
            _report_vm_installs(base, guest)
            manifest = _manifest(profile, key, base, guest, accel, started)
            with step("Publishing the artifact"):
                artifact = store.publish(qcow2, manifest, store.artifact_name(profile, key, started))
        info(f"{artifact.qcow2} ({artifact.qcow2.stat().st_size / 2**20:.0f} MiB)")
        return artifact


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
              started: float) -> dict[str, Any]:
    finished = time.time()
    return {
        "format": 1,
        "content_key": key,
        "profile": profile.to_dict(),
        "release": {"number": profile.release.number, "codename": profile.release.codename},
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
