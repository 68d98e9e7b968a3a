"""The whole chain on a real bake: package layer from the mirror, the native bake (converge into the layer's
tree, no VM for web), the artifact store, verify on BIOS and Secure Boot clones.

These boot virtual machines (marker `vm`); CI runs them, `make test-fast` leaves them out.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from goldenimage.bake import store
from goldenimage.bake.pipeline import bake
from goldenimage.bake.plan import layer_packages
from goldenimage.core.fs import sha256_file
from goldenimage.core.run import run
from goldenimage.model.profiles import resolve
from tests.conftest import ROOT

pytestmark = pytest.mark.vm
PROFILE = "web"


@pytest.fixture(scope="session")
def web_artifact() -> store.Artifact:
    """The web artifact for Debian 12, baked once per session (or found in the store by its key)."""
    return bake(PROFILE, 12)


def test_bake_leaves_a_compressed_qcow2_its_checksum_and_a_manifest(web_artifact):
    qcow2 = web_artifact.qcow2
    assert qcow2.name.startswith("web-debian12-") and qcow2.name.endswith(f"-{web_artifact.key}.qcow2")
    info = json.loads(run(["qemu-img", "info", "--output=json", qcow2]).stdout)
    assert info["format"] == "qcow2"
    # compressed and trimmed: far smaller than the virtual disk
    assert info["actual-size"] < info["virtual-size"] / 3
    # zlib, which every consumer's qemu-img reads (the package layer below it is zstd: only ours reads that)
    assert info["format-specific"]["data"]["compression-type"] == "zlib"
    digest, name = web_artifact.sha256_file.read_text().split()
    assert name == qcow2.name and digest == sha256_file(qcow2)
    manifest = web_artifact.manifest().data
    assert manifest["content_key"] == web_artifact.key
    assert {"apache2", "php8.2-fpm", "cloud-init", "openssh-server"} <= set(manifest["packages"])
    assert manifest["cloud_init"].startswith("22.4")
    assert manifest["build"]["qemu"].startswith("QEMU emulator")
    assert manifest["base"]["sha256"] and manifest["release"]["number"] == 12
    assert manifest["image"]["sha256"] == digest
    assert manifest["firmware"] == ["bios", "uefi", "uefi-secureboot"]  # the mirror-built base is hybrid


def test_web_bakes_natively_with_no_vm_and_installs_nothing_after_the_package_layer(web_artifact):
    """The package layer (mmdebstrap, natively) holds every package; the user-data was converged into its
    tree by the agent's engine (one line per change), and no VM booted: dpkg's log after the layer shows no
    install and no upgrade, while the user-data's `packages:` were checked against the tree."""
    manifest = web_artifact.manifest().data
    assert manifest["base"]["source"] == "mmdebstrap" and manifest["base"]["file"].endswith(".tree.tar.zst")
    route = manifest["route"]
    assert route["name"] == "native" and route["vm"] == []
    assert {"converge", "hygiene", "disk assembly", "compression"} <= set(route["native"])
    assert manifest["build"]["packer"] is None and manifest["build"]["accelerator"].startswith("none")
    assert manifest["after_layer_dpkg"] == [] and manifest["vm_pass_dpkg"] == []
    summary = manifest["converge"]["summary"]
    assert summary.startswith("changed: ") and int(summary.split()[1].rstrip(",")) > 10
    changes = manifest["converge"]["changes"]
    assert "changed: file /etc/golden/image.json (created)" in changes
    # the agent's units are enabled by the converge; apache2 was already enabled by its package in the layer
    assert "changed: service golden-firstboot.service enabled" in changes
    assert "ran: runcmd: a2enmod -q mpm_event proxy_fcgi setenvif ssl headers rewrite" in changes
    assert not [line for line in changes if "golden-build" in line]  # the build account never exists
    assert set(layer_packages(resolve(PROFILE, 12))) <= set(manifest["packages"])
    assert set(resolve(PROFILE, 12).packages) <= set(manifest["packages"])


def test_the_accelerator_probe_boots_the_kernel_of_the_package_layer(web_artifact, tmp_path, monkeypatch):
    """The probe takes its kernel from the package layer the bake left in the cache, and under TCG that kernel
    boots to the panic that follows its missing root file system: QEMU exits on its own, in seconds."""
    from goldenimage.bake import accel, probe_kernel

    monkeypatch.delenv("GOLDEN_PROBE_KERNEL", raising=False)
    kernel = probe_kernel.find_probe_kernel()
    assert kernel is not None and kernel.name.startswith("vmlinuz-") and "cloud-amd64" in kernel.name
    result = accel.probe_linux("tcg", kernel, 180.0)
    assert result.outcome == "booted", result


def test_second_bake_returns_the_cached_artifact(web_artifact):
    before = web_artifact.manifest_file.stat().st_mtime_ns
    proc = subprocess.run([sys.executable, "-m", "goldenimage.cli", "build", PROFILE], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(web_artifact.qcow2)
    assert "cached:" in proc.stderr and "packer build" not in proc.stderr
    assert web_artifact.manifest_file.stat().st_mtime_ns == before


def test_verify_boots_two_clones_and_the_web_suite_passes(web_artifact):
    # golden verify: hygiene (host keys and machine-id differ between the two boots, no build user,
    # no leftover key, no build cloud-init data) plus the web suite (health endpoint answers 200), on a
    # BIOS clone and on a UEFI clone with Secure Boot enforced.
    proc = subprocess.run([sys.executable, "-m", "goldenimage.cli", "verify", str(web_artifact.qcow2)],
                          cwd=ROOT, capture_output=True, text=True, timeout=2400)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout
    assert "(bios and uefi-secureboot)" in proc.stderr
    assert proc.stdout.count(" passed") == 2  # the suites ran on both clones


def _processes_under(path: Path) -> list[str]:
    """Command lines of processes that name something under `path` (QEMU, tar, the chrooted converge)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(path) in cmdline and "pytest" not in cmdline:
                found.append(cmdline)
    return found


def test_interrupted_bake_stops_its_work_and_leaves_nothing_that_looks_complete(tmp_path, web_artifact):
    """Ctrl-C in the middle of a native bake (its package layer cached by the session's bake, one file
    changed): the copy, the converge or the disk step stops, and the staging directory goes."""
    images = tmp_path / "images"
    overlay = tmp_path / "one-file.yaml"
    overlay.write_text(f"files:\n  - path: /etc/golden-interrupted\n    content: '{time.time()}'\n")
    env = {**os.environ, "GOLDEN_IMAGES_DIR": str(images)}
    proc = subprocess.Popen([sys.executable, "-m", "goldenimage.cli", "build", PROFILE, "--overlay", str(overlay)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            # A run started in the background of a shell inherits SIGINT ignored, and Python then
                            # installs no Ctrl-C handler: give the bake the terminal's default.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not (images.exists() and list(images.glob(".partial-*/root"))):
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(1)
    assert list(images.glob(".partial-*/root")), "the bake never started copying the layer"
    time.sleep(3)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0
    time.sleep(2)
    assert _processes_under(images) == [], out
    leftovers = sorted(p.name for p in images.iterdir()) if images.exists() else []
    assert leftovers == [], leftovers
