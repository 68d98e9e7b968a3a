"""`golden render --packer-version X.Y`: the template is for the Packer that will run it, which need not be
installed here. Default: the installed Packer, else the newest supported (the plugin form)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from goldenimage.bake import packer_cli
from goldenimage.core.errors import InputError
from tests.conftest import ROOT


def _golden_without_packer(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """golden with a PATH holding only ssh-keygen (the build key): no packer to ask."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    keygen = shutil.which("ssh-keygen")
    assert keygen
    if not (bin_dir / "ssh-keygen").exists():
        (bin_dir / "ssh-keygen").symlink_to(keygen)
    env = {**os.environ, "PATH": str(bin_dir)}
    return subprocess.run([sys.executable, "-m", "goldenimage.cli", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=300)


def _template(out: Path) -> dict:
    (path,) = out.glob("*.pkr.json")
    return json.loads(path.read_text())


def test_proxmox_for_packer_1_11_declares_its_plugin_and_uses_a_token_without_local_packer(tmp_path):
    out = tmp_path / "r"
    proc = _golden_without_packer(tmp_path, "render", "web", "--target", "proxmox", "--packer-version", "1.11",
                                  "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    template = _template(out)
    plugin = template["packer"]["required_plugins"]["proxmox"]
    assert plugin["source"] == "github.com/hashicorp/proxmox"
    source = template["source"]["proxmox-clone"]["golden"]
    # packer-plugin-proxmox: `token` with username USER@REALM!TOKENID instead of a password.
    assert source["token"] == "${var.proxmox_token_secret}" and "password" not in source
    assert source["username"] == "${var.proxmox_token_id}"
    assert "USER@REALM!TOKENID" in template["variable"]["proxmox_token_id"]["description"]
    assert "proxmox_password" not in json.loads((out / "web-debian12-proxmox.pkrvars.json").read_text())


def test_packer_1_6_gets_what_its_bundled_builders_take(tmp_path):
    out = tmp_path / "r"
    proc = _golden_without_packer(tmp_path, "render", "web", "--target", "proxmox", "--packer-version", "1.6",
                                  "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    template = _template(out)
    assert "packer" not in template
    assert template["source"]["proxmox-clone"]["golden"]["password"] == "${var.proxmox_password}"


def test_without_packer_the_default_is_the_newest_supported(tmp_path):
    out = tmp_path / "r"
    proc = _golden_without_packer(tmp_path, "render", "web", "--target", "openstack", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "openstack" in _template(out)["packer"]["required_plugins"]


@pytest.mark.parametrize("bad", ["1", "one.two", "1.5", "1.11.x"])
def test_a_bad_packer_version_exits_2_and_writes_nothing(tmp_path, bad):
    out = tmp_path / "r"
    proc = _golden_without_packer(tmp_path, "render", "web", "--packer-version", bad, "--out", str(out))
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0].startswith("golden: error: --packer-version: ")
    assert not out.exists()


def test_the_default_is_the_installed_packer(monkeypatch):
    monkeypatch.setattr(packer_cli.shutil, "which", lambda name: "/usr/bin/packer")
    monkeypatch.setattr(packer_cli, "packer_version", lambda: (1, 6, 6))
    assert packer_cli.render_packer_version() == (1, 6, 6)
    assert packer_cli.render_packer_version("1.11") == (1, 11, 0)
    monkeypatch.setattr(packer_cli.shutil, "which", lambda name: None)
    assert packer_cli.render_packer_version() == packer_cli.NEWEST_PACKER >= packer_cli.PLUGINS_FROM


def test_parse_refuses_what_is_not_a_version():
    assert packer_cli.parse_packer_version("v1.9.4") == (1, 9, 4)
    with pytest.raises(InputError):
        packer_cli.parse_packer_version("latest")
