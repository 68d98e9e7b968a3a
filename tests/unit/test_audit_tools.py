"""The tools disk: the host's oscap (with its own loader and libraries) and Lynis, runnable from a copy.

The disk's files are copied out with pycdlib and run here the way the guest runs them from the mount.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pycdlib
import pytest

from goldenimage.audit import guest_tools
from goldenimage.audit.content import PROFILE_ID, content_for
from goldenimage.audit.guest_tools import tools_disk
from goldenimage.audit.oscap import EVAL_OK, eval_argv, parse_results
from goldenimage.core.run import run
from goldenimage.model.releases import matrix

HOST_RELEASE = int(Path("/etc/debian_version").read_text().split(".")[0])


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    cache = tmp_path_factory.mktemp("tools-cache")
    content = content_for(matrix().get(HOST_RELEASE), cache=cache)
    return content, tools_disk(content, cache=cache)


@pytest.fixture(scope="module")
def extracted(disk, tmp_path_factory):
    """The disk's tree as the guest sees it under the mount point: names, modes, owners from Rock Ridge."""
    _, tools = disk
    root = tmp_path_factory.mktemp("tools")
    iso = pycdlib.PyCdlib()
    iso.open(str(tools.iso))
    owners = {}
    try:
        for dirpath, _, files in iso.walk(rr_path="/"):
            (root / dirpath.lstrip("/")).mkdir(parents=True, exist_ok=True)
            for name in files:
                rr = f"{dirpath.rstrip('/')}/{name}"
                target = root / rr.lstrip("/")
                iso.get_file_from_iso(str(target), rr_path=rr)
                px = iso.get_record(rr_path=rr).rock_ridge.dr_entries.px_record
                os.chmod(target, stat.S_IMODE(px.posix_file_mode))
                owners[rr] = (px.posix_user_id, px.posix_group_id)
    finally:
        iso.close()
    return root, owners


def test_the_disk_holds_oscap_its_loader_lynis_and_the_datastream(disk, extracted):
    content, tools = disk
    root, owners = extracted
    assert (root / "oscap/bin/oscap").is_file() and os.access(root / "oscap/bin/oscap", os.X_OK)
    assert (root / "oscap/lib/ld-linux-x86-64.so.2").is_file()
    assert any(p.name.startswith("libc.so") for p in (root / "oscap/lib").iterdir())
    assert (root / "lynis/lynis").is_file() and (root / "lynis/include/consts").is_file()
    assert (root / "lynis/default.prf").is_file() and any((root / "lynis/plugins").iterdir())
    assert (root / "content" / content.path.name).read_bytes() == content.path.read_bytes()
    # Lynis run as root refuses files it does not own: everything on the disk belongs to root
    assert set(owners.values()) == {(0, 0)}
    assert tools.datastream == f"{guest_tools.GUEST_MOUNT}/content/{content.path.name}"


def test_the_disk_is_reused_until_something_in_it_changes(disk, tmp_path):
    content, tools = disk
    again = tools_disk(content, cache=tools.iso.parent.parent.parent)
    assert again.iso == tools.iso
    other = tools_disk(content_for(matrix().get(13), cache=tmp_path), cache=tmp_path)
    assert other.iso != tools.iso


def test_the_bundled_oscap_runs_on_its_own_libraries_and_scores_like_the_hosts(disk, extracted, tmp_path):
    content, tools = disk
    root, _ = extracted
    # the guest's command line, with the mount point replaced by where the disk was copied
    bundled = [a.replace(guest_tools.GUEST_MOUNT, str(root)) for a in tools.oscap_argv]
    version = run([*bundled, "--version"]).stdout
    assert version.startswith("OpenSCAP command line tool (oscap)")
    # every library comes from the bundle, none from this system: the same holds in any guest
    loaded = run([*bundled[:-1], "--list", bundled[-1]]).stdout
    paths = re.findall(r"=> (/\S+)", loaded)
    assert paths and all(Path(p).is_relative_to(root / "oscap/lib") for p in paths), loaded
    ours, hosts = tmp_path / "bundled.xml", tmp_path / "host.xml"
    for argv in (eval_argv(str(root / "content" / content.path.name), PROFILE_ID, str(ours), oscap=bundled,
                           validate=False),
                 eval_argv(str(content.path), PROFILE_ID, str(hosts))):
        assert run(argv, check=False, timeout=600).returncode in EVAL_OK
    assert [(r.id, r.result) for r in parse_results(ours).rules] == [(r.id, r.result) for r in
                                                                    parse_results(hosts).rules]


def test_the_mount_command_mounts_read_only_by_label():
    cmd = guest_tools.mount_command("debian")
    assert f"/dev/disk/by-label/{guest_tools.LABEL}" in cmd and "-o ro" in cmd
    assert cmd.index("mountpoint -q") < cmd.index("mount -o ro")  # a second call does not mount twice
