"""`golden backup restore-files`'s work on a web or nfs host, against real restic and nanio (the S3 server that
verifies Signature V4) on 127.0.0.1: the same agent functions and command line the host runs, not a copy.

A file deleted after a files backup comes back as of before the deletion, with its owner, mode and time; a
damaged one likewise, the damaged one archived; --to leaves the live tree alone; a path outside the backed-up
folders, or one through a symbolic link, is refused in one line; what restic restored is checked against the
snapshot; the repository key appears in no log line or output."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from goldenimage.apply.backup import restore_files
from goldenimage.core.errors import GoldenError
from tests.integration.test_backup_restore_mariadb import BUCKET, LocalAgent
from tests.unit import firstboot_fake  # noqa: F401  (puts firstboot/ on sys.path)

from golden_firstboot import backup_jobs, backup_restore_files  # isort: skip
from golden_firstboot.steps import Context  # isort: skip
from golden_firstboot.system import FirstbootError  # isort: skip

OLD_TIME = 1_700_000_000  # 2023-11-14: a time the restore must bring back, not the time of the restore


@pytest.fixture
def files_host(tmp_path: Path, sigv4_s3) -> Iterator[dict[str, Any]]:
    if not shutil.which("restic"):
        pytest.fail("restic is missing: scripts/install-deps installs it")
    docroot = tmp_path / "www"
    (docroot / "uploads").mkdir(parents=True)
    for name, text in (("index.html", "<p>home</p>\n"), ("uploads/logo[1].png", "PNG-logo\n"),
                       ("uploads/terms.pdf", "PDF-terms\n")):
        (docroot / name).write_text(text)
    os.chown(docroot / "uploads/logo[1].png", 1234, 2345)
    os.chmod(docroot / "uploads/logo[1].png", 0o640)
    os.utime(docroot / "uploads/logo[1].png", (OLD_TIME, OLD_TIME))
    host = {"hostname": "web1", "backup": {"init": True,
            "repository": f"s3:{sigv4_s3.endpoint}/{BUCKET}/{tmp_path.name}",
            "password": "files-" + os.urandom(8).hex(),
            "access_key_id": sigv4_s3.access_key, "secret_access_key": sigv4_s3.secret_key,
            "files": {"paths": [str(docroot)], "max_age": {"files": 3600}}}}
    lines: list[str] = []
    ctx = Context({"roles": ["web"]}, host, root=str(tmp_path / "root"), logger=lines.append)
    yield {"ctx": ctx, "docroot": docroot, "tmp": tmp_path, "lines": lines}


def backup_then_tick(ctx: Context) -> tuple[str, float]:
    """A files backup, and a second after which the next change happens (snapshot times are to the second)."""
    snapshot = backup_jobs.run(ctx, "files")
    time.sleep(1.1)
    at = time.time()
    time.sleep(1.1)
    return snapshot, at


def tree(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mode,
                                         p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def test_a_deleted_file_comes_back_as_of_before_the_deletion_with_its_owner_mode_and_time(files_host):
    ctx, docroot = files_host["ctx"], files_host["docroot"]
    logo = docroot / "uploads/logo[1].png"
    first, before = backup_then_tick(ctx)
    logo.unlink()
    backup_jobs.run(ctx, "files")  # a later backup without it: the restore reads the one before
    report = restore_files(LocalAgent(ctx), str(logo), datetime.fromtimestamp(before, UTC))  # type: ignore[arg-type]
    assert logo.read_text() == "PNG-logo\n"
    info = logo.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777, int(info.st_mtime)) == (1234, 2345, 0o640, OLD_TIME)
    assert (report.snapshot, report.files, report.size, report.archived) == (first, 1, len("PNG-logo\n"), None)
    assert report.lines()[1] == "  nothing was there to replace"
    # Nothing left beside it: no staging folder, no dump of the snapshot.
    assert sorted(p.name for p in logo.parent.iterdir()) == ["logo[1].png", "terms.pdf"]


def test_a_damaged_folder_comes_back_and_the_damaged_one_is_archived(files_host):
    ctx, docroot = files_host["ctx"], files_host["docroot"]
    uploads = docroot / "uploads"
    wanted = tree(uploads)
    first, _ = backup_then_tick(ctx)
    (uploads / "terms.pdf").write_text("DEFACED\n")
    (uploads / "logo[1].png").unlink()
    (uploads / "shell.php").write_text("<?php system($_GET['c']);\n")
    report = backup_restore_files.restore_path(ctx, time.time(), str(uploads))
    assert tree(uploads) == wanted
    archived = Path(report["archived"])
    stamp = archived.relative_to(ctx.path(backup_restore_files.FILES_ARCHIVE)).parts[0]
    assert str(archived) == f"{ctx.path(backup_restore_files.FILES_ARCHIVE)}/{stamp}{uploads}"
    assert (archived / "terms.pdf").read_text() == "DEFACED\n" and (archived / "shell.php").exists()
    assert (report["snapshot"], report["files"], report["entries"]) == (first, 2, 3)
    assert report["bytes"] == len("PNG-logo\n") + len("PDF-terms\n")
    assert sorted(p.name for p in docroot.iterdir()) == ["index.html", "uploads"]

    # A damaged single file, through the agent's command line: the damaged one archived, its report's line.
    (docroot / "index.html").write_text("<p>hacked</p>\n")
    report_file = restore_files(LocalAgent(ctx), str(docroot / "index.html"), datetime.now(UTC))  # type: ignore[arg-type]
    assert (docroot / "index.html").read_text() == "<p>home</p>\n"
    assert report_file.archived and Path(report_file.archived).read_text() == "<p>hacked</p>\n"
    assert report_file.lines()[1] == f"  the version it replaced: {report_file.archived} (on the host)"


def test_to_restores_under_a_folder_and_leaves_the_live_tree_alone(files_host):
    ctx, docroot, tmp = files_host["ctx"], files_host["docroot"], files_host["tmp"]
    backup_then_tick(ctx)
    (docroot / "index.html").write_text("<p>new home</p>\n")
    live = tree(docroot)
    out = tmp / "restored"
    report = restore_files(LocalAgent(ctx), str(docroot), datetime.now(UTC), str(out))  # type: ignore[arg-type]
    assert tree(docroot) == live
    assert Path(report.restored) == out / str(docroot).lstrip("/")
    assert (Path(report.restored) / "index.html").read_text() == "<p>home</p>\n"
    assert report.files == 3 and report.archived is None
    assert not Path(ctx.path(backup_restore_files.FILES_ARCHIVE)).exists()
    with pytest.raises(FirstbootError, match="not an empty folder"):
        backup_restore_files.restore_path(ctx, time.time(), str(docroot), str(out))
    (tmp / "sneaky").symlink_to(docroot)
    for into in (docroot / "x", tmp / "sneaky/x", tmp):
        with pytest.raises(FirstbootError, match="inside .or above. a backed-up folder"):
            backup_restore_files.restore_path(ctx, time.time(), str(docroot / "index.html"), str(into))
    assert tree(docroot) == live


def test_a_restore_that_differs_from_the_snapshot_is_caught(files_host):
    ctx, docroot, tmp = files_host["ctx"], files_host["docroot"], files_host["tmp"]
    backup_then_tick(ctx)
    report = backup_restore_files.restore_path(ctx, time.time(), str(docroot), str(tmp / "out"))
    snap = backup_restore_files.find_snapshot(ctx, time.time(), str(docroot), None)
    restored = Path(report["restored"])
    kept = (restored / "uploads/terms.pdf").stat()
    (restored / "uploads/terms.pdf").write_text("PDF-tampr\n")  # same size, other content
    with pytest.raises(FirstbootError, match="uploads/terms.pdf differs from the snapshot's content"):
        backup_restore_files.verify(ctx, snap, str(docroot), str(restored), str(tmp / "dump"))
    (restored / "uploads/terms.pdf").write_text("PDF-terms\n")
    os.utime(restored / "uploads/terms.pdf", ns=(kept.st_atime_ns, kept.st_mtime_ns))
    os.chmod(restored / "index.html", 0o600)
    with pytest.raises(FirstbootError, match="index.html differs from the snapshot: mode 600, not 644"):
        backup_restore_files.verify(ctx, snap, str(docroot), str(restored), str(tmp / "dump"))
    os.chmod(restored / "index.html", 0o644)
    (restored / "extra").write_text("x")
    with pytest.raises(FirstbootError, match="entries"):
        backup_restore_files.verify(ctx, snap, str(docroot), str(restored), str(tmp / "dump"))


def test_paths_outside_the_backed_up_folders_or_through_a_link_are_refused_in_one_line(files_host):
    ctx, docroot, tmp = files_host["ctx"], files_host["docroot"], files_host["tmp"]
    backup_then_tick(ctx)
    outside = tmp / "outside"
    outside.mkdir()
    (docroot / "escape").symlink_to(outside)
    refused = {
        "/etc/passwd": "not inside this host's backed-up folders",
        str(docroot) + "/../etc": "not a plain path",
        str(docroot) + "//index.html": "not a plain path",
        str(docroot) + "/": "not a plain path",
        "www/index.html": "not an absolute path",
        str(docroot) + "/index.html\n/etc/passwd": "control character",
        str(docroot) + "-other/x": "not inside this host's backed-up folders",
        str(docroot / "escape/passwd"): "is a symbolic link or not a folder",
        str(docroot / "gone/index.html"): "does not exist on this host",
    }
    for path, reason in refused.items():
        with pytest.raises(FirstbootError, match=reason) as failed:
            backup_restore_files.restore_path(ctx, time.time(), path)
        assert "\n" not in failed.value.message.replace(path, "")
    assert list(outside.iterdir()) == []
    with pytest.raises(FirstbootError, match="no files backup of web1 holds .*/www/nothing.html at or before"):
        backup_restore_files.restore_path(ctx, time.time(), str(docroot / "nothing.html"))
    # Through the agent's command line: the one-line reason, and the key nowhere in what it printed or logged.
    agent = LocalAgent(ctx)
    with pytest.raises(GoldenError, match=r"^restoring /etc/passwd failed: --path /etc/passwd: not inside"):
        restore_files(agent, "/etc/passwd", datetime.now(UTC))  # type: ignore[arg-type]
    seen: list[str] = []
    real_run = agent.run

    def recording(argv: list[str], **kwargs: Any) -> Any:
        proc = real_run(argv, **kwargs)
        seen.extend([" ".join(argv), proc.stdout, proc.stderr])
        return proc

    agent.run = recording  # type: ignore[method-assign]
    restore_files(agent, str(docroot / "index.html"), datetime.now(UTC), str(tmp / "copy"))  # type: ignore[arg-type]
    password, secret = ctx.get("backup.password"), ctx.get("backup.secret_access_key")
    assert seen and not [text for text in seen + files_host["lines"] if password in text or secret in text]
