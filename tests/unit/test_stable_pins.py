"""Only fixes into stable, against a real apt repository the test builds with reprepro and serves on 127.0.0.1:
`alpha` has a newer version in the main suite, `beta` one in the security suite; only beta may move."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from goldenimage.bake import stable_pins
from goldenimage.bake.stable_pins import StableChannelError, compare_versions
from goldenimage.core.run import run
from goldenimage.model.releases import Release, matrix

pytestmark = pytest.mark.skipif(not shutil.which("reprepro") or not shutil.which("dpkg-deb"),
                                reason="reprepro and dpkg-deb build the test's repository (scripts/install-deps)")

STABLE = {"alpha": "1.0-1", "beta": "1.0-1", "gamma": "2.0-1"}


def deb(work: Path, name: str, version: str) -> Path:
    """A tiny binary package (a control file, no payload)."""
    root = work / f"{name}_{version}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nSection: misc\nPriority: optional\n"
        "Maintainer: Test <t@example.invalid>\n"
        f"Description: {name} for the stable-channel test\n")
    out = work / f"{name}_{version}_all.deb"
    run(["dpkg-deb", "--root-owner-group", "--build", root, out])
    return out


def repository(base: Path, security_fix: bool) -> Path:
    """bookworm (alpha 1.0-1 and 1.1-1, beta 1.0-1, gamma 2.0-1), bookworm-updates (empty) and bookworm-security
    (beta 1.0-1+deb12u1 when `security_fix`), unsigned. Debian 12's reprepro keeps one version of a package per
    suite and component (no `Limit:` before 5.4): alpha's newer version is in bookworm's second component, so that
    the suite serves both, as a mirror that keeps old versions does."""
    repo = base / "repo"
    (repo / "conf").mkdir(parents=True)
    (repo / "conf" / "distributions").write_text("".join(
        f"Codename: {suite}\nComponents: main contrib\nArchitectures: amd64\n\n"
        for suite in ("bookworm", "bookworm-updates", "bookworm-security")))
    debs = base / "debs"
    debs.mkdir()
    for name, version, component in (("alpha", "1.0-1", "main"), ("alpha", "1.1-1", "contrib"),
                                     ("beta", "1.0-1", "main"), ("gamma", "2.0-1", "main")):
        run(["reprepro", "-b", repo, "-C", component, "includedeb", "bookworm", deb(debs, name, version)])
    if security_fix:
        fix = deb(debs, "beta", "1.0-1+deb12u1")
        run(["reprepro", "-b", repo, "-C", "main", "includedeb", "bookworm-security", fix])
    run(["reprepro", "-b", repo, "export"])
    return repo


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Release]:
    """Debian 12 with its mirror and security mirror at the test's repository on 127.0.0.1."""
    repo = repository(tmp_path, security_fix=getattr(request, "param", True))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(repo))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield dataclasses.replace(matrix().get(12), mirror=url, security_mirror=url, components=("main", "contrib"))
    finally:
        server.shutdown()
        server.server_close()


def test_only_the_security_fix_moves(served: Release) -> None:
    indices = stable_pins.release_indices(served)
    assert sorted(indices["main"]["alpha"]) == ["1.0-1", "1.1-1"]  # the repository serves both
    plan = stable_pins.plan(STABLE, indices)
    assert plan.moved == {"beta": ("1.0-1", "1.0-1+deb12u1", "security")}
    assert plan.held == {"alpha": ("1.0-1", "1.1-1")}
    assert plan.pins == {"alpha": "1.0-1", "beta": "1.0-1+deb12u1", "gamma": "2.0-1"}
    assert "Package: alpha\nPin: version 1.0-1\nPin-Priority: 1001\n" in stable_pins.apt_preferences(plan.pins)


@pytest.mark.parametrize("served", [False], indirect=True)
def test_nothing_new_in_security_moves_nothing(served: Release) -> None:
    plan = stable_pins.plan(STABLE, stable_pins.release_indices(served))
    assert plan.nothing_new and plan.pins == STABLE


def test_a_pinned_version_the_archive_dropped_fails_naming_the_package(served: Release) -> None:
    with pytest.raises(StableChannelError, match=r"gamma 1\.9-1 \(the archive has 2\.0-1\)"):
        stable_pins.plan({**STABLE, "gamma": "1.9-1"}, stable_pins.release_indices(served))


def test_the_rebuild_diff_must_be_exactly_the_fixes(served: Release) -> None:
    plan = stable_pins.plan(STABLE, stable_pins.release_indices(served))
    good = {**STABLE, "beta": "1.0-1+deb12u1"}
    assert stable_pins.check_rebuild(STABLE, good, plan) == {"beta": ("1.0-1", "1.0-1+deb12u1")}
    with pytest.raises(StableChannelError, match=r"alpha 1\.0-1 -> 1\.1-1"):
        stable_pins.check_rebuild(STABLE, {**good, "alpha": "1.1-1"}, plan)
    with pytest.raises(StableChannelError, match=r"delta \(absent\) -> 1"):
        stable_pins.check_rebuild(STABLE, {**good, "delta": "1"}, plan)
    with pytest.raises(StableChannelError, match="beta 1.0-1 -> 1.0-1\\+deb12u1 was not taken"):
        stable_pins.check_rebuild(STABLE, STABLE, plan)


def test_version_order_is_dpkgs() -> None:
    versions = ["1.0", "1.0-1", "1.0-1+deb12u1", "1.0-1~bpo12+1", "1.0~rc1-1", "1:0.9-1", "1.0-10", "1.0-2",
                "1.0a-1", "1.0+b1", "1.0.1-1", "2.0-1", "1.0-1.1", "0:1.0-1", "1.00-1", "1.0-1+b2"]
    for a in versions:
        for b in versions:
            ours = compare_versions(a, b)
            dpkg_lt = run(["dpkg", "--compare-versions", a, "lt", b], check=False).returncode == 0
            dpkg_eq = run(["dpkg", "--compare-versions", a, "eq", b], check=False).returncode == 0
            assert (ours < 0, ours == 0) == (dpkg_lt, dpkg_eq), (a, b, ours)


# --- golden build --channel stable --------------------------------------------------------------------------


def stable_in(images: Path, packages: dict[str, str]) -> Path:
    """A stable artifact of web for Debian 12 whose manifest lists `packages`."""
    from goldenimage.bake import channels, store

    images.mkdir(parents=True, exist_ok=True)
    qcow2 = images / "incoming.qcow2"
    qcow2.write_bytes(b"QFI\xfb stable")
    artifact = store.commit(qcow2, {"content_key": "5" * 16, "kind": "cloud", "packages": packages,
                                    "profile": {"profile": "web"}, "release": {"number": 12},
                                    "build": {"finished": "2026-11-01T10:00:00Z"}},
                            "web-debian12-20261101-" + "5" * 16, images)
    channels.record_verify(artifact, True)
    channels.record_drill(artifact, "ha", True)
    channels.promote(artifact, "candidate")
    channels.promote(artifact, "stable", skip_soak=True)
    return images


@pytest.fixture
def stable_build(served: Release, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """build_stable with the release at the test's repository and a bake that records the pins it ran under and
    installs what `taken` says (default: exactly the pins)."""
    from goldenimage.bake import stable_build as stable
    from goldenimage.bake import store
    from goldenimage.model import profiles

    images = stable_in(tmp_path / "images", STABLE)
    monkeypatch.setenv("GOLDEN_IMAGES_DIR", str(images))
    real_resolve = profiles.resolve

    def resolve(name, debian=None, overlays=()):  # type: ignore[no-untyped-def]
        return dataclasses.replace(real_resolve(name, debian, overlays), release=served)

    monkeypatch.setattr(stable, "resolve", resolve)
    calls: list[dict[str, str]] = []
    taken: dict[str, str] = {}

    def bake(name, debian=None, overlays=(), **kwargs):  # type: ignore[no-untyped-def]
        pins = dict(stable_pins.current())
        calls.append(pins)
        qcow2 = images / "baked.qcow2"
        qcow2.write_bytes(b"QFI\xfb rebuilt")
        return store.commit(qcow2, {"content_key": "6" * 16, "kind": "cloud", "packages": {**pins, **taken},
                                    "profile": {"profile": "web"}, "release": {"number": 12}},
                            "web-debian12-20261207-" + "6" * 16, images)

    monkeypatch.setattr(stable, "bake", bake)
    return stable.build_stable, calls, taken, images


@pytest.mark.parametrize("served", [False], indirect=True)
def test_nothing_new_gives_the_stable_artifact_no_rebuild(stable_build) -> None:  # type: ignore[no-untyped-def]
    build, calls, _, _ = stable_build
    artifact = build("web", 12)
    assert artifact.key == "5" * 16 and calls == []


def test_a_security_fix_rebuilds_with_every_other_version_held(stable_build) -> None:  # type: ignore[no-untyped-def]
    from goldenimage.bake import channels

    build, calls, _, _ = stable_build
    artifact = build("web", 12)
    assert calls == [{"alpha": "1.0-1", "beta": "1.0-1+deb12u1", "gamma": "2.0-1"}]
    assert stable_pins.current() == {}  # only for the duration of the bake
    record = channels.read_record(artifact)
    assert record["rebuilt_from"]["fixes"] == {"beta": ["1.0-1", "1.0-1+deb12u1"]}
    assert record["channel"] == "edge"


def test_a_rebuild_that_took_more_than_fixes_fails_naming_the_package(stable_build) -> None:  # type: ignore[no-untyped-def]
    from goldenimage.bake import store

    build, _, taken, images = stable_build
    taken["alpha"] = "1.1-1"  # as if the pins were not obeyed
    with pytest.raises(StableChannelError, match=r"alpha 1\.0-1 -> 1\.1-1"):
        build("web", 12)
    assert store.find("6" * 16, images) is None  # the rebuild is not left in the store


def test_the_package_layer_is_built_under_the_pins(tmp_path: Path) -> None:
    from goldenimage.bake import base_image

    release = matrix().get(12)
    plain = base_image.base_key(release, release.mirror, "cloud")
    with stable_pins.pinned({"beta": "1.0-1+deb12u1"}):
        argv = [str(a) for a in base_image.mmdebstrap_argv(release, release.mirror, "cloud", tmp_path, (), ["web"])]
        assert base_image.base_key(release, release.mirror, "cloud") != plain
    setup = [a for a in argv if a.startswith("--setup-hook=") and "golden-stable" in a]
    assert len(setup) == 1 and "Pin: version 1.0-1+deb12u1" in setup[0]
    assert argv.index('--customize-hook=rm -f "$1/etc/apt/preferences.d/golden-stable"') > \
        max(i for i, a in enumerate(argv) if "apt-get install" in a or "apt-get\", \"install" in a or "install -y" in a)
    assert base_image.base_key(release, release.mirror, "cloud") == plain


@pytest.mark.skipif(not shutil.which("apt-get"), reason="apt-get resolves the pins")
def test_apt_takes_the_pinned_versions_from_the_repository(served: Release, tmp_path: Path) -> None:
    """The preferences the layer is built under, given to a real apt-get (simulating, in a scratch state): it
    picks alpha 1.0-1 although main has 1.1-1, and beta's security fix."""
    plan = stable_pins.plan(STABLE, stable_pins.release_indices(served))
    apt = tmp_path / "apt"
    for sub in ("state/lists/partial", "cache/archives/partial", "parts", "prefs"):
        (apt / sub).mkdir(parents=True)
    (apt / "state/status").write_text("")
    (apt / "sources.list").write_text("".join(
        f"deb [trusted=yes] {served.mirror} {suite} main contrib\n"
        for suite in ("bookworm", "bookworm-updates", "bookworm-security")))
    (apt / "prefs/golden-stable").write_text(stable_pins.apt_preferences(plan.pins))
    options = [f"-o{k}={v}" for k, v in {
        "Dir::State": apt / "state", "Dir::State::status": apt / "state/status", "Dir::Cache": apt / "cache",
        "Dir::Etc::SourceList": apt / "sources.list", "Dir::Etc::SourceParts": apt / "parts",
        "Dir::Etc::Preferences": apt / "none", "Dir::Etc::PreferencesParts": apt / "prefs",
        "APT::Architecture": "amd64", "APT::Architectures": "amd64", "Acquire::http::Proxy": "DIRECT",
        "Acquire::Languages": "none", "Acquire::Retries": "0", "Acquire::http::Timeout": "10"}.items()]
    run(["apt-get", *options, "update"], timeout=120)
    out = run(["apt-get", *options, "-s", "install", "alpha", "beta", "gamma"], timeout=120).stdout
    installs = dict(line.split()[1:3] for line in out.splitlines() if line.startswith("Inst "))
    assert installs == {"alpha": "(1.0-1", "beta": "(1.0-1+deb12u1", "gamma": "(2.0-1"}
