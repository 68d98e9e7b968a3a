"""The bake pipeline (goldenimage/bake/pipeline.py) with its native steps stood in for: the stages run in their
order, each timed once, the manifest keeps the keys its readers take, and a stage that fails leaves nothing in
the store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from goldenimage.bake import manifest as manifests
from goldenimage.bake import native, pipeline, store
from goldenimage.bake.base_image import BaseImage
from goldenimage.bake.manifest import Guest
from goldenimage.bake.pipeline import Stage, Stages
from goldenimage.core.errors import GoldenError
from goldenimage.model.profiles import resolve
from goldenimage.render.userdata import VM_PASS_STRICT

#: The top-level keys of a native artifact's manifest, as main's store holds them (verify, publish, channels,
#: stable pins and the shared store read them); `support` is null for a release under security support.
NATIVE_KEYS = {"after_layer_dpkg", "base", "build", "cloud_init", "content_key", "converge", "firmware", "format",
               "image", "kernels", "kind", "packages", "profile", "release", "route", "support", "vm_pass_dpkg"}
ROUTE_KEYS = {"name", "native", "seconds", "vm", "vm_pass_runcmd"}
BUILD_KEYS = {"accelerator", "finished", "host", "packer", "qemu", "seconds", "started"}


class NativeSteps:
    """The native bake's steps, recorded in the order they run instead of touching a tree or a disk."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fail: str = "", slow: str = "") -> None:
        self.calls: list[str] = []
        self.fail, self.slow = fail, slow
        layer = BaseImage(tmp_path / "layer.tar", "0" * 64, "layer-key", 12, "mmdebstrap")
        monkeypatch.setattr(pipeline, "get_layer_tree", lambda profile, mirror=None, kind="cloud": layer)
        monkeypatch.setattr(pipeline, "require", lambda *tools, purpose="": None)
        monkeypatch.setattr(manifests, "packer_version", lambda: (1, 11, 2))
        monkeypatch.setattr(manifests, "qemu_version", lambda: "QEMU emulator version 7.2")
        monkeypatch.delenv("GOLDEN_STORE", raising=False)
        self.images = tmp_path / "images"
        monkeypatch.setenv("GOLDEN_IMAGES_DIR", str(self.images))
        steps = {"copy_layer": None, "converge_tree": ["+ a change", "converged: 1 change"],
                 "tree_manifest": {"packages": {"nginx": "1.22"}, "kernels": ["linux-image-cloud-amd64"],
                                   "cloud_init": "22.4.2", "after_layer_dpkg": ["install nginx <none> 1.22"]},
                 "clean_tree": None, "mark_firstboot_done": None}
        for name, result in steps.items():
            monkeypatch.setattr(native, name, self._step(name, result))
        monkeypatch.setattr(native, "assemble", self._disk)
        monkeypatch.setattr(native, "to_qcow2", self._qcow2)

    def _step(self, name: str, result: Any) -> Any:
        def step(*args: Any, **kwargs: Any) -> Any:
            self._record(name)
            return result
        return step

    def _record(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail:
            raise GoldenError(f"{name} failed")
        if name == self.slow:
            time.sleep(0.3)

    def _disk(self, root: Path, profile: Any, work: Path) -> Path:
        self._record("assemble")
        raw = work / "disk.raw"
        raw.write_bytes(b"raw disk")
        return raw

    def _qcow2(self, raw: Path, out: Path, profile: Any, compression: str | None) -> Path:
        self._record(f"to_qcow2 {compression}")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"QFI\xfb" + raw.read_bytes())
        return out

    def left_in_store(self) -> list[str]:
        return sorted(p.name for p in self.images.iterdir()) if self.images.exists() else []


def test_the_native_stages_run_in_order_and_each_is_timed_once(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    steps = NativeSteps(monkeypatch, tmp_path, slow="converge_tree")
    artifact = pipeline.bake("web", 12)
    assert steps.calls == ["copy_layer", "converge_tree", "tree_manifest", "clean_tree", "assemble", "to_qcow2 zlib"]
    manifest = artifact.manifest().data
    seconds = manifest["route"]["seconds"]
    assert set(seconds) == {"copy", "converge", "hygiene", "disk", "compression"}  # the store sorts the keys
    assert seconds["converge"] >= 0.3 and all(v < 0.3 for k, v in seconds.items() if k != "converge")
    assert set(manifest) == NATIVE_KEYS
    assert set(manifest["route"]) == ROUTE_KEYS and set(manifest["build"]) == BUILD_KEYS
    assert manifest["route"]["native"][-1] == "compression" and manifest["route"]["vm"] == []
    assert manifest["build"]["packer"] is None and manifest["build"]["accelerator"] == "none (no VM)"
    assert manifest["converge"] == {"summary": "converged: 1 change", "changes": ["+ a change"]}
    assert manifest["packages"] == {"nginx": "1.22"} and manifest["after_layer_dpkg"] == ["install nginx <none> 1.22"]
    assert store.find(artifact.key) == artifact
    assert steps.left_in_store() == sorted([artifact.qcow2.name, artifact.sha256_file.name,
                                            artifact.manifest_file.name])


def test_a_stage_runs_once_in_a_bake() -> None:
    stages = Stages()
    with stages.run(Stage.COPY):
        pass
    with pytest.raises(RuntimeError, match="copy ran twice"), stages.run(Stage.COPY):
        pass
    assert list(stages.seconds) == ["copy"]


@pytest.mark.parametrize("failing", ["converge_tree", "assemble", "to_qcow2 zlib"])
def test_a_failing_stage_leaves_nothing_in_the_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      failing: str) -> None:
    steps = NativeSteps(monkeypatch, tmp_path, fail=failing)
    with pytest.raises(GoldenError, match="failed"):
        pipeline.bake("web", 12)
    assert steps.calls[-1] == failing
    assert steps.left_in_store() == []  # no qcow2, checksum or manifest, and no staging folder


def test_a_publish_that_fails_leaves_nothing_in_the_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    steps = NativeSteps(monkeypatch, tmp_path)
    written: list[Path] = []

    def write_atomic(path: Path, data: str) -> None:
        written.append(path)
        if path.name.endswith(".manifest.json"):
            raise OSError(28, "No space left on device", str(path))
        path.write_text(data)

    monkeypatch.setattr(store, "write_atomic", write_atomic)
    with pytest.raises(OSError):
        pipeline.bake("web", 12)
    assert [p.suffix for p in written] == [".sha256", ".json"]
    assert steps.left_in_store() == []


def test_a_profile_with_vm_bake_commands_converts_then_runs_the_vm_pass(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    steps = NativeSteps(monkeypatch, tmp_path)
    profile = resolve("banking-hardened", 12)
    commands = tuple(profile.content.vm_bake_commands)
    assert commands, "banking-hardened has vm_bake_commands"
    rendered: list[Any] = []

    def render(profile: Any, target: Any, out: Path, **kwargs: Any) -> str:
        rendered.append(kwargs)
        return "rendered"

    def vm_pass(got: str, disk: Path, sha: str, work: Path, memory: int) -> tuple[Path, Guest, str]:
        steps.calls.append("vm_pass")
        assert got == "rendered" and disk.name == "converged.qcow2"
        qcow2 = work / "output" / "banking-hardened-debian12.qcow2"
        qcow2.parent.mkdir()
        qcow2.write_bytes(b"QFI\xfb vm")
        return qcow2, Guest(packages={"grub-pc": "2.06"}, runcmd=(VM_PASS_STRICT, *commands),
                            vm_pass_dpkg=("install x <none> 1",)), "tcg"

    monkeypatch.setattr(pipeline, "render", render)
    monkeypatch.setattr(pipeline, "vm_pass", vm_pass)
    manifest = pipeline.bake("banking-hardened", 12).manifest().data
    assert steps.calls == ["copy_layer", "converge_tree", "tree_manifest", "clean_tree", "mark_firstboot_done",
                           "assemble", "to_qcow2 None", "vm_pass"]
    assert set(manifest["route"]["seconds"]) == {"copy", "converge", "hygiene", "disk", "convert", "vm_pass"}
    # the VM pass runs the Packer documents the content key was computed from: rendered once, handed on
    assert len(rendered) == 1 and rendered[0]["vm_pass_only"] and rendered[0]["documents"] is not None
    assert manifest["route"]["vm_pass_runcmd"] == [VM_PASS_STRICT, *commands]
    assert manifest["packages"] == {"grub-pc": "2.06"} and manifest["vm_pass_dpkg"] == ["install x <none> 1"]
    assert manifest["build"]["packer"] == "1.11.2" and manifest["build"]["accelerator"] == "tcg"


def test_a_vm_pass_that_ran_other_commands_leaves_nothing_in_the_store(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    steps = NativeSteps(monkeypatch, tmp_path)

    def vm_pass(got: Any, disk: Path, sha: str, work: Path, memory: int) -> tuple[Path, Guest, str]:
        qcow2 = work / "output" / "x.qcow2"
        qcow2.parent.mkdir()
        qcow2.write_bytes(b"QFI\xfb vm")
        return qcow2, Guest(runcmd=(VM_PASS_STRICT, "true")), "tcg"

    monkeypatch.setattr(pipeline, "render", lambda *args, **kwargs: "rendered")
    monkeypatch.setattr(pipeline, "vm_pass", vm_pass)
    with pytest.raises(GoldenError, match="did not run the profile's vm_bake_commands"):
        pipeline.bake("banking-hardened", 12)
    assert steps.left_in_store() == []


def test_the_vm_pass_writes_its_run_values_apart_and_reads_no_var_file_back(monkeypatch: pytest.MonkeyPatch,
                                                                           tmp_path: Path) -> None:
    import json

    from goldenimage.bake import render_dir, vm_pass
    from goldenimage.render.packer_template import MANIFEST_FILE, Target

    profile = resolve("web", 12)
    documents = render_dir.PackerDocuments.render(profile, Target.QEMU, required_plugins=True)
    rendered = render_dir.render(profile, Target.QEMU, tmp_path / "render", documents=documents)
    var_file_before = rendered.var_file.read_text()
    runs: list[list[str]] = []

    def packer_build(template: Path, var_file: Path, *, more_var_files: tuple[Path, ...] = (), **kwargs: Any) -> None:
        runs.append([var_file.name, *(p.name for p in more_var_files)])
        if len(runs) == 1:
            raise vm_pass.KvmHang("hung before the kernel")
        (tmp_path / "work" / MANIFEST_FILE).write_text(json.dumps({"runcmd": ["a"], "packages": {"p": "1"}}))

    (tmp_path / "work").mkdir()
    monkeypatch.setattr(vm_pass, "detect_accelerator", lambda: "kvm")
    monkeypatch.setattr(vm_pass, "fall_back_to_tcg", lambda message: None)
    monkeypatch.setattr(vm_pass, "packer_build", packer_build)
    qcow2, guest, accel = vm_pass.vm_pass(rendered, tmp_path / "disk.qcow2", "f" * 64, tmp_path / "work", 1024)
    name = rendered.var_file.name
    assert runs == [[name, "run-kvm.pkrvars.json"], [name, "run-tcg.pkrvars.json"]]
    assert rendered.var_file.read_text() == var_file_before  # the rendered values are never rewritten
    tcg = json.loads((rendered.directory / "run-tcg.pkrvars.json").read_text())
    assert tcg["accelerator"] == "tcg" and tcg["memory"] == 1024 and tcg["base_checksum"] == "sha256:" + "f" * 64
    assert "image_name" not in tcg and "disk_size" not in tcg, "the run's own values only"
    assert (accel, guest.runcmd, dict(guest.packages)) == ("tcg", ("a",), {"p": "1"})
    assert qcow2 == tmp_path / "work" / "output" / f"{documents.values['image_name']}.qcow2"
