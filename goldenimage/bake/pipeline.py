"""The bake as a pipeline: a profile in, an artifact in the store out (or the one stored under its content key).

Native route: package layer -> copy -> converge -> hygiene -> disk -> compression (or conversion, then a VM pass
for the profile's vm_bake_commands) -> publish. VM route (an official base, or a profile with apt sources):
base -> VM pass with cloud-init -> publish. The native stages from copy to the VM pass run in one `Stages`
clock, which times each once for the manifest (route.seconds); the package layer and publish are timed by their
progress steps, as the layer's build and the store's commit log them. Every stage after the content key works in
the bake's staging folder and the store takes the artifact whole (manifest last), so a stage that fails leaves
nothing in the store.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import InputError
from ..core.fs import sha256_file
from ..core.log import info, step
from ..core.run import require
from ..model.profiles import resolve
from ..model.support import notice
from ..render.packer_template import Target
from . import native, shared_store, store
from .manifest import Build, Converge, Guest, Manifest, Route
from .plan import Request, get_base, get_layer_tree, kernel_flavour, native_key, profile_key
from .render_dir import PackerDocuments, bake_user_data, render
from .vm_pass import check_vm_pass_ran, report_vm_installs, vm_pass


class Stage(enum.Enum):
    """The timed stages of the native route; their values are the manifest's route.seconds keys."""

    COPY = "copy"
    CONVERGE = "converge"
    HYGIENE = "hygiene"
    DISK = "disk"
    COMPRESSION = "compression"
    CONVERSION = "convert"
    VM_PASS = "vm_pass"


@dataclass
class Stages:
    """The one clock of a bake: each stage runs inside `run(stage)`, once, and its seconds are kept in order."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def run(self, stage: Stage) -> Iterator[None]:
        if stage.value in self.seconds:
            raise RuntimeError(f"bake stage {stage.value} ran twice")
        started = time.monotonic()
        yield
        self.seconds[stage.value] = time.monotonic() - started


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
    request = Request(profile, kind=kind, mirror=mirror, base_url=base_url, base_checksum=base_checksum,
                      memory=memory, force=force)
    title = f"Baking {profile.name} on {profile.release.name}" + (" for metal" if kind == "metal" else "")
    if profile.release.support and (unsupported := notice(profile.release.name, profile.release.support)):
        info(unsupported)
    with step(title):
        artifact = bake_native(request) if request.native else bake_in_vm(request)
        info(f"{artifact.qcow2} ({artifact.qcow2.stat().st_size / 2**20:.0f} MiB)")
    return artifact


def from_store(key: str, force: bool) -> store.Artifact | None:
    """The artifact already baked under this content key, unless --force asks for a new one."""
    cached = store.find(key)
    if cached and not force:
        info(f"cached: {cached.qcow2} (content key {key}); --force rebuilds")
        return shared_store.share_new(cached)  # one whose upload failed before is shared now
    return None if force else shared_store.look_up(key)


def bake_in_vm(request: Request) -> store.Artifact:
    """Base image -> VM pass with cloud-init (the profile's whole user-data) -> publish."""
    profile = request.profile
    base = get_base(profile, base_url=request.base_url, base_checksum=request.base_checksum,
                    mirror=request.mirror, kind=request.kind)
    documents = PackerDocuments.render(profile, Target.QEMU)
    key = profile_key(profile, base, documents)
    cached = from_store(key, request.force)
    if cached:
        return cached
    started = time.time()
    with store.staging(prefix=key) as work:
        rendered = render(profile, Target.QEMU, work / "render", content_key=key, documents=documents)
        qcow2, guest, accel = vm_pass(rendered, base.path, base.sha256, work, request.memory)
        report_vm_installs(base, guest)
        manifest = Manifest(
            content_key=key, kind=request.kind, profile=profile, base=base,
            build=Build.now(started, accel, packer_ran=True), guest=guest,
            route=Route("vm", native=("package layer (mmdebstrap)",), vm=("cloud-init (user-data)", "cleanup")),
        )
        return publish(qcow2, manifest, started)


def bake_native(request: Request) -> store.Artifact:
    """Package layer tree -> copy -> converge -> hygiene -> disk -> compression, natively; a VM pass on that
    disk only for the profile's vm_bake_commands."""
    profile, vm_commands = request.profile, request.vm_commands
    layer = get_layer_tree(profile, mirror=request.mirror, kind=request.kind)
    documents = PackerDocuments.render(profile, Target.QEMU) if vm_commands else None
    key = native_key(profile, layer, documents)
    cached = from_store(key, request.force)
    if cached:
        return cached
    started = time.time()
    stages = Stages()
    info(f"native bake; layer {layer.path.name}; content key {key}"
         + (f"; a VM pass for {len(vm_commands)} vm_bake_commands" if vm_commands else "; no VM"))
    with store.staging(prefix=key) as work:
        root = work / "root"
        with stages.run(Stage.COPY):
            native.copy_layer(layer, root)
        with stages.run(Stage.CONVERGE):
            report = native.converge_tree(root, bake_user_data(profile, None, content_key=key, vm_commands=False),
                                          work)
        guest = Guest.from_json(native.tree_manifest(root))
        with stages.run(Stage.HYGIENE):
            native.clean_tree(root, profile)
            if vm_commands:
                native.mark_firstboot_done(root)
        with stages.run(Stage.DISK):
            raw = native.assemble(root, profile, work)
        accel = "none (no VM)"
        if documents is not None:
            with stages.run(Stage.CONVERSION):
                disk = native.to_qcow2(raw, work / "converged.qcow2", profile, None)
            with stages.run(Stage.VM_PASS):
                rendered = render(profile, Target.QEMU, work / "render", content_key=key, vm_pass_only=True,
                                  documents=documents)
                qcow2, vm_guest, accel = vm_pass(rendered, disk, sha256_file(disk), work, request.memory)
                guest = guest.after_vm_pass(vm_guest)
                check_vm_pass_ran(vm_commands, guest)
        else:
            with stages.run(Stage.COMPRESSION):
                name = f"{profile.name}-debian{profile.release.number}"
                qcow2 = native.to_qcow2(raw, work / "output" / f"{name}.qcow2", profile, "zlib")
        manifest = Manifest(
            content_key=key, kind=request.kind, profile=profile, base=layer,
            build=Build.now(started, accel, packer_ran=bool(vm_commands)), guest=guest,
            route=_native_route(bool(vm_commands), guest, stages),
            converge=Converge.from_report(report),
        )
        return publish(qcow2, manifest, started)


def _native_route(vm_pass_ran: bool, guest: Guest, stages: Stages) -> Route:
    return Route(
        "native",
        native=("package layer (mmdebstrap)", "copy", "converge", "hygiene", "disk assembly",
                "conversion" if vm_pass_ran else "compression"),
        vm=("vm_bake_commands", "cleanup", "compression") if vm_pass_ran else (),
        vm_pass_runcmd=guest.runcmd,
        seconds=dict(stages.seconds),
    )


def publish(qcow2: Path, manifest: Manifest, started: float) -> store.Artifact:
    """The last stage: the qcow2, its checksum and its manifest committed to the local store (manifest last),
    then shared when a shared store is configured."""
    name = store.artifact_name(manifest.profile, manifest.content_key, started, manifest.kind)
    with step("Publishing the artifact"):
        artifact = store.commit(qcow2, manifest.to_json(), name)
    return shared_store.share_new(artifact)

