"""Every package a profile installs exists, under that name, in its release's Packages index on the mirror.

This reads the mirror (Debian's, or $GOLDEN_MIRROR), a few MB per release; it skips when the mirror cannot be
reached. Archived releases (Debian 10, on archive.debian.org) are left out: that archive is not reachable where
these tests run.
"""

from __future__ import annotations

import lzma
import re
import urllib.error
import urllib.request

import pytest

from goldenimage.bake.base import base_packages, resolve_mirror
from goldenimage.model.profiles import list_profiles, resolve, supported_releases
from goldenimage.model.releases import Release, matrix
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.mirror

CURRENT = [r.number for r in matrix() if not r.archived]
EXAMPLE_PROFILES = [str(p) for p in sorted(EXAMPLES.glob("*.yaml")) if not p.name.startswith("cluster")]
OVERLAYS = sorted((EXAMPLES / "customers").glob("*.yaml"))


def _package_names(release: Release) -> set[str]:
    url = f"{resolve_mirror(release)}/dists/{release.codename}/main/binary-amd64/Packages.xz"
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            data = lzma.decompress(response.read())
    except (urllib.error.URLError, TimeoutError) as exc:
        pytest.skip(f"the Debian mirror is not reachable ({url}): {exc}")
    return {m.decode() for m in re.findall(rb"^Package: (\S+)$", data, re.M)}


@pytest.fixture(scope="module")
def indexes() -> dict[int, set[str]]:
    return {}


def _index(indexes: dict[int, set[str]], release: Release) -> set[str]:
    if release.number not in indexes:
        indexes[release.number] = _package_names(release)
    return indexes[release.number]


@pytest.mark.parametrize("debian", CURRENT)
def test_every_profile_installs_packages_its_release_has(debian, indexes):
    release = matrix().get(debian)
    names = _index(indexes, release)
    assert len(names) > 10000  # a real index was read
    missing = []
    for profile_name in list_profiles() + EXAMPLE_PROFILES:
        if debian not in supported_releases(profile_name):
            continue
        for overlays in ((), tuple(OVERLAYS)):
            profile = resolve(profile_name, debian, overlays)
            wanted = {*profile.packages, *profile.base_packages, *base_packages(release)}
            missing += [f"{profile.name} (overlays {len(overlays)}): {p}" for p in sorted(wanted - names)]
    assert not missing, f"not in Debian {debian}'s main:\n" + "\n".join(missing)


def test_the_check_can_fail(indexes):
    # ntp left trixie: the hardened role's Debian 12 name would not install on 13.
    trixie = _index(indexes, matrix().get(13))
    assert "ntp" not in trixie and "ntpsec" in trixie
    assert "ntp" in _index(indexes, matrix().get(12))
