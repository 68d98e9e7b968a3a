"""Every profile x release x target, checked by the real `packer validate` and `cloud-init schema`."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from goldenimage.bake.identity_stub import identity_stub
from goldenimage.bake.packer_cli import validate
from goldenimage.bake.render_dir import render
from goldenimage.bake.validate import check_profile, cloud_init_schema
from goldenimage.model.profiles import list_profiles, resolve
from goldenimage.render.packer_template import Target
from tests.conftest import EXAMPLES, ROOT


def test_real_tools_are_installed():
    # .ci/run installs them (scripts/install-deps); these tests never skip for want of them.
    assert shutil.which("packer") and shutil.which("cloud-init")


@pytest.fixture(scope="module")
def identity_url():
    with identity_stub() as url:
        yield url


@pytest.mark.parametrize("debian", [10, 11, 12, 13])
@pytest.mark.parametrize("name", list_profiles())
def test_profile_validates_for_every_target(name, debian, identity_url):
    checks = check_profile(name, debian, list(Target), identity_url)
    assert len(checks) == 6  # user-data, first-boot example, input safety, three templates
    failed = [f"{c.label}: {c.detail}" for c in checks if not c.ok]
    assert not failed, "\n".join(failed)


def test_hybrid_with_overlay_validates(identity_url):
    checks = check_profile(str(EXAMPLES / "hybrid-web-sql.yaml"), 12, [Target.QEMU], identity_url,
                           (EXAMPLES / "customers" / "acme.yaml",))
    assert all(c.ok for c in checks), [c.detail for c in checks if not c.ok]


def test_packer_validate_rejects_a_broken_template(tmp_path, identity_url):
    # The check can fail: a template with an unknown builder option is refused by packer itself.
    rendered = render(resolve("web", 12), Target.QEMU, tmp_path / "r")
    text = rendered.template.read_text().replace('"disk_image": true', '"disk_imagez": true')
    rendered.template.write_text(text)
    ok, message = validate(rendered.template, rendered.var_file)
    assert not ok and "disk_imagez" in message


def test_cloud_init_schema_rejects_bad_user_data(tmp_path):
    bad = tmp_path / "user-data"
    bad.write_text("#cloud-config\npackages: {not: a list}\nruncmd: 3\n")
    ok, message = cloud_init_schema(bad)
    assert not ok and "runcmd" in message


def test_input_safety_check_fails_a_rendering_that_slipped_an_unsafe_value(tmp_path):
    # The check reads the rendered files themselves: a value the schema would refuse, put there after
    # rendering, is a FAIL.
    from goldenimage.bake.validate import input_safety

    rendered = render(resolve("web", 12), Target.QEMU, tmp_path / "r")
    assert input_safety(rendered, "web").ok
    text = rendered.user_data.read_text().replace("- apache2\n", "- \"apache2; reboot\"\n", 1)
    rendered.user_data.write_text(text)
    check = input_safety(rendered, "web")
    assert not check.ok and "apache2; reboot" in check.detail


def test_make_validate_style_cli_reports_one_line_per_file():
    proc = subprocess.run([sys.executable, "-m", "goldenimage.cli", "validate", "nfs", "--debian", "13"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "6 passed, 0 failed"
    assert all(line.startswith("ok   nfs debian13 ") for line in lines[:-1])


def test_packer_1_6_refuses_required_plugins_so_its_templates_go_without(tmp_path):
    # why the templates depend on the installed Packer: 1.6 rejects the block that 1.7+ needs
    from goldenimage.bake.packer_cli import packer_version

    if packer_version() >= (1, 7, 0):
        pytest.skip("the installed Packer understands required_plugins")
    rendered = render(resolve("web", 12), Target.QEMU, tmp_path / "r", required_plugins=False)
    assert validate(rendered.template, rendered.var_file)[0]
    forced = render(resolve("web", 12), Target.QEMU, tmp_path / "forced", required_plugins=True)
    ok, message = validate(forced.template, forced.var_file)
    assert not ok and "required_plugins" in message
