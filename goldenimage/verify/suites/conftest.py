"""Fixtures for the per-role testinfra suites: what the image says it is, and the other clone's identity."""

from __future__ import annotations

import json
import os
import time

import pytest


@pytest.fixture(scope="module")
def image_info(host):
    """/etc/golden/image.json: profile, roles, release variables, settings baked into the image."""
    return json.loads(host.file("/etc/golden/image.json").content_string)


@pytest.fixture(scope="session")
def manifest():
    """The artifact's manifest.json (path given by golden verify)."""
    with open(os.environ["GOLDEN_MANIFEST"]) as f:
        return json.load(f)


@pytest.fixture(scope="session")
def other_identity():
    """Host keys and machine-id of a second clone booted from the same artifact: given as JSON, or as a file
    that golden verify writes once that clone is up (this clone's suites start before; only the tests that
    compare the two wait, bounded)."""
    if "GOLDEN_OTHER_IDENTITY" in os.environ:
        return json.loads(os.environ["GOLDEN_OTHER_IDENTITY"])
    path = os.environ["GOLDEN_OTHER_IDENTITY_FILE"]
    deadline = time.monotonic() + float(os.environ.get("GOLDEN_OTHER_IDENTITY_WAIT", "1800"))
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            pytest.fail(f"the other clone's identity never came ({path}): it did not boot")
        time.sleep(1)
    with open(path) as f:
        data = json.load(f)
    if "error" in data:
        pytest.fail(data["error"])
    return data


@pytest.fixture(scope="module")
def php(image_info):
    return image_info["release_vars"]["php"]


@pytest.fixture(scope="session")
def firmware():
    """The firmware golden verify booted this clone with: bios, uefi or uefi-secureboot."""
    return os.environ.get("GOLDEN_FIRMWARE", "bios")
