"""The store's work directories: removed when the bake ends, and by the next bake when a bake was killed
outright (no `finally` ran), never while their bake still runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from goldenimage.bake import store


def test_a_work_directory_is_removed_when_the_bake_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), store.staging(tmp_path, prefix="k1") as work:
        (work / "disk.raw").write_bytes(b"x")
        assert work.name.startswith(f".partial-{os.getpid()}-k1-")
        raise RuntimeError("boom")
    assert not list(tmp_path.iterdir())


def test_the_next_bake_removes_what_a_killed_bake_left(tmp_path: Path, dead_pid: int) -> None:
    orphan = tmp_path / f".partial-{dead_pid}-k1-abc"
    legacy = tmp_path / ".partial-af622812cbe5c874-gjx0vz5b"  # named before the process id was in the name
    for work in (orphan, legacy):
        (work / "root").mkdir(parents=True)
        (work / "disk.raw").write_bytes(b"x")
    with store.staging(tmp_path, prefix="k2") as work:
        assert sorted(p.name for p in tmp_path.iterdir()) == [work.name]
    assert not list(tmp_path.iterdir())


def test_a_running_bakes_work_directory_is_left_alone(tmp_path: Path) -> None:
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".partial-{running.pid}-k1-abc"
        live.mkdir()
        with store.staging(tmp_path, prefix="k2"):
            assert live.is_dir()
        assert live.is_dir()
    finally:
        running.kill()
        running.wait()
    store.sweep_orphans(tmp_path)
    assert not live.exists()
