"""The NoCloud seed ISO: label cidata, the cloud-init files under their real names, written atomically."""

from __future__ import annotations

import io
from pathlib import Path

import pycdlib
import pytest

from goldenimage.render.seed import SEED_LABEL, write_seed_iso

USER_DATA = "#cloud-config\nssh_authorized_keys: [ssh-ed25519 AAAA test]\n"
META_DATA = "instance-id: i-test\nlocal-hostname: seedtest\n"


def read_iso(path: Path) -> tuple[str, dict[str, str]]:
    """The volume label and the Rock Ridge files of the ISO at `path`."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        label = iso.pvd.volume_identifier.decode().strip()
        files = {}
        for child in iso.list_children(rr_path="/"):
            if child.is_dot() or child.is_dotdot():
                continue
            name = child.rock_ridge.name().decode()
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path="/" + name)
            files[name] = out.getvalue().decode()
        return label, files
    finally:
        iso.close()


def test_seed_is_labelled_cidata_and_holds_user_and_meta_data(tmp_path: Path) -> None:
    seed = write_seed_iso(tmp_path / "seed.iso", USER_DATA, META_DATA)
    label, files = read_iso(seed)
    assert label == SEED_LABEL == "cidata"
    assert files == {"user-data": USER_DATA, "meta-data": META_DATA}


def test_network_config_is_added_only_when_given(tmp_path: Path) -> None:
    network = "version: 2\nethernets: {eth0: {dhcp4: true}}\n"
    _, files = read_iso(write_seed_iso(tmp_path / "seed.iso", USER_DATA, META_DATA, network))
    assert files["network-config"] == network


def test_joliet_names_are_readable_too(tmp_path: Path) -> None:
    seed = write_seed_iso(tmp_path / "seed.iso", USER_DATA, META_DATA)
    iso = pycdlib.PyCdlib()
    iso.open(str(seed))
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, joliet_path="/user-data")
    iso.close()
    assert out.getvalue().decode() == USER_DATA


def test_rewriting_replaces_the_seed_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "seed.iso"
    write_seed_iso(path, USER_DATA, META_DATA)
    write_seed_iso(path, USER_DATA, "instance-id: i-other\n")
    assert read_iso(path)[1]["meta-data"] == "instance-id: i-other\n"
    assert [p.name for p in tmp_path.iterdir()] == ["seed.iso"]


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_write(self: pycdlib.PyCdlib, fp: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pycdlib.PyCdlib, "write_fp", broken_write)
    with pytest.raises(OSError):
        write_seed_iso(tmp_path / "seed.iso", USER_DATA, META_DATA)
    assert list(tmp_path.iterdir()) == []
