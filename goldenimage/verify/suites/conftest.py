"""Fixtures for the per-role testinfra suites: what the image says it is, and the other clone's identity."""

from __future__ import annotations

import json
import os

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
    """Host keys and machine-id of a second clone booted from the same artifact."""
    return json.loads(os.environ["GOLDEN_OTHER_IDENTITY"])


@pytest.fixture(scope="module")
def php(image_info):
    return image_info["release_vars"]["php"]


@pytest.fixture(scope="session")
def firmware():
    """The firmware golden verify booted this clone with: bios, uefi or uefi-secureboot."""
    return os.environ.get("GOLDEN_FIRMWARE", "bios")
