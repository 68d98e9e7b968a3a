"""The publish extra's floors are versions the code runs with: `make test-floor` installs exactly these
(scripts/floor-constraints) and runs tests/publish. Known floors, each from a call the code makes:"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: openstacksdk: Image.upload(..., size=) appeared in 4.18.0 (4.17 raises TypeError: unexpected keyword 'size').
KNOWN = {"openstacksdk": (4, 18)}


def _constraints() -> dict[str, tuple[int, ...]]:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "floor-constraints")], capture_output=True,
                         text=True, check=True, timeout=30).stdout
    pins = dict(line.split("==") for line in out.split())
    return {name: tuple(int(p) for p in version.split(".")) for name, version in pins.items()}


def test_every_publish_client_library_has_a_tested_floor():
    assert set(_constraints()) == {"openstacksdk", "proxmoxer", "boto3", "botocore", "ovh"}


def test_floors_are_at_least_the_versions_with_the_apis_the_code_calls():
    floors = _constraints()
    for name, version in KNOWN.items():
        assert floors[name] >= version, name


def test_botocore_is_pinned_with_its_boto3_release():
    floors = _constraints()
    assert floors["botocore"] == floors["boto3"]
