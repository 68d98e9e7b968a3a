"""What a bake of a profile is before anything is built: its route (native or VM), its starting point (the
package layer, or a base image), and its content key, which decides whether the store already holds it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import InputError
from ..model.profiles import ResolvedProfile
from ..render.packer_template import SCRIPTS, Target, script_text
from ..render.userdata import render_vm_pass_user_data
from . import disk as disk_recipe
from . import native, store
from .base_image import (
    BaseImage,
    base_key,
    build_base,
    build_layer_tree,
    check_official_base,
    fetch_base,
    resolve_mirror,
)
from .render_dir import PackerDocuments, bake_user_data

#: Stands in for the ephemeral build key when computing the content key (the key changes every bake).
KEY_PLACEHOLDER = "ssh-ed25519 BUILD-KEY golden-build"
#: A package layer is read only by this machine's QEMU (Debian 12's reads zstd): six times faster to write
#: than zlib for the same size. Artifacts stay zlib, which every consumer's qemu-img reads (README).
LAYER_COMPRESSION = "zstd"
#: What an image is for: `cloud`, virtual machines (virtio; Debian's cloud kernel, small and quick to boot),
#: or `metal`, dedicated servers (the generic kernel, whose initramfs-tools default MODULES=most brings AHCI,
#: NVMe and the RAID HBAs' drivers, the server NICs' firmware, mdadm).
KINDS = ("cloud", "metal")


@dataclass(frozen=True)
class Request:
    """One bake asked for: a resolved profile, what the image is for, and where its base comes from."""

    profile: ResolvedProfile
    kind: str = "cloud"
    mirror: str | None = None
    base_url: str | None = None
    base_checksum: str | None = None
    memory: int = 2048
    force: bool = False

    @property
    def native(self) -> bool:
        return native_route(self.profile, self.base_url)

    @property
    def vm_commands(self) -> tuple[str, ...]:
        return tuple(self.profile.content.vm_bake_commands)


def layer_packages(profile: ResolvedProfile) -> tuple[str, ...]:
    """The profile's packages that its package layer installs natively beside base_packages: all of them,
    unless the profile adds apt sources (their packages come from repositories only the VM pass configures)."""
    if profile.content.apt.sources:
        return ()
    base = set(profile.base_packages)
    return tuple(p for p in profile.packages if p not in base)


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


def profile_key(profile: ResolvedProfile, base: BaseImage, documents: PackerDocuments | None = None) -> str:
    """The content key of baking `profile` on `base` in a VM; `documents`, the Packer documents the VM pass
    will run (rendered here when not given)."""
    documents = documents or PackerDocuments.render(profile, Target.QEMU)
    return store.content_key(
        profile,
        base_sha256=base.sha256,
        template=dict(documents.template),
        user_data=bake_user_data(profile, KEY_PLACEHOLDER),
        scripts={name: script_text(name) for name in SCRIPTS},
    )


def native_key(profile: ResolvedProfile, layer: BaseImage, documents: PackerDocuments | None = None) -> str:
    """The content key of the native bake of `profile` on its package layer tree: the profile, the layer,
    the user-data the engine converges, the native recipe (the native steps and the disk), the VM pass's
    template and user-data when the profile has vm_bake_commands (`documents`, rendered here when not given),
    and the first-boot agent (its converge engine included)."""
    vm_pass = bool(profile.content.vm_bake_commands)
    template: dict[str, Any] = {"route": "native"}
    user_data = bake_user_data(profile, None, vm_commands=False)
    # the disk's recipe too: a change to its fstab or GRUB setup must give a new artifact, not the stored one
    scripts = {"native.py": Path(native.__file__).read_text(), "disk.py": Path(disk_recipe.__file__).read_text()}
    if vm_pass:
        template["vm_pass"] = dict((documents or PackerDocuments.render(profile, Target.QEMU)).template)
        user_data += render_vm_pass_user_data(profile, KEY_PLACEHOLDER)
        scripts.update({name: script_text(name) for name in SCRIPTS})
    return store.content_key(profile, base_sha256=layer.sha256, template=template, user_data=user_data,
                             scripts=scripts)
