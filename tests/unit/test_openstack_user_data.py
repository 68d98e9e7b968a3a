"""The OpenStack bake user-data fits Nova's limit (65,535 bytes once base64-encoded) for every profile, release
and example overlay: gzip-compressed, which cloud-init decompresses before it reads the cloud-config."""

from __future__ import annotations

import base64
import gzip
import json
import secrets
import shutil
import subprocess

import pytest

from goldenimage.bake.render_dir import bake_user_data, render
from goldenimage.bake.store import KEY_LENGTH
from goldenimage.bake.validate import cloud_init_schema
from goldenimage.core.errors import InputError
from goldenimage.model.profiles import list_profiles, resolve, supported_releases
from goldenimage.render.packer_template import (
    NOVA_USER_DATA_MAX,
    OPENSTACK_USER_DATA,
    Target,
    openstack_user_data,
    render_template,
)
from tests.conftest import EXAMPLES, TEST_KEY

EXAMPLE_PROFILES = [str(p) for p in sorted(EXAMPLES.glob("*.yaml")) if not p.name.startswith("cluster")]
OVERLAYS = sorted((EXAMPLES / "customers").glob("*.yaml"))
MATRIX = [(name, debian) for name in list_profiles() + EXAMPLE_PROFILES for debian in supported_releases(name)]


def test_the_matrix_covers_every_profile_release_and_overlay():
    names = {name for name, _ in MATRIX}
    assert {"banking-hardened", "web", str(EXAMPLES / "hybrid-web-sql.yaml")} <= names
    assert {d for _, d in MATRIX} == {10, 11, 12, 13} and OVERLAYS


@pytest.mark.parametrize("overlays", [(), *[(o,) for o in OVERLAYS], tuple(OVERLAYS)],
                         ids=lambda o: "+".join(p.stem for p in o) or "no-overlay")
@pytest.mark.parametrize(("name", "debian"), MATRIX, ids=lambda v: str(v).rsplit("/", 1)[-1])
def test_bake_user_data_fits_novas_limit(name, debian, overlays):
    profile = resolve(name, debian, overlays)
    user_data = bake_user_data(profile, TEST_KEY, "f" * KEY_LENGTH)
    sent = base64.b64encode(openstack_user_data(profile, user_data))
    assert len(sent) <= NOVA_USER_DATA_MAX
    assert gzip.decompress(base64.b64decode(sent)).decode() == user_data


def test_uncompressed_the_biggest_profiles_would_not_fit():
    # why the compression is there: banking-hardened's plain user-data is over the limit
    profile = resolve("banking-hardened", 12)
    assert len(base64.b64encode(bake_user_data(profile, TEST_KEY).encode())) > NOVA_USER_DATA_MAX


def test_rendered_openstack_template_sends_the_compressed_file_which_is_the_validated_user_data(tmp_path):
    rendered = render(resolve("banking-hardened", 13), Target.OPENSTACK, tmp_path / "r")
    values = json.loads(rendered.var_file.read_text())
    assert values["user_data_file"] == OPENSTACK_USER_DATA
    compressed = (rendered.directory / OPENSTACK_USER_DATA).read_bytes()
    assert compressed[:2] == b"\x1f\x8b"
    assert gzip.decompress(compressed) == rendered.user_data.read_bytes()
    ok, message = cloud_init_schema(rendered.user_data)
    assert ok, message


@pytest.mark.skipif(not shutil.which("cloud-init"), reason="cloud-init is installed by scripts/install-deps")
def test_cloud_init_reads_the_gzip_user_data_as_the_cloud_config(tmp_path):
    # cloud-init's own user-data conversion (the system's cloud-init, as on the instance) on the bytes Nova gets
    rendered = render(resolve("web", 12), Target.OPENSTACK, tmp_path / "r")
    script = ("import sys; from cloudinit.user_data import convert_string; "
              "sys.stdout.buffer.write(convert_string(open(sys.argv[1], 'rb').read()).get_payload(decode=True))")
    proc = subprocess.run(["/usr/bin/python3", "-c", script, str(rendered.directory / OPENSTACK_USER_DATA)],
                          capture_output=True, timeout=60, check=True)
    assert proc.stdout == rendered.user_data.read_bytes()


def test_user_data_over_the_limit_even_compressed_is_refused(write_yaml):
    noise = base64.b64encode(secrets.token_bytes(60000)).decode()
    overlay = write_yaml("big.yaml", f"files:\n  - path: /opt/blob\n    content: {noise}\n")
    profile = resolve("web", 12, [overlay])
    with pytest.raises(InputError) as exc:
        openstack_user_data(profile, bake_user_data(profile, TEST_KEY))
    assert "Nova" in str(exc.value) and "web" in str(exc.value)


def test_openstack_picks_the_newest_image_of_the_name_and_ssh_over_ipv4():
    template, values = render_template(resolve("banking-hardened", 12), Target.OPENSTACK)
    source = template["source"]["openstack"]["golden"]
    assert "source_image_name" not in source
    assert source["source_image_filter"] == {"filters": {"name": "${var.source_image_name}"}, "most_recent": True}
    assert values["source_image_name"] == "golden-base-debian12-separate-mounts"
    assert source["ssh_ip_version"] == "4"
