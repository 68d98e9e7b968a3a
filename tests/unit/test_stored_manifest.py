"""A manifest file read back typed: what verify, audit, publish, channels and the shared store take from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from goldenimage.bake.manifest import ImageFile, StoredManifest

WRITTEN = {
    "format": 1,
    "content_key": "0123456789abcdef",
    "kind": "metal",
    "profile": {"profile": "web", "roles": ["web"], "debian": 12, "codename": "bookworm", "disk_size": "6G"},
    "release": {"number": 12, "codename": "bookworm"},
    "firmware": ["bios", "uefi", "uefi-secureboot"],
    "packages": {"nginx": "1.22"},
    "build": {"finished": "2026-12-07T10:00:00Z"},
    "image": {"file": "web-debian12-metal-20261207-0123456789abcdef.qcow2", "sha256": "ab" * 32,
              "size_bytes": 123},
}


def test_a_written_manifest_reads_back_typed(tmp_path: Path) -> None:
    path = tmp_path / "web.manifest.json"
    path.write_text(json.dumps(WRITTEN))
    manifest = StoredManifest.read(path)
    assert (manifest.content_key, manifest.kind, manifest.profile, manifest.roles) == \
        ("0123456789abcdef", "metal", "web", ("web",))
    assert (manifest.debian, manifest.codename, manifest.disk_size) == (12, "bookworm", "6G")
    assert manifest.firmware == ("bios", "uefi", "uefi-secureboot") and manifest.packages == {"nginx": "1.22"}
    assert manifest.finished == "2026-12-07T10:00:00Z" and manifest.store_object is None
    assert manifest.image == ImageFile(WRITTEN["image"]["file"], "ab" * 32, 123)  # type: ignore[index]
    assert manifest.to_json() == WRITTEN


def test_an_older_manifest_is_a_cloud_image_that_boots_bios() -> None:
    manifest = StoredManifest.from_json({"content_key": "k", "profile": {"debian": 11}})
    assert (manifest.kind, manifest.firmware, manifest.debian, manifest.image) == ("cloud", ("bios",), 11, None)
    assert (manifest.profile, manifest.roles, manifest.finished) == ("", (), None)


def test_the_shared_store_entry_is_added_and_left_out_again() -> None:
    shared = StoredManifest.from_json(StoredManifest.from_json(WRITTEN).to_json(store_object="artifacts/k/x.qcow2"))
    assert shared.store_object == "artifacts/k/x.qcow2"
    assert shared.to_json() == WRITTEN


@pytest.mark.parametrize("data", [[], "manifest", None, 3])
def test_json_that_is_not_an_object_is_no_manifest(data: object) -> None:
    with pytest.raises(ValueError, match="a manifest is a JSON object"):
        StoredManifest.from_json(data)
