"""apply-user-data.sh, the Proxmox bake's first step: cloud-init applies the profile's user-data even while
the clone carries Proxmox's own NoCloud `cidata` drive, and the clones read their drive again afterwards.

The script runs against a fake root with `sudo` passed through and a `cloud-init` that, for `init --local`,
runs the installed cloud-init's real config merge (cloud.cfg.d) and DataSourceNoCloud, with device discovery
answering a cidata seed the way a Proxmox clone's drive would be found."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from goldenimage.render.packer_template import script_text

SYSTEM_PYTHON = "/usr/bin/python3"
PROFILE_USER_DATA = "#cloud-config\nwrite_files:\n- path: /etc/golden-profile\n  content: web\n"
PROXMOX_USER_DATA = "#cloud-config\nhostname: clone\nmanage_etc_hosts: true\npackage_upgrade: true\n"

FAKE_CLOUD_INIT = r'''#!/usr/bin/python3
import os, sys
from unittest import mock
root, cidata = os.environ["GOLDEN_ROOT"], os.environ["FAKE_CIDATA"]
pin = os.path.join(root, "etc/cloud/cloud.cfg.d/99-golden-bake-seed.cfg")
with open(os.path.join(root, "calls"), "a") as f:
    f.write("%s pin=%s\n" % (" ".join(sys.argv[1:]), os.path.exists(pin)))
if sys.argv[1:] != ["init", "--local"]:
    sys.exit(0)
from cloudinit import helpers, util
from cloudinit.sources import DataSourceNoCloud as nc
cfg = util.read_conf_with_confd(os.path.join(root, "etc/cloud/cloud.cfg"))
if "NoCloud" not in cfg.get("datasource_list", ["NoCloud"]):
    sys.exit("NoCloud not in datasource_list")
paths = helpers.Paths({"cloud_dir": os.path.join(root, "var/lib/cloud"), "run_dir": os.path.join(root, "run")})
def find_devs_with(criteria=None, **kw):
    return ["/dev/sr0"] if criteria in ("TYPE=iso9660", "LABEL=CIDATA", "LABEL=cidata") else []
def mount_cb(dev, callback, data=None, **kw):
    return callback(cidata, data)
with mock.patch.object(util, "find_devs_with", find_devs_with), mock.patch.object(util, "mount_cb", mount_cb), \
        mock.patch.object(nc.dmi, "read_dmi_data", lambda key: None), \
        mock.patch.object(util, "get_cmdline", lambda: "root=/dev/sda1 ro"):
    ds = nc.DataSourceNoCloud(cfg, None, paths)
    if not ds.get_data():
        sys.exit("no datasource")
with open(os.path.join(root, "chosen-user-data"), "wb") as f:
    f.write(ds.userdata_raw if isinstance(ds.userdata_raw, bytes) else ds.userdata_raw.encode())
with open(os.path.join(root, "chosen-seed"), "w") as f:
    f.write(ds.seed)
'''


def _has_cloudinit() -> bool:
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    return subprocess.run([SYSTEM_PYTHON, "-c", "import cloudinit.sources.DataSourceNoCloud"],
                          capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not _has_cloudinit(), reason="needs Debian's cloud-init (scripts/install-deps)")


def _run(tmp_path: Path, script: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    root = tmp_path / "root"
    (root / "tmp").mkdir(parents=True)
    (root / "etc/cloud").mkdir(parents=True)
    # The clone's image: Debian's cloud.cfg lists NoCloud among others.
    (root / "etc/cloud/cloud.cfg").write_text("datasource_list: [NoCloud, ConfigDrive, OpenStack, None]\n")
    (root / "tmp/golden-user-data").write_text(PROFILE_USER_DATA)
    cidata = tmp_path / "cidata"  # Proxmox's drive as qemu-server writes it for a Linux guest
    cidata.mkdir()
    (cidata / "user-data").write_text(PROXMOX_USER_DATA)
    (cidata / "meta-data").write_text("instance-id: 4f0a6d3c1e2b\n")
    (cidata / "network-config").write_text("version: 1\nconfig: []\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    (bin_dir / "cloud-init").write_text(FAKE_CLOUD_INIT)
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    (tmp_path / "apply-user-data.sh").write_text(script)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "GOLDEN_ROOT": str(root), "FAKE_CIDATA": str(cidata)}
    done = subprocess.run(["sh", str(tmp_path / "apply-user-data.sh")], env=env, capture_output=True, text=True,
                          timeout=60)
    return root, done


def test_profile_user_data_wins_over_an_attached_proxmox_cidata_drive(tmp_path: Path) -> None:
    root, done = _run(tmp_path, script_text("apply-user-data.sh"))
    assert done.returncode == 0, done.stderr
    assert (root / "chosen-user-data").read_text() == PROFILE_USER_DATA
    assert (root / "chosen-seed").read_text() == str(root / "var/lib/cloud/seed/nocloud")


def test_the_datasource_pin_holds_for_every_stage_and_is_gone_afterwards(tmp_path: Path) -> None:
    root, done = _run(tmp_path, script_text("apply-user-data.sh"))
    assert done.returncode == 0, done.stderr
    calls = (root / "calls").read_text().splitlines()
    # the clone's own first boot ends before anything is cleaned or run again
    assert calls == ["status --wait pin=False", "clean --logs pin=True", "init --local pin=True", "init pin=True",
                     "modules --mode=config pin=True", "modules --mode=final pin=True"]
    # The template's clones must read their own Proxmox drive.
    assert not (root / "etc/cloud/cloud.cfg.d/99-golden-bake-seed.cfg").exists()
    assert not (root / "tmp/golden-user-data").exists()


def test_the_pin_is_removed_when_cloud_init_fails(tmp_path: Path) -> None:
    script = script_text("apply-user-data.sh").replace("sudo cloud-init init --local", "false")
    root, done = _run(tmp_path, script)
    assert done.returncode != 0
    assert not (root / "etc/cloud/cloud.cfg.d/99-golden-bake-seed.cfg").exists()


def test_without_the_pin_the_drive_replaces_the_profile(tmp_path: Path) -> None:
    """The finding itself, shown on cloud-init's own code: the device seed is merged over the seed directory."""
    script = script_text("apply-user-data.sh").replace("    fs_label: null\n", "")
    root, done = _run(tmp_path, script)
    assert done.returncode == 0, done.stderr
    assert (root / "chosen-user-data").read_text() == PROXMOX_USER_DATA
