"""fetch_base: an official cloud image is checked against its checksum before it enters the cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from goldenimage.bake import base_image as base
from goldenimage.bake.base_image import BaseImage, fetch_base
from goldenimage.bake.plan import get_base
from goldenimage.core.errors import GoldenError, InputError
from goldenimage.model.disk_layout import DiskLayout
from goldenimage.model.profiles import resolve
from goldenimage.model.releases import matrix

CONTENT = b"QFI\xfb" + b"not really a disk image, but bytes to hash" * 1000


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GOLDEN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def image_url(tmp_path: Path) -> str:
    path = tmp_path / "debian-12-genericcloud-amd64.qcow2"
    path.write_bytes(CONTENT)
    return path.as_uri()


def cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "base").iterdir() if not p.name.endswith(".lock"))


@pytest.mark.parametrize("algo", ["sha256", "sha512"])
def test_good_checksum_is_cached_with_its_sha256(cache: Path, image_url: str, algo: str) -> None:
    checksum = f"{algo}:{hashlib.new(algo, CONTENT).hexdigest()}"
    image = fetch_base(image_url, checksum, matrix().get(12))
    assert isinstance(image, BaseImage)
    assert image.path.parent == cache / "base"
    assert image.path.read_bytes() == CONTENT
    assert image.sha256 == hashlib.sha256(CONTENT).hexdigest()
    assert image.source == image_url and image.release == 12
    assert cache_files(cache) == [image.path.name, image.path.name + ".sha256"]


def test_cached_image_is_not_downloaded_again(cache: Path, image_url: str) -> None:
    checksum = "sha256:" + hashlib.sha256(CONTENT).hexdigest()
    first = fetch_base(image_url, checksum, matrix().get(12))
    Path(image_url.removeprefix("file://")).unlink()
    assert fetch_base(image_url, checksum, matrix().get(12)) == first


def test_bad_checksum_is_one_clear_error_and_nothing_is_cached(cache: Path, image_url: str) -> None:
    wrong = "sha256:" + "0" * 64
    with pytest.raises(GoldenError) as err:
        fetch_base(image_url, wrong, matrix().get(12))
    assert "checksum mismatch" in str(err.value) and "\n" not in str(err.value)
    assert cache_files(cache) == []


@pytest.mark.parametrize("checksum", ["md5:abc", "sha256:xyz", "0" * 64, "sha512:" + "0" * 64])
def test_malformed_checksum_is_rejected(cache: Path, image_url: str, checksum: str) -> None:
    with pytest.raises(InputError):
        fetch_base(image_url, checksum, matrix().get(12))


def test_unreadable_url_is_a_clear_error(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(GoldenError, match="cannot download"):
        fetch_base((tmp_path / "missing.qcow2").as_uri(), "sha256:" + "0" * 64, matrix().get(12))
    assert cache_files(cache) == []


def test_base_key_changes_with_mirror_and_flavour() -> None:
    release = matrix().get(12)
    key = base.base_key(release, "http://deb.debian.org/debian", "cloud")
    assert key == base.base_key(release, "http://deb.debian.org/debian/", "cloud")
    assert key != base.base_key(release, "http://mirror.example/debian", "cloud")
    assert key != base.base_key(release, "http://deb.debian.org/debian", "generic")
    assert key != base.base_key(matrix().get(13), "http://deb.debian.org/debian", "cloud")


def test_base_key_carries_a_profiles_base_packages_in_any_order() -> None:
    release = matrix().get(12)
    plain = base.base_key(release, "http://deb.debian.org/debian", "cloud")
    extra = base.base_key(release, "http://deb.debian.org/debian", "cloud", extra_packages=("aide", "auditd"))
    assert extra != plain
    assert extra == base.base_key(release, "http://deb.debian.org/debian", "cloud", extra_packages=("auditd", "aide"))
    assert plain == base.base_key(release, "http://deb.debian.org/debian", "cloud", extra_packages=())


def test_hardened_profiles_put_their_tools_in_the_base_and_still_install_them_on_official_images() -> None:
    profile = resolve("banking-hardened", 12)
    assert {"aide-common", "auditd", "ntp"} <= set(profile.base_packages)
    assert set(profile.base_packages) <= set(profile.packages)  # the bake installs them on any base
    assert resolve("web", 12).base_packages == ()


def test_mirror_setting_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    release = matrix().get(12)
    monkeypatch.delenv("GOLDEN_MIRROR", raising=False)
    assert base.resolve_mirror(release) == release.mirror
    monkeypatch.setenv("GOLDEN_MIRROR", "http://127.0.0.1:3142/debian")
    assert base.resolve_mirror(release) == "http://127.0.0.1:3142/debian"
    assert base.resolve_mirror(release, "http://other/debian") == "http://other/debian"


def test_base_packages_start_with_the_flavours_kernel() -> None:
    release = matrix().get(12)
    assert base.base_packages(release, "generic")[0] == "linux-image-amd64"
    wanted = {"cloud-init", "openssh-server", "cloud-guest-utils", "ifupdown"}
    assert wanted <= set(base.base_packages(release))


def test_layout_changes_the_key_and_the_name_but_single_keeps_both() -> None:
    release = matrix().get(12)
    mirror = "http://deb.debian.org/debian"
    single = base.base_key(release, mirror, "cloud")
    assert base.base_key(release, mirror, "cloud", DiskLayout.SINGLE) == single
    separate = base.base_key(release, mirror, "cloud", DiskLayout.SEPARATE_MOUNTS)
    assert separate != single
    assert base.base_file_name(release, "cloud", DiskLayout.SINGLE, single) == f"debian12-cloud-{single}.qcow2"
    name = base.base_file_name(release, "cloud", DiskLayout.SEPARATE_MOUNTS, separate)
    assert name == f"debian12-cloud-separate-mounts-{separate}.qcow2"


def test_an_official_image_cannot_give_separate_mounts(cache: Path, image_url: str) -> None:
    profile = resolve("banking-hardened", 12)
    with pytest.raises(InputError, match="official cloud image .* has one partition") as e:
        get_base(profile, base_url=image_url, base_checksum="sha256:" + hashlib.sha256(CONTENT).hexdigest())
    assert "leave out --base-url" in (e.value.hint or "")
    assert not (cache / "base").exists() or cache_files(cache) == []
