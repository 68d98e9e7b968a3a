"""The VM pass: Packer boots a disk with the rendered seed, cloud-init runs the bake's user-data, the bake
scripts clean up, and Packer writes the compressed qcow2; a guest that hangs under KVM is baked again under TCG."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..core.errors import GoldenError
from ..core.log import info
from ..render.packer_template import MANIFEST_FILE
from ..render.userdata import VM_PASS_STRICT
from .accel import detect_accelerator, fall_back_to_tcg
from .base_image import BaseImage
from .manifest import Guest
from .packer_build import KvmHang, packer_build
from .render_dir import Rendered


def run_values(rendered: Rendered, disk: Path, disk_sha256: str, work: Path, memory: int,
               accelerator: str) -> dict[str, Any]:
    """The Packer variables of this run (this machine's paths, memory and accelerator): a var file of their
    own, read after the rendered one."""
    return {
        "base_image": str(disk),
        "base_checksum": f"sha256:{disk_sha256}",
        "seed_iso": str(rendered.seed_iso),
        "output_directory": str(work / "output"),
        "memory": memory,
        "serial_log": str(work / "serial.log"),
        "manifest_dir": str(work),
        "ssh_private_key_file": str(rendered.build_key),
        "scripts_dir": str(rendered.directory / "scripts"),
        "accelerator": accelerator,
    }


def vm_pass(rendered: Rendered, disk: Path, disk_sha256: str, work: Path, memory: int) -> tuple[Path, Guest, str]:
    """Packer boots `disk` with the rendered seed, runs the bake scripts and writes work/output/NAME.qcow2
    (zlib); returns that qcow2, the guest's manifest and the accelerator. A guest that hangs under KVM before
    its kernel prints is baked again under TCG (and the rest of the process uses TCG)."""
    accel = detect_accelerator()
    serial_log = work / "serial.log"
    while True:
        run_file = rendered.directory / f"run-{accel}.pkrvars.json"
        run_file.write_text(json.dumps(run_values(rendered, disk, disk_sha256, work, memory, accel), indent=2) + "\n")
        info(f"accelerator {accel}; disk {disk.name}")
        try:
            packer_build(rendered.template, rendered.var_file, serial_log=serial_log, title="packer build",
                         watch_kvm=accel == "kvm", more_var_files=(run_file,))
        except KvmHang as hang:
            fall_back_to_tcg(hang.message)
            info(f"the bake VM hung under KVM ({hang.message}): baking again under TCG, and TCG from now on")
            shutil.rmtree(work / "output", ignore_errors=True)  # Packer refuses an existing output directory
            accel = "tcg"
            continue
        qcow2 = work / "output" / f"{rendered.values['image_name']}.qcow2"
        return qcow2, Guest.from_json(json.loads((work / MANIFEST_FILE).read_text())), accel


def check_vm_pass_ran(vm_commands: tuple[str, ...] | list[str], guest: Guest) -> tuple[str, ...]:
    """The runcmd lines the VM pass's cloud-init ran (its guest manifest), checked to be the profile's
    vm_bake_commands after `set -e`: a pass that ran something else (or nothing) fails the bake."""
    ran = guest.runcmd
    if list(ran) != [VM_PASS_STRICT, *vm_commands]:
        raise GoldenError(
            f"the VM pass did not run the profile's vm_bake_commands: cloud-init's runcmd held "
            f"{list(ran) or 'nothing'}",
            hint="the bake log above shows the output of the pass's cloud-init (wait-cloud-init.sh)",
        )
    return ran


def report_vm_installs(base: BaseImage, guest: Guest) -> None:
    """Say what dpkg installed during the VM pass: nothing on a mirror-built base (its package layer has the
    profile's packages), the profile's packages on an official image."""
    if guest.vm_pass_dpkg:
        names = sorted({line.split()[1].split(":")[0] for line in guest.vm_pass_dpkg})
        where = "" if base.source != "mmdebstrap" else " (not in the package layer: a newer version on the mirror?)"
        info(f"the VM pass installed or upgraded {len(names)} packages{where}: {' '.join(names[:20])}")
    else:
        info("the VM pass installed no package (all were in the package layer)")
