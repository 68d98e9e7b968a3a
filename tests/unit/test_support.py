"""Each release's support status (security, LTS, none) from releases.yaml, in the manifest and the build's one
line, and the extended-support source (ELTS for Debian 10) with its checked key."""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path

import pytest

from goldenimage.bake import base_image
from goldenimage.core.errors import InputError
from goldenimage.model import support
from goldenimage.model.releases import matrix

DAY = datetime.date


def test_every_release_has_its_support_dates() -> None:
    for release in matrix():
        assert release.support is not None
        assert release.support.security_until < release.support.lts_until


def test_status_follows_the_dates() -> None:
    buster, bookworm, trixie = (matrix().get(n).support for n in (10, 12, 13))
    assert buster and bookworm and trixie
    today = DAY(2026, 12, 7)
    assert (buster.status(today), bookworm.status(today), trixie.status(today)) == ("none", "lts", "security")
    assert bookworm.status(DAY(2026, 6, 10)) == "security"
    assert bookworm.status(DAY(2028, 7, 1)) == "none"


def test_a_build_without_security_support_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(support.EXTENDED_ENV, raising=False)
    buster = matrix().get(10)
    assert buster.support is not None
    line = support.notice(buster.name, buster.support, DAY(2026, 12, 7))
    assert line is not None and "\n" not in line
    assert "no security support since 2024-06-30" in line and "GOLDEN_EXTENDED_SUPPORT=1 takes ELTS" in line
    assert support.notice(matrix().get(13).name, matrix().get(13).support, DAY(2026, 12, 7)) is None  # type: ignore[arg-type]
    assert buster.support.manifest(DAY(2026, 12, 7)) == {
        "status": "none", "security_until": "2022-06-30", "lts_until": "2024-06-30", "extended": None}


def fake_key(tmp_path: Path) -> Path:
    """A key file, and releases.yaml's sha256 for ELTS made to be that file's (the real key is not downloaded)."""
    key = tmp_path / "elts-archive-key.gpg"
    key.write_bytes(b"\x99\x02\x0d not a real key")
    buster = matrix().get(10)
    assert buster.support and buster.support.extended
    object.__setattr__(buster.support.extended, "keyring_sha256", hashlib.sha256(key.read_bytes()).hexdigest())
    return key


def test_the_extended_source_goes_into_the_base_with_its_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    buster = matrix().get(10)
    assert buster.support and buster.support.extended
    real = buster.support.extended.keyring_sha256
    try:
        key = fake_key(tmp_path)
        monkeypatch.setenv(support.EXTENDED_ENV, "1")
        monkeypatch.setenv(support.KEYRING_ENV, str(key))
        argv = [str(a) for a in base_image.mmdebstrap_argv(buster, buster.mirror, "cloud", tmp_path / "root")]
        assert "deb http://deb.freexian.com/extended-lts buster-lts main contrib non-free" in argv
        assert f'--setup-hook=cp {key} "$1/etc/apt/trusted.gpg.d/golden-elts.gpg"' in argv
        with_elts = base_image.base_key(buster, buster.mirror, "cloud")
        monkeypatch.delenv(support.EXTENDED_ENV)
        assert base_image.base_key(buster, buster.mirror, "cloud") != with_elts  # another base
        argv = [str(a) for a in base_image.mmdebstrap_argv(buster, buster.mirror, "cloud", tmp_path / "root")]
        assert not any("freexian" in a for a in argv)
    finally:
        object.__setattr__(buster.support.extended, "keyring_sha256", real)


def test_a_wrong_or_missing_key_is_refused_naming_the_setting(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    buster = matrix().get(10)
    monkeypatch.setenv(support.EXTENDED_ENV, "1")
    monkeypatch.delenv(support.KEYRING_ENV, raising=False)
    with pytest.raises(InputError, match="GOLDEN_EXTENDED_KEYRING: ELTS's archive key file is required"):
        base_image.mmdebstrap_argv(buster, buster.mirror, "cloud", tmp_path)
    other = tmp_path / "other.gpg"
    other.write_bytes(b"someone else's key")
    monkeypatch.setenv(support.KEYRING_ENV, str(other))
    with pytest.raises(InputError, match="is not the ELTS key releases.yaml names"):
        base_image.mmdebstrap_argv(buster, buster.mirror, "cloud", tmp_path)
    with pytest.raises(InputError, match="has no extended-support source"):
        base_image.base_key(matrix().get(12), "http://deb.debian.org/debian", "cloud")


def test_the_manifest_says_the_release_support(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from goldenimage.bake import manifest as manifests
    from goldenimage.model.profiles import resolve

    monkeypatch.setattr(manifests, "packer_version", lambda: (1, 11, 2))
    monkeypatch.setattr(manifests, "qemu_version", lambda: "QEMU emulator version 7.2")
    monkeypatch.delenv(support.EXTENDED_ENV, raising=False)
    profile = resolve("web", 10)
    base = base_image.BaseImage(tmp_path / "base.qcow2", "0" * 64, "k", 10, "mmdebstrap")
    route = manifests.Route("vm", native=(), vm=())
    manifest = manifests.Manifest("k" * 16, "cloud", profile, base, manifests.Build.now(0.0, "tcg", packer_ran=True),
                                  manifests.Guest(), route).to_json()
    assert manifest["support"]["status"] == "none" and manifest["support"]["lts_until"] == "2024-06-30"
