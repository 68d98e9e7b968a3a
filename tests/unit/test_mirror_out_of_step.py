"""A mirror whose index lists a file its pool answers 404 for (deb.debian.org's bullseye-security since the end
of its LTS): the build stops with one line naming the mirror, the suite and the file, and which variable points
the build at another mirror, instead of mmdebstrap's forty lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from goldenimage.bake import base_image
from goldenimage.core.errors import CommandError, GoldenError
from goldenimage.model.releases import matrix

SECURITY_404 = (
    "Get:179 http://deb.debian.org/debian-security bullseye-security/main amd64 sudo 1.9.5p2-3+deb11u4\n"
    "E: Failed to fetch http://deb.debian.org/debian-security/pool/updates/main/l/linux-signed-amd64/"
    "linux-image-cloud-amd64_5.10.262-1_amd64.deb  404  Not Found [IP: 203.0.113.80 80]\n"
    "E: Unable to fetch some archives, maybe run apt-get update or try with --fix-missing?\n"
    "E: mmdebstrap failed to run\n")


def failing_run(stderr: str):
    def run(argv, **kwargs):
        raise CommandError(" ".join(argv[:2]), 25, stderr, hint=kwargs.get("hint"))
    return run


def test_a_file_missing_from_the_security_pool_names_the_mirror_suite_file_and_variable(monkeypatch) -> None:
    monkeypatch.delenv("GOLDEN_SECURITY_MIRROR", raising=False)
    monkeypatch.setattr(base_image, "run", failing_run(SECURITY_404))
    release = matrix().get(11)
    with pytest.raises(GoldenError) as excinfo:
        base_image._mmdebstrap(release, release.mirror, "cloud", Path("/nonexistent"))
    assert not isinstance(excinfo.value, CommandError)
    message = excinfo.value.message
    assert "\n" not in message
    assert message.startswith("the mirror http://deb.debian.org/debian-security (bullseye-security) lists "
                              "linux-image-cloud-amd64_5.10.262-1_amd64.deb in its index, but its pool answers "
                              "404 Not Found for http://deb.debian.org/debian-security/pool/updates/main/l/")
    assert excinfo.value.hint == ("retry once the mirror has caught up, or set GOLDEN_SECURITY_MIRROR to a "
                                  "complete mirror")


def test_a_file_missing_from_the_main_pool_points_at_golden_mirror(monkeypatch) -> None:
    stderr = ("E: Failed to fetch http://mirror.example.net/debian/pool/main/a/apr/libapr1_1.7.0-6_amd64.deb  "
              "404  Not Found [IP: 192.0.2.1 80]\n")
    monkeypatch.setattr(base_image, "run", failing_run(stderr))
    release = matrix().get(12)
    with pytest.raises(GoldenError) as excinfo:
        base_image._mmdebstrap(release, "http://mirror.example.net/debian", "cloud", Path("/nonexistent"))
    assert excinfo.value.message.startswith("the mirror http://mirror.example.net/debian (bookworm) lists "
                                            "libapr1_1.7.0-6_amd64.deb in its index")
    assert "GOLDEN_MIRROR" in str(excinfo.value.hint) and "GOLDEN_SECURITY_MIRROR" not in str(excinfo.value.hint)


def test_any_other_failure_keeps_the_commands_own_error(monkeypatch) -> None:
    monkeypatch.setattr(base_image, "run", failing_run("E: Unable to locate package php9.9-fpm\n"))
    release = matrix().get(12)
    with pytest.raises(CommandError, match="Unable to locate package php9.9-fpm"):
        base_image._mmdebstrap(release, release.mirror, "cloud", Path("/nonexistent"))
