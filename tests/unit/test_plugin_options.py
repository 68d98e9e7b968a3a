"""Every option the Packer 1.7+ templates set is one the pinned plugin knows.

Packer 1.6 here cannot check the plugin-only options (token, serials, task_timeout...): the option names of
each builder come from the plugins' HCL2 specs (builder/*/config.hcl2spec.go of hashicorp/packer-plugin-qemu,
-proxmox and -openstack at the release named in the fixture, the current one in 2026-11), nested blocks included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from goldenimage.model.profiles import resolve
from goldenimage.render.packer_template import PLUGINS, Target, render_template

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "packer-plugin-options.json").read_text())


def _unknown(given: dict[str, Any], known: dict[str, Any], where: str = "") -> list[str]:
    bad = []
    for key, value in given.items():
        if key not in known:
            bad.append(where + key)
            continue
        nested = known[key]
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict) and isinstance(nested, dict):
                bad += _unknown(item, nested, f"{where}{key}.")
    return bad


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


@pytest.mark.parametrize("profile", ["web", "banking-hardened"])
@pytest.mark.parametrize("target", list(Target))
def test_every_option_is_known_to_the_plugin(target, profile):
    template, _ = render_template(resolve(profile, 13), target, required_plugins=True)
    ((builder, sources),) = template["source"].items()
    plugin = FIXTURE[builder]
    assert template["packer"]["required_plugins"][target.value]["source"] == plugin["plugin"]
    assert _unknown(sources["golden"], plugin["options"]) == []


@pytest.mark.parametrize("target", list(Target))
def test_the_checked_plugin_release_is_within_the_pinned_range(target):
    source, constraint = PLUGINS[target.value]
    (plugin,) = [p for p in FIXTURE.values() if p["plugin"] == source]
    lower, upper = (c.strip() for c in constraint.split(","))
    assert _version(lower.removeprefix(">= ")) <= _version(plugin["version"]) < _version(upper.removeprefix("< "))


def test_the_check_can_fail():
    assert _unknown({"serials": [], "vga": {"kind": "std"}}, FIXTURE["proxmox-clone"]["options"]) == ["vga.kind"]
    assert _unknown({"password_token": "x"}, FIXTURE["proxmox-clone"]["options"]) == ["password_token"]
