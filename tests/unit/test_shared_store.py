"""The store shared by builders (GOLDEN_STORE=s3://bucket/prefix) against real S3-protocol servers on
127.0.0.1: moto's (honours If-None-Match: *) and nanio (verifies SigV4, ignores conditional writes: the
lease stands in). Two builders are two local stores (two images/ folders) and one bucket."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from goldenimage.bake import channels, pipeline, shared_store, store
from goldenimage.bake.shared_store import Location, SharedStore, SharedStoreError
from goldenimage.cli import main
from goldenimage.core.errors import InputError
from tests.unit.test_channels import fake_artifact

KEY = "5a5a5a5a5a5a5a5a"


@pytest.fixture(params=["moto", "nanio"])
def bucket(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """A fresh bucket on one of the two servers, GOLDEN_STORE and the endpoint set, credentials for it."""
    if request.param == "moto":
        endpoint = request.getfixturevalue("moto_endpoint")
        access, secret = "testing", "testing"
    else:
        server = request.getfixturevalue("sigv4_s3")
        endpoint, access, secret = server.endpoint, server.access_key, server.secret_key
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    name = f"team-{tmp_path.name[-20:].lower().replace('_', '-').strip('-')}"
    monkeypatch.setenv("GOLDEN_STORE", f"s3://{name}/golden/images")
    monkeypatch.setenv("GOLDEN_STORE_ENDPOINT", endpoint)
    monkeypatch.setattr(shared_store, "SETTLE_S", 0.2)
    monkeypatch.setattr(shared_store, "POLL_S", 0.2)
    monkeypatch.setattr(shared_store, "WAIT_S", 20)
    shared = shared_store.configured()
    assert shared is not None
    shared.s3.create_bucket(Bucket=name)
    yield request.param


def shared() -> SharedStore:
    found = shared_store.configured()
    assert found is not None
    return found


def objects(s: SharedStore) -> list[str]:
    page = s.s3.list_objects_v2(Bucket=s.location.bucket, Prefix=s.location.prefix)
    return sorted(o["Key"].removeprefix(s.location.prefix) for o in page.get("Contents", []))


def test_store_url_is_checked() -> None:
    assert Location.parse("s3://b/a/b/") == Location("b", "a/b/")
    assert Location.parse("s3://b") == Location("b", "")
    for bad in ("https://b/x", "s3:///x", "s3://b/x?y=1"):
        with pytest.raises(InputError, match="GOLDEN_STORE"):
            Location.parse(bad)


def test_the_second_builder_fetches_instead_of_baking(bucket: str, tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "images", tmp_path / "b" / "images"
    built = fake_artifact(first, KEY)
    assert shared().fetch(KEY, second) is None  # nothing shared yet
    assert shared().share(built) == built
    assert [o for o in objects(shared()) if not o.startswith("probes/")] == [
        f"artifacts/{KEY}/channel.json", f"artifacts/{KEY}/manifest.json",
        *[o for o in objects(shared()) if o.endswith(".qcow2")]]
    fetched = shared().fetch(KEY, second)
    assert fetched is not None and fetched.key == KEY and fetched.name == built.name
    assert fetched.qcow2.read_bytes() == built.qcow2.read_bytes()
    assert store.find(KEY, second) == fetched
    assert channels.channel_of(fetched) == "edge"


def test_a_damaged_download_is_refused_and_leaves_nothing(bucket: str, tmp_path: Path) -> None:
    built = fake_artifact(tmp_path / "a", KEY)
    shared().share(built)
    s = shared()
    obj = s.manifest(KEY).store_object  # type: ignore[union-attr]
    s.s3.put_object(Bucket=s.location.bucket, Key=obj, Body=b"QFI\xfb not the same bytes")
    with pytest.raises(SharedStoreError, match="sha256 differs"):
        s.fetch(KEY, tmp_path / "b")
    assert [p.name for p in (tmp_path / "b").iterdir()] == []


def test_two_builders_at_once_end_with_one_artifact(bucket: str, tmp_path: Path) -> None:
    """Both bake the same content key (different bytes, as two bakes give) and share at the same moment: one
    manifest, one qcow2 object, and both local stores hold the winner's bytes."""
    builders = [fake_artifact(tmp_path / f"b{i}", KEY) for i in range(2)]
    (builders[1].qcow2).write_bytes(b"QFI\xfb other bytes")  # a different bake of the same key
    builders[1] = store.commit(builders[1].qcow2, builders[1].manifest().to_json(), builders[1].name,
                               builders[1].qcow2.parent)
    results: list[store.Artifact | BaseException] = [None, None]  # type: ignore[list-item]
    barrier = threading.Barrier(2)

    def build(i: int) -> None:
        barrier.wait()
        try:
            results[i] = SharedStore(shared().location, endpoint=shared_store.os.environ["GOLDEN_STORE_ENDPOINT"]
                                     ).share(builders[i])
        except BaseException as exc:  # the assertion below shows it
            results[i] = exc

    threads = [threading.Thread(target=build, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(isinstance(r, store.Artifact) for r in results), results
    qcow2s = [o for o in objects(shared()) if o.endswith(".qcow2")]
    assert len(qcow2s) == 1
    assert not [o for o in objects(shared()) if o.startswith("locks/")]
    winner = shared().manifest(KEY).image.sha256  # type: ignore[union-attr]
    for i in range(2):
        local = store.find(KEY, tmp_path / f"b{i}")
        assert local is not None and local.sha256() == winner


def test_build_looks_the_key_up_in_the_shared_store(bucket: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    shared().share(fake_artifact(tmp_path / "a", KEY))
    monkeypatch.setenv("GOLDEN_IMAGES_DIR", str(tmp_path / "b"))
    fetched = pipeline.from_store(KEY, force=False)
    assert fetched is not None and fetched.qcow2.parent == tmp_path / "b"
    assert pipeline.from_store("0" * 16, force=False) is None


def test_images_commands_work_on_the_shared_store(bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    built = fake_artifact(tmp_path / "a", KEY)
    shared().share(built)
    monkeypatch.setenv("GOLDEN_IMAGES_DIR", str(tmp_path / "b"))  # this builder has nothing local
    assert main(["images", "promote", KEY, "--to", "candidate"]) == 2
    assert "no passed golden verify and no passed cluster drill" in capsys.readouterr().err
    channels.record_verify(built, True)
    shared().push_record(built)
    assert main(["images", "promote", KEY, "--to", "candidate"]) == 2
    assert "no passed cluster drill" in capsys.readouterr().err
    channels.record_drill(built, "ha", True)  # on the builder that ran the drill, then shared
    shared().push_record(built)
    assert shared().record(KEY)[0]["drills"]["ha"]["content_key"] == KEY
    assert main(["images", "promote", KEY, "--to", "candidate"]) == 0
    assert shared().record(KEY)[0]["channel"] == "candidate"
    assert main(["images", "list"]) == 0
    out = capsys.readouterr().out
    assert "candidate" in out and KEY in out


def test_a_local_artifact_whose_upload_failed_is_shared_by_the_next_build(bucket: str, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    built = fake_artifact(tmp_path / "a", KEY)  # baked, but its upload never happened
    monkeypatch.setenv("GOLDEN_IMAGES_DIR", str(tmp_path / "a"))
    assert pipeline.from_store(KEY, force=False) == built
    assert shared().manifest(KEY) is not None
    assert pipeline.from_store(KEY, force=False) == built  # shared already, same bytes: nothing moves


def test_a_publish_is_recorded_in_the_shared_record_and_prune_on_the_bucket_keeps_it(
        bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    older = fake_artifact(tmp_path / "a", "1" * 16, built="2026-11-01T10:00:00Z")
    middle = fake_artifact(tmp_path / "a", "2" * 16, built="2026-11-02T10:00:00Z")
    newest = fake_artifact(tmp_path / "a", "3" * 16, built="2026-11-03T10:00:00Z")
    for artifact in (older, middle, newest):
        shared().share(artifact)
    channels.record_published(older, "openstack", "glance-1")
    shared().push_record(older)
    assert shared().record(older.key)[0]["published"][0]["id"] == "glance-1"
    monkeypatch.setenv("GOLDEN_IMAGES_DIR", str(tmp_path / "b"))
    assert main(["images", "prune", "--keep", "1"]) == 0
    out = capsys.readouterr().out
    assert f"removed {middle.name} (edge)" in out
    assert f"kept {older.name} (edge): published as openstack:glance-1" in out
    assert set(shared().keys()) == {older.key, newest.key}
    assert not [o for o in objects(shared()) if middle.key in o]
    assert main(["images", "prune", "--keep", "1"]) == 0
    assert "nothing to remove" in capsys.readouterr().out
