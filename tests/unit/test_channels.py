"""Release channels: edge -> candidate (a passed verify and a passed cluster drill, for the artifact's content
key) -> stable (a soak period), list, prune."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from goldenimage.bake import channels, shared_store, store
from goldenimage.cli import main
from goldenimage.core.errors import InputError
from goldenimage.publish.publisher import ImageFacts, PublishedImage, publish

DAY = 86400.0


def fake_artifact(images: Path, key: str, profile: str = "web", built: str = "2026-12-01T10:00:00Z",
                  debian: int = 12) -> store.Artifact:
    """A complete artifact with a few bytes as its "qcow2" (the store only checks names and checksums)."""
    images.mkdir(parents=True, exist_ok=True)
    qcow2 = images / f"incoming-{key}.qcow2"
    qcow2.write_bytes(b"QFI\xfb" + key.encode() * 8)
    manifest = {"format": 1, "content_key": key, "kind": "cloud",
                "profile": {"profile": profile, "roles": [profile]},
                "release": {"number": debian, "codename": "bookworm"},
                "build": {"finished": built}}
    return store.commit(qcow2, manifest, f"{profile}-debian{debian}-20261201-{key}", images)


def test_a_new_artifact_is_on_edge(tmp_path: Path) -> None:
    artifact = fake_artifact(tmp_path, "a" * 16)
    assert channels.channel_of(artifact) == "edge"
    assert not channels.record_path(artifact).exists()


def proven(artifact: store.Artifact) -> store.Artifact:
    """A passed verify and a passed drill on record for the artifact."""
    channels.record_verify(artifact, True)
    channels.record_drill(artifact, "ha", True)
    return artifact


def test_candidate_needs_a_passed_verify_and_a_passed_drill(tmp_path: Path) -> None:
    artifact = fake_artifact(tmp_path, "a" * 16)
    with pytest.raises(InputError, match="^web-.*: no passed golden verify and no passed cluster drill on record for "
                                         f"its content key {'a' * 16}$"):
        channels.promote(artifact, "candidate")
    channels.record_verify(artifact, False, "failed on verify-1")
    channels.record_drill(artifact, "ha", True, "0 failed of 900")
    with pytest.raises(InputError, match="cannot become a candidate: no passed golden verify on record"):
        channels.promote(artifact, "candidate")
    channels.record_verify(artifact, True, "bios and uefi-secureboot")
    channels.record_drill(artifact, "upgrade", False, "3 failed requests")
    with pytest.raises(InputError, match="cannot become a candidate: the last run of drill upgrade failed on record"):
        channels.promote(artifact, "candidate")
    channels.record_drill(artifact, "upgrade", True)
    assert channels.promote(artifact, "candidate")["channel"] == "candidate"
    assert channels.channel_of(artifact) == "candidate"
    # written whole: no temporary file stays beside it
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_verify_alone_is_not_enough_for_candidate(tmp_path: Path) -> None:
    artifact = fake_artifact(tmp_path, "a" * 16)
    channels.record_verify(artifact, True)
    with pytest.raises(InputError, match=": no passed cluster drill on record for its content key"):
        channels.promote(artifact, "candidate")


def test_outcomes_of_another_content_key_do_not_count(tmp_path: Path) -> None:
    """A record carried over from another build (a copy, a rebuild under the same name) proves nothing."""
    other = proven(fake_artifact(tmp_path / "other", "b" * 16))
    artifact = fake_artifact(tmp_path, "a" * 16)
    record = channels.read_record(other)
    channels.write_record(artifact, {**record, "content_key": artifact.key})
    with pytest.raises(InputError, match=f"a passed golden verify of another key \\({'b' * 16}\\) and no passed "
                                         "cluster drill"):
        channels.promote(artifact, "candidate")
    assert channels.read_record(artifact)["verify"]["content_key"] == "b" * 16


def test_a_drill_records_its_outcome_against_each_artifact_it_booted(tmp_path: Path) -> None:
    web = fake_artifact(tmp_path, "a" * 16)
    lb = fake_artifact(tmp_path, "b" * 16, profile="lb")
    names = shared_store.record_drill_run([web.qcow2, lb.qcow2, web.qcow2, tmp_path / "not-an-artifact.qcow2"],
                                      "ha-sql", True, "0 failed, outage 4 s")
    assert names == [web.name, lb.name]
    for artifact in (web, lb):
        run = channels.read_record(artifact)["drills"]["ha-sql"]
        assert run["passed"] and run["content_key"] == artifact.key and run["detail"] == "0 failed, outage 4 s"
    channels.record_verify(web, True)
    assert channels.promote(web, "candidate")["channel"] == "candidate"


def test_stable_needs_candidate_and_the_soak_period(tmp_path: Path) -> None:
    artifact = fake_artifact(tmp_path, "a" * 16)
    with pytest.raises(InputError, match="only a candidate"):
        channels.promote(artifact, "stable", skip_soak=True)
    proven(artifact)
    start = 1_800_000_000.0
    channels.promote(artifact, "candidate", when=start)
    with pytest.raises(InputError, match="soak period of 7"):
        channels.promote(artifact, "stable", when=start + 6 * DAY)
    record = channels.promote(artifact, "stable", when=start + 7.5 * DAY)
    assert record["channel"] == "stable"
    assert [e["channel"] for e in record["history"]] == ["candidate", "stable"]
    with pytest.raises(InputError, match="does not move it back"):
        channels.promote(artifact, "candidate")


def test_skipping_the_soak_is_explicit_and_recorded(tmp_path: Path) -> None:
    artifact = proven(fake_artifact(tmp_path, "a" * 16))
    channels.promote(artifact, "candidate")
    record = channels.promote(artifact, "stable", skip_soak=True)
    assert record["history"][-1] == {"channel": "stable", "at": record["history"][-1]["at"], "soak_skipped": True}


def test_prune_keeps_n_per_channel_and_every_published_one_and_is_idempotent(tmp_path: Path) -> None:
    old = [fake_artifact(tmp_path, f"{i:016x}", built=f"2026-11-{10 + i:02d}T10:00:00Z") for i in range(5)]
    # two of them become candidates, one older edge one is published somewhere
    for artifact in old[:2]:
        proven(artifact)
        channels.promote(artifact, "candidate")
    channels.record_published(old[2], "openstack", "glance-123")
    other = fake_artifact(tmp_path, "f" * 16, profile="db")  # another profile: its own group
    removed, held = channels.prune(1, tmp_path)
    # the older candidate, and the edge one between the newest and the published one
    assert sorted(e.key for e in removed) == [old[0].key, old[3].key]
    assert [e.key for e in held] == [old[2].key]  # an older edge one, but published
    assert {a.key for a in channels.all_artifacts(tmp_path)} == {old[1].key, old[2].key, old[4].key, other.key}
    assert not old[0].qcow2.exists() and not old[0].sha256_file.exists()
    assert not channels.record_path(old[0]).exists()
    removed, held = channels.prune(1, tmp_path)
    assert removed == [] and [e.key for e in held] == [old[2].key]


def test_publish_records_where_an_image_went_and_retention_forgets_it(tmp_path: Path) -> None:
    first = fake_artifact(tmp_path, "1" * 16)
    second = fake_artifact(tmp_path, "2" * 16)

    class Target:
        target = "fake"

        def __init__(self) -> None:
            self.images: list[PublishedImage] = []

        def find(self, content_key: str) -> PublishedImage | None:
            return next((i for i in self.images if i.content_key == content_key), None)

        def upload(self, artifact: store.Artifact, facts: ImageFacts, progress: object) -> PublishedImage:
            image = PublishedImage(f"id-{facts.content_key[:4]}", facts.name, facts.profile, facts.content_key,
                                   created=str(len(self.images)))
            self.images.append(image)
            return image

        def verify(self, image: PublishedImage, facts: ImageFacts) -> None:
            pass

        def list_images(self, profile: str) -> list[PublishedImage]:
            return list(self.images)

        def delete(self, image: PublishedImage) -> None:
            self.images.remove(image)

        def in_use(self, image: PublishedImage) -> bool:
            return False

    target = Target()
    publish(target, first)
    assert [(p["target"], p["id"]) for p in channels.read_record(first)["published"]] == [("fake", "id-1111")]
    publish(target, second, keep=1)  # removes id-1111 from the target
    assert channels.read_record(first)["published"] == []
    assert [p["id"] for p in channels.read_record(second)["published"]] == ["id-2222"]


def test_cli_list_promote_prune(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GOLDEN_IMAGES_DIR", str(tmp_path))
    artifact = fake_artifact(tmp_path, "c" * 16)
    fake_artifact(tmp_path, "d" * 16, built="2026-11-01T10:00:00Z")
    assert main(["images", "promote", artifact.key, "--to", "candidate"]) == 2
    err = capsys.readouterr().err
    assert "no passed golden verify and no passed cluster drill on record for its content key" in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1
    channels.record_verify(artifact, True)
    assert main(["images", "promote", artifact.key, "--to", "candidate"]) == 2
    assert "no passed cluster drill" in capsys.readouterr().err
    channels.record_drill(artifact, "upgrade", True)
    assert main(["images", "promote", artifact.name, "--to", "candidate"]) == 0
    assert main(["images", "promote", artifact.name, "--to", "stable", "--skip-soak"]) == 0
    assert "candidate -> stable" in capsys.readouterr().out
    assert main(["images", "list"]) == 0
    out = capsys.readouterr().out
    assert "stable" in out and "c" * 16 in out and "edge" in out and "d" * 16 in out
    assert main(["images", "prune", "--keep", "1"]) == 0
    assert "nothing to remove" in capsys.readouterr().out  # one per channel: both stay
    assert json.loads(channels.record_path(artifact).read_text())["channel"] == "stable"


def test_the_parser_names_the_channels_and_soak_period_bake_channels_has() -> None:
    from goldenimage.commands import images_cli

    assert (images_cli.CHANNELS, images_cli.SOAK_DAYS) == (channels.CHANNELS, channels.SOAK_DAYS)


def test_the_e2e_drills_record_a_pass_or_the_first_line_of_their_failure(tmp_path: Path) -> None:
    from tests.e2e.drill_record import recorded

    artifact = fake_artifact(tmp_path, "a" * 16)
    with pytest.raises(AssertionError), recorded("ha") as booted:
        booted.append(artifact.qcow2)
        raise AssertionError("web1 lacks acknowledged ids [4, 5]\nmore")
    assert channels.read_record(artifact)["drills"]["ha"]["detail"] == "web1 lacks acknowledged ids [4, 5]"
    assert not channels.read_record(artifact)["drills"]["ha"]["passed"]
    with recorded("ha") as booted:
        booted.append(artifact.qcow2)
    assert channels.read_record(artifact)["drills"]["ha"]["passed"]
