"""golden doctor: one screen on what this host has and lacks; the mirror checks against a mirror served on
127.0.0.1 (a security pool that answers 404 for a kernel its index lists, as deb.debian.org's bullseye-security
did here)."""

from __future__ import annotations

import lzma
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from goldenimage.bake import build_host as doctor
from goldenimage.cli import main

MISSING = "pool/updates/main/l/linux-signed-amd64/linux-image-6.1.0-99-cloud-amd64_6.1.999-1_amd64.deb"


class _Mirror(BaseHTTPRequestHandler):
    """Every Release file answers; each security index lists one cloud kernel; bullseye-security's pool lacks it."""

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, head: bool) -> None:
        body = b""
        if self.path.endswith("/Release"):
            body = b"Origin: Debian\n"
        elif self.path.endswith("/main/binary-amd64/Packages.xz"):
            suite = self.path.split("/dists/")[1].split("/main/")[0].replace("/", "-")
            body = lzma.compress(f"Package: linux-image-6.1.0-99-cloud-amd64\nVersion: 6.1.999-1\n"
                                 f"Filename: {MISSING.replace('6.1.999', suite)}\n\n".encode())
        elif "/pool/" in self.path and "bullseye-security" not in self.path:
            body = b"deb"
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def mirror(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Mirror)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("GOLDEN_MIRROR", url + "/debian")
    monkeypatch.setenv("GOLDEN_SECURITY_MIRROR", url + "/debian-security")
    monkeypatch.setenv("GOLDEN_ACCEL", "tcg")
    yield url
    server.shutdown()


def test_a_security_pool_missing_a_listed_kernel_is_named_with_its_fix(mirror: str) -> None:
    checks = {c.what: c for c in doctor.diagnose()}
    bullseye = checks["mirror Debian 11 (bullseye)"]
    assert not bullseye.ok and "bullseye-security lists linux-image-6.1.0-99-cloud-amd64" in bullseye.found
    assert "404" in bullseye.found and "GOLDEN_SECURITY_MIRROR" in bullseye.fix
    bookworm = checks["mirror Debian 12 (bookworm)"]
    assert bookworm.ok and "pool complete" in bookworm.found
    assert checks["accelerator"].found == "tcg: set by GOLDEN_ACCEL"


def test_a_missing_tool_comes_with_its_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    check = doctor.mmdebstrap()
    assert not check.ok and check.fix == "apt-get install mmdebstrap"


def test_doctor_exits_0_when_only_a_mirror_is_missing(mirror: str, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "space", lambda what, path: doctor.Check(f"free space ({what})", "plenty"))
    monkeypatch.setattr(doctor, "host", lambda: [doctor.Check("cores", "2")])
    for tool in ("qemu", "ovmf", "packer", "mmdebstrap", "cloud_init"):
        monkeypatch.setattr(doctor, tool, lambda name=tool: doctor.Check(name, "installed"))
    assert main(["doctor"]) == 0  # bullseye's pool is not this host's fault: reported, not fatal
    out = capsys.readouterr().out
    assert "bullseye-security lists" in out and "fix: set GOLDEN_SECURITY_MIRROR" in out
    monkeypatch.setattr(doctor, "ovmf", lambda: doctor.Check("OVMF", "missing", False, "apt-get install ovmf"))
    assert main(["doctor", "--no-network"]) == 1
