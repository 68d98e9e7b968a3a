"""The base cache's scratch directories (mmdebstrap's root tree, the raw disk): removed when the build ends, and
by the next build when a build was killed outright, unmounting first what mmdebstrap had mounted in them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from goldenimage.bake import base_image


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GOLDEN_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache" / "base").mkdir(parents=True)
    return tmp_path / "cache" / "base"


def test_a_scratch_dir_is_named_for_its_process_and_removed_at_the_end(cache: Path) -> None:
    with pytest.raises(RuntimeError), base_image._tempdir() as tmp:
        assert tmp.parent == cache and tmp.name.startswith(f".build-{os.getpid()}-")
        (tmp / "rootfs").mkdir()
        raise RuntimeError("mmdebstrap failed")
    assert not list(cache.iterdir())


def test_the_next_build_removes_a_killed_builds_scratch_and_leaves_a_running_ones(cache: Path, dead_pid: int) -> None:
    orphan, legacy = cache / f".build-{dead_pid}-abc", cache / ".build-q7x_2k1p"  # legacy: before the pid
    for work in (orphan, legacy):
        (work / "rootfs" / "etc").mkdir(parents=True)
        (work / "disk.raw").write_bytes(b"x")
    (cache / "debian12-cloud-0123.qcow2").write_bytes(b"kept")  # finished images are not scratch
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = cache / f".build-{running.pid}-def"
        live.mkdir()
        with base_image._tempdir() as tmp:
            assert sorted(p.name for p in cache.iterdir()) == sorted([tmp.name, live.name, "debian12-cloud-0123.qcow2"])
    finally:
        running.kill()
        running.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root (CI runs as root)")
def test_a_mount_left_in_a_killed_builds_scratch_is_unmounted_never_emptied(cache: Path, tmp_path: Path,
                                                                             dead_pid: int) -> None:
    # mmdebstrap bind-mounts the host's /dev into its root tree; here a directory of the test's stands for it
    host_dev = tmp_path / "host-dev"
    host_dev.mkdir()
    (host_dev / "null").write_text("the host's")
    orphan = cache / f".build-{dead_pid}-abc"
    (orphan / "rootfs" / "dev").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(host_dev), str(orphan / "rootfs" / "dev")], check=True)
    try:
        with base_image._tempdir():
            pass
        assert not orphan.exists()
        assert (host_dev / "null").read_text() == "the host's"
    finally:
        subprocess.run(["umount", "--lazy", str(orphan / "rootfs" / "dev")], check=False, capture_output=True)
