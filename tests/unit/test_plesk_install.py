"""plesk's bake: Plesk's installer runs in the VM pass with a command line built from `settings.plesk`, so that
an overlay's installer address, release, preset or mirror is what the image gets (the installer's documented
unattended form: `plesk-installer install <RELEASE> --preset <PRESET> [--source <URL>]`)."""

from __future__ import annotations

import shlex

import pytest
import yaml

from goldenimage.core.errors import InputError
from goldenimage.model.profiles import resolve
from goldenimage.render.userdata import render_vm_pass_user_data


def installer_line(commands: list[str]) -> list[str]:
    (line,) = [c for c in commands if c.startswith("/root/plesk-installer ")]
    return shlex.split(line)


def test_the_default_installs_the_latest_general_release_with_the_recommended_preset() -> None:
    commands = resolve("plesk", 12).content.vm_bake_commands
    assert commands[0] == "wget -q -O /root/plesk-installer https://autoinstall.plesk.com/plesk-installer"
    assert installer_line(commands) == ["/root/plesk-installer", "install", "plesk", "--preset", "Recommended"]
    assert commands[-1] == "rm -f /root/plesk-installer"  # the installer does not stay in the image


def test_an_overlays_release_preset_installer_and_mirror_reach_the_vm_pass(write_yaml) -> None:
    overlay = write_yaml("plesk-mirror.yaml", """\
settings:
  plesk:
    installer_url: https://plesk-mirror.example.net/plesk-installer
    release: PLESK_18_0_71
    installation_type: Full
    source: https://plesk-mirror.example.net/
vm_bake_commands: [touch /root/after-plesk]
""")
    profile = resolve("plesk", 12, [overlay])
    runcmd = yaml.safe_load(render_vm_pass_user_data(profile, "ssh-ed25519 AAAA build"))["runcmd"]
    assert "wget -q -O /root/plesk-installer https://plesk-mirror.example.net/plesk-installer" in runcmd
    assert installer_line(runcmd) == ["/root/plesk-installer", "install", "PLESK_18_0_71", "--preset", "Full",
                                      "--source", "https://plesk-mirror.example.net/"]
    assert runcmd[-1] == "touch /root/after-plesk"  # an overlay's own commands run once Plesk is there


@pytest.mark.parametrize(("release", "args"), [("current", ["plesk"]), ("18.0.71", ["plesk", "18.0.71"]),
                                               ("testing", ["testing"]), ("PLESK_18_0_71", ["PLESK_18_0_71"])])
def test_each_release_form_becomes_the_installers_release_argument(write_yaml, release, args) -> None:
    overlay = write_yaml("o.yaml", f"settings: {{plesk: {{release: '{release}'}}}}\n")
    assert installer_line(resolve("plesk", 12, [overlay]).content.vm_bake_commands)[2:-2] == args


@pytest.mark.parametrize(("line", "message"), [
    ("release: latest", "settings.plesk.release: 'latest' is not 'current', 'testing', a release id"),
    ("installation_type: Typical", "settings.plesk.installation_type: Input should be 'Recommended' or 'Full'"),
    ("source: 'ftp://mirror; rm -rf /'", "settings.plesk.source: 'ftp://mirror; rm -rf /' is not a URL"),
])
def test_a_mistaken_plesk_setting_is_refused_naming_the_overlay_and_key(write_yaml, line, message) -> None:
    overlay = write_yaml("cust.yaml", f"settings:\n  plesk:\n    {line}\n")
    with pytest.raises(InputError) as excinfo:
        resolve("plesk", 12, [overlay])
    assert f"cust.yaml: {message}" in str(excinfo.value.message)


def test_a_profile_without_the_plesk_role_gets_no_installer() -> None:
    assert not any("plesk" in c for c in resolve("web", 12).content.vm_bake_commands)
