"""Packer 1.7+ gets `packer init` of the template's plugins before validate and build; Packer 1.6 never does.

A fake `packer` on PATH records every call (tests/unit/fixtures/fake-packer)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from goldenimage.bake import packer_cli
from goldenimage.bake.packer_build import packer_build
from goldenimage.bake.render_dir import render
from goldenimage.bake.validate import check_profile
from goldenimage.model.profiles import resolve
from goldenimage.render.packer_template import PLUGINS, Target

FAKE = Path(__file__).parent / "fixtures" / "fake-packer"


class FakePacker:
    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.log = tmp_path / "packer-calls.jsonl"
        self.cache = tmp_path / "cache"
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        shutil.copy(FAKE, bin_dir / "packer")
        monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
        monkeypatch.setenv("FAKE_PACKER_LOG", str(self.log))
        monkeypatch.setenv("GOLDEN_CACHE_DIR", str(self.cache))
        monkeypatch.delenv("PACKER_PLUGIN_PATH", raising=False)
        monkeypatch.delenv("FAKE_PACKER_INIT_ERROR", raising=False)
        self.monkeypatch = monkeypatch
        self.version("1.11.2")

    def version(self, version: str) -> None:
        self.monkeypatch.setenv("FAKE_PACKER_VERSION", version)
        packer_cli.packer_version.cache_clear()
        packer_cli._init_results.clear()

    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def commands(self) -> list[list[str]]:
        return [c["argv"] for c in self.calls() if c["argv"][:1] != ["version"]]


@pytest.fixture
def fake_packer(tmp_path, monkeypatch):
    fake = FakePacker(tmp_path, monkeypatch)
    yield fake
    packer_cli.packer_version.cache_clear()
    packer_cli._init_results.clear()


def test_new_packer_inits_the_template_before_validating_it(fake_packer, tmp_path):
    rendered = render(resolve("web", 12), Target.QEMU, tmp_path / "r")
    template = json.loads(rendered.template.read_text())
    assert template["packer"]["required_plugins"]["qemu"]["source"] == "github.com/hashicorp/qemu"
    ok, _ = packer_cli.validate(rendered.template, rendered.var_file)
    assert ok
    commands = fake_packer.commands()
    assert [c[0] for c in commands] == ["init", "validate"]
    assert commands[0] == ["init", rendered.template.name]
    init = next(c for c in fake_packer.calls() if c["argv"][0] == "init")
    assert init["cwd"] == str(rendered.directory)
    # plugins are cached under goldenimage's cache directory, and validate looks for them there
    assert {c["plugin_path"] for c in fake_packer.calls() if c["argv"][0] != "version"} == \
        {str(fake_packer.cache / "packer-plugins")}


def test_new_packer_inits_each_plugin_once_and_before_every_use(fake_packer):
    checks = check_profile("nfs", 13, list(Target), "http://127.0.0.1:9")
    assert all(c.ok for c in checks), [c.detail for c in checks if not c.ok]
    commands = fake_packer.commands()
    assert [c[0] for c in commands] == ["init", "validate"] * 3
    # a second profile needs no new init: the same three plugins are installed
    check_profile("web", 13, list(Target), "http://127.0.0.1:9")
    assert [c[0] for c in fake_packer.commands()[6:]] == ["validate"] * 3


def test_packer_1_6_gets_no_required_plugins_and_no_init(fake_packer, tmp_path):
    fake_packer.version("1.6.6")
    rendered = render(resolve("web", 12), Target.PROXMOX, tmp_path / "r")
    assert "packer" not in json.loads(rendered.template.read_text())
    assert packer_cli.validate(rendered.template, rendered.var_file)[0]
    assert [c[0] for c in fake_packer.commands()] == ["validate"]
    assert all(c["plugin_path"] is None for c in fake_packer.calls())


def test_build_inits_before_building(fake_packer, tmp_path):
    rendered = render(resolve("web", 12), Target.QEMU, tmp_path / "r")
    packer_build(rendered.template, rendered.var_file)
    assert [c[0] for c in fake_packer.commands()] == ["init", "build"]


def test_a_plugin_that_cannot_be_fetched_is_one_line_naming_it_and_how_to_install_it_offline(
        fake_packer, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_PACKER_INIT_ERROR", "could not get releases: dial tcp: lookup api.github.com")
    rendered = render(resolve("web", 12), Target.QEMU, tmp_path / "r")
    with pytest.raises(packer_cli.PluginError) as exc:
        packer_cli.validate(rendered.template, rendered.var_file)
    message = str(exc.value)
    assert "\n" not in message
    assert "github.com/hashicorp/qemu" in message and PLUGINS["qemu"][1] in message
    assert "lookup api.github.com" in message
    hint = exc.value.hint or ""
    assert "packer plugins install --path" in hint and f"PACKER_PLUGIN_PATH={fake_packer.cache}" in hint
    assert "https://github.com/hashicorp/packer-plugin-qemu/releases" in hint
    # the attempt is not repeated for every template of a validate run, and nothing was validated
    with pytest.raises(packer_cli.PluginError):
        packer_cli.validate(rendered.template, rendered.var_file)
    assert [c[0] for c in fake_packer.commands()] == ["init"]


def test_a_user_plugin_path_is_kept(fake_packer, tmp_path, monkeypatch):
    monkeypatch.setenv("PACKER_PLUGIN_PATH", str(tmp_path / "mine"))
    rendered = render(resolve("web", 12), Target.OPENSTACK, tmp_path / "r")
    packer_cli.init(rendered.template)
    assert fake_packer.calls()[-1]["plugin_path"] == str(tmp_path / "mine")


@pytest.mark.parametrize("target", list(Target))
def test_plugins_are_pinned_below_the_next_major_release(target):
    source, version = PLUGINS[target.value]
    assert source == f"github.com/hashicorp/{target.value}"
    assert version.startswith(">= 1.") and "< 2.0.0" in version


def test_golden_validate_reports_a_missing_plugin_on_one_line_per_profile(fake_packer, monkeypatch):
    from goldenimage.bake.validate import validate_all

    monkeypatch.setenv("FAKE_PACKER_INIT_ERROR", "could not get releases")
    checks = list(validate_all(["nfs", "lb"], releases=[12], targets=[Target.QEMU], jobs=2))
    assert [c.ok for c in checks] == [False, False]
    assert [c.line() for c in checks] == [
        f"FAIL {name} debian12: packer init could not install the Packer plugin github.com/hashicorp/qemu "
        f"{PLUGINS['qemu'][1]}: could not get releases" for name in ("nfs", "lb")]
    assert [c[0] for c in fake_packer.commands()] == ["init"]  # tried once for the whole run
