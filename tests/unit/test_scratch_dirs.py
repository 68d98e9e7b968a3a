"""Private temporary directories (a verify's throwaway SSH key, an apply's host data with the cluster's
passwords, a Galera TLS key): removed when the command ends, and by the next command of the same kind when one
was killed outright, so that no secret stays behind in $TMPDIR."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from goldenimage.core.fs import scratch


def test_a_scratch_dir_is_private_and_gone_after_the_block_even_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), scratch("golden-verify", tmp_path) as tmp:
        assert tmp.name.startswith(f"golden-verify-{os.getpid()}-")
        assert stat.S_IMODE(tmp.stat().st_mode) == 0o700
        (tmp / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
        raise RuntimeError("the guest did not boot")
    assert not list(tmp_path.iterdir())


def test_a_killed_commands_dir_is_removed_by_the_next_one_of_its_kind_only(tmp_path: Path, dead_pid: int) -> None:
    killed = tmp_path / f"golden-apply-{dead_pid}-x1"
    legacy = tmp_path / "golden-apply-k2jd8_qz"  # named by a version before the process id was in the name
    other_kind = tmp_path / f"golden-tls-{dead_pid}-x2"  # another command's: its own next run removes it
    for work in (killed, legacy, other_kind):
        work.mkdir()
        (work / "host.json").write_text('{"sql_root_password": "s3cret"}')
    unrelated = tmp_path / "golden-applyx-1-y"  # a prefix that only begins the same way
    unrelated.mkdir()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f"golden-apply-{running.pid}-x3"  # a run still going: left alone
        live.mkdir()
        with scratch("golden-apply", tmp_path) as tmp:
            assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
                [tmp.name, live.name, other_kind.name, unrelated.name])
    finally:
        running.kill()
        running.wait()


def test_apply_removes_an_ssh_control_directory_a_killed_apply_left(tmp_path: Path, dead_pid: int,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from goldenimage.apply.target import parse_target
    from goldenimage.apply.transport import SSHTransport

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    left = tmp_path / f"golden-ssh-{dead_pid}-k2jd8_qz"
    left.mkdir()
    (left / "c").write_text("")  # the ControlMaster socket's path
    with SSHTransport(parse_target("root@127.0.0.1:2222")) as transport:
        assert transport._control_dir.parent == tmp_path and not left.exists()
        assert transport._control_dir.name.startswith(f"golden-ssh-{os.getpid()}-")
    assert not list(tmp_path.iterdir())
