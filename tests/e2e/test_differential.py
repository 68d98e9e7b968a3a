"""One system from both routes: a profile baked natively (`golden build`: the first-boot agent's converge
engine applies the user-data to the package layer's tree) and through cloud-init in a VM from the same package
layer (the route of the proxmox and openstack targets, run locally by the qemu Packer target as the bake's VM
pass runs it: the full bake user-data, cleanup, the build account removed at shutdown). The two disks are read
offline and compared file by file (tests/e2e/system_diff.py: content, mode, owner; users and groups, sudoers,
enabled units, sysctls, apt sources, locale and time zone are among those files). Any difference outside the
allow-list (system_diff.ALLOWED, each entry with its reason) fails the test, naming the path.

Both disks are kept in $GOLDEN_DIFF_KEEP when it is set, so the comparison can be run again alone:
`python -m tests.e2e.system_diff NATIVE VM`. Marked `vm` and `differential`: `make test-differential`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from goldenimage.bake.pipeline import bake
from goldenimage.bake.plan import get_layer_tree, native_key
from goldenimage.bake.render_dir import render
from goldenimage.bake.vm_pass import vm_pass
from goldenimage.core.fs import sha256_file
from goldenimage.model.profiles import resolve
from goldenimage.render.packer_template import Target
from tests.e2e.packer_standin import layer_disk
from tests.e2e.system_diff import compare_disks

pytestmark = [pytest.mark.vm, pytest.mark.differential]


@pytest.mark.parametrize("name", ["web", "banking-hardened"])
def test_native_and_cloud_init_bakes_give_the_same_system(name: str, tmp_path: Path) -> None:
    profile = resolve(name, 12)
    native_artifact = bake(name, 12)
    key = native_key(profile, get_layer_tree(profile))
    assert native_artifact.key == key, "the native bake and this test read different package layers"

    disk = layer_disk(profile, tmp_path)
    # the content key the image records is the native artifact's: the two images say the same of themselves
    rendered = render(profile, Target.QEMU, tmp_path / "render", content_key=key)
    vm_pass(rendered, disk, sha256_file(disk), tmp_path, 2048)
    vm_disk = tmp_path / "output" / f"{profile.name}-debian{profile.release.number}.qcow2"
    disk.unlink()

    keep = os.environ.get("GOLDEN_DIFF_KEEP")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(native_artifact.qcow2, Path(keep) / f"{name}-native.qcow2")
        shutil.copy(vm_disk, Path(keep) / f"{name}-vm.qcow2")
    found = compare_disks(native_artifact.qcow2, vm_disk, tmp_path)
    assert not found, f"{name}: {len(found)} differences outside the allow-list:\n" + "\n".join(found[:200])
