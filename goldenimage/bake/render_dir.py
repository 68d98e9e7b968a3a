"""Write everything a bake needs into one directory: Packer template and values, user-data, meta-data,
the NoCloud seed ISO, the bake scripts, an ephemeral build key, and an example first-boot user-data.

`golden render` writes it for a look or a Packer run of your own; the bake's VM pass writes it once, with the
Packer documents the content key was computed from (`PackerDocuments`), and reads back nothing."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.outdir import check_replaceable, mark, replace_dir, stage_dir
from ..core.ssh_keys import ephemeral_keypair
from ..model.profiles import ResolvedProfile
from ..render.firstboot_bundle import bundle_commands, bundle_files
from ..render.packer_template import (
    OPENSTACK_USER_DATA,
    SCRIPTS,
    Target,
    openstack_user_data,
    render_template,
    script_text,
)
from ..render.seed import write_seed_iso
from ..render.userdata import (
    render_host_user_data,
    render_meta_data,
    render_user_data,
    render_vm_pass_user_data,
)
from .packer_cli import PLUGINS_FROM, render_packer_version, supports_required_plugins

BUILD_KEY = "build_key"


@dataclass(frozen=True)
class PackerDocuments:
    """A target's Packer template and its variables' values, rendered once: the content key is computed from
    `template`, and the same documents are written for the Packer run."""

    template: Mapping[str, Any]
    values: Mapping[str, Any]

    @classmethod
    def render(cls, profile: ResolvedProfile, target: Target, required_plugins: bool | None = None) -> PackerDocuments:
        """The documents for `target`, for the installed Packer unless `required_plugins` says otherwise."""
        if required_plugins is None:
            required_plugins = supports_required_plugins()
        template, values = render_template(profile, target, required_plugins=required_plugins)
        return cls(template, values)

    @property
    def image_name(self) -> str:
        """The name Packer gives the qcow2 it writes (output_directory/NAME.qcow2)."""
        return str(self.values["image_name"])


@dataclass(frozen=True)
class Rendered:
    """The files of one rendering, and the Packer variables' values written into `var_file`."""

    directory: Path
    template: Path
    var_file: Path
    user_data: Path
    meta_data: Path
    seed_iso: Path
    firstboot_example: Path
    build_key: Path
    values: Mapping[str, Any]


def make_build_key(directory: Path) -> tuple[Path, str]:
    """An ephemeral ed25519 key pair for the build account; (private key path, public key line)."""
    key = ephemeral_keypair(directory, BUILD_KEY, comment="golden-build (ephemeral)")
    return key.private, key.public


def bake_user_data(profile: ResolvedProfile, build_public_key: str | None, content_key: str | None = None,
                   vm_commands: bool = True) -> str:
    """The bake-time user-data: the profile, plus the first-boot agent every image carries (no build account
    when `build_public_key` is None; without vm_bake_commands when `vm_commands` is False)."""
    return render_user_data(profile, build_public_key, content_key=content_key,
                            extra_files=bundle_files(), extra_commands=bundle_commands(), vm_commands=vm_commands)


def base_name(profile: ResolvedProfile, target: Target) -> str:
    return f"{profile.name}-debian{profile.release.number}-{target.value}"


def render(
    profile: ResolvedProfile,
    target: Target,
    out_dir: Path,
    *,
    build_public_key: str | None = None,
    content_key: str | None = None,
    required_plugins: bool | None = None,
    packer_version: str | None = None,
    vm_pass_only: bool = False,
    documents: PackerDocuments | None = None,
) -> Rendered:
    """Render `profile` for `target` into out_dir; files appear only once all are written.

    The template is for `packer_version` (X.Y), else the installed Packer, else the newest supported one;
    `required_plugins` overrides that choice.
    out_dir is replaced whole, and only if golden wrote it (its marker) or it is empty: InputError otherwise.
    `vm_pass_only`: the user-data of the native bake's VM pass (the build account and vm_bake_commands).
    `documents`: the Packer documents already rendered (the bake's, which its content key was computed from)."""
    out_dir = Path(out_dir)
    check_replaceable(out_dir)
    if documents is None:
        if required_plugins is None:
            required_plugins = render_packer_version(packer_version) >= PLUGINS_FROM
        documents = PackerDocuments.render(profile, target, required_plugins)
    stage = stage_dir(out_dir)
    try:
        if build_public_key is None:
            _, build_public_key = make_build_key(stage)
        name = base_name(profile, target)
        (stage / f"{name}.pkr.json").write_text(json.dumps(documents.template, indent=2) + "\n")
        (stage / f"{name}.pkrvars.json").write_text(json.dumps(documents.values, indent=2) + "\n")
        if vm_pass_only:
            user_data = render_vm_pass_user_data(profile, build_public_key)
        else:
            user_data = bake_user_data(profile, build_public_key, content_key)
        meta_data = render_meta_data(f"golden-bake-{uuid.uuid4().hex[:12]}", f"golden-{profile.name}")
        (stage / "user-data").write_text(user_data)
        if target is Target.OPENSTACK:
            (stage / OPENSTACK_USER_DATA).write_bytes(openstack_user_data(profile, user_data))
        (stage / "meta-data").write_text(meta_data)
        write_seed_iso(stage / "seed.iso", user_data, meta_data)
        scripts = stage / "scripts"
        scripts.mkdir()
        for script in SCRIPTS:
            (scripts / script).write_text(script_text(script))
            (scripts / script).chmod(0o755)
        example = render_host_user_data(
            f"{profile.name}-1", dict(profile.example_settings), ssh_authorized_keys=["ssh-ed25519 AAAA... you@example"]
        )
        (stage / "firstboot-user-data.example").write_text(example)
        mark(stage, "golden render")
        stage.chmod(0o755)
        replace_dir(stage, out_dir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return Rendered(
        directory=out_dir,
        template=out_dir / f"{name}.pkr.json",
        var_file=out_dir / f"{name}.pkrvars.json",
        user_data=out_dir / "user-data",
        meta_data=out_dir / "meta-data",
        seed_iso=out_dir / "seed.iso",
        firstboot_example=out_dir / "firstboot-user-data.example",
        build_key=out_dir / BUILD_KEY,
        values=documents.values,
    )

