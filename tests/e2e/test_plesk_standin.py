"""The plesk profile's pipeline with a stand-in for Plesk's installer (the real one downloads Plesk from Plesk's
servers, which this machine cannot reach): what this proves is goldenimage's part, not Plesk.

An overlay points `settings.plesk` at a server the test runs on 127.0.0.1 (the bake VM reaches it as 10.0.2.2,
QEMU's address for the host). The bake must fetch the installer from the overlay's address and run it, in the VM
pass, with the overlay's release, preset and mirror; the installer must be gone from the image; `golden verify`
runs the base, hygiene and plesk suites on BIOS and Secure Boot clones; and a clone booted with a licence key in
its host data has first boot hand the key to `plesk bin license --install`.

The stand-in installs what the plesk suite looks for: a `plesk` command that answers `version` (and logs every
call), and the panel's two services (sw-cp-server listening on 8443). Markers `vm`, `plesk`: `make test-plesk`.
"""

from __future__ import annotations

import http.server
import json
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from goldenimage.bake.pipeline import bake
from goldenimage.core.ssh_keys import ephemeral_keypair
from goldenimage.render.seed import write_seed_iso
from goldenimage.render.userdata import render_host_user_data, render_meta_data
from goldenimage.verify.artifact import SUITES_DIR, suites_for
from goldenimage.verify.guest import wait_for_first_boot
from goldenimage.verify.vm import VM
from tests.conftest import ROOT

pytestmark = [pytest.mark.vm, pytest.mark.plesk]
LICENCE = "PLSK.0000.STAND.IN00"

#: Plesk's installer, stood in for: it records its arguments, checks that the mirror given as --source answers,
#: and installs a `plesk` command and the panel's services.
STANDIN_INSTALLER = r"""#!/bin/sh
set -eu
mkdir -p /var/lib/plesk-standin/www
printf '%s\n' "$@" > /var/lib/plesk-standin/installer-args
version=18.0.0
source=
while [ $# -gt 0 ]; do
  case "$1" in
    --source) source="$2"; shift ;;
    PLESK_*) version=$(echo "${1#PLESK_}" | tr _ .) ;;
  esac
  shift
done
[ -z "$source" ] || wget -q -O /var/lib/plesk-standin/probe "${source%/}/standin-probe"
cat > /usr/sbin/plesk <<EOS
#!/bin/sh
echo "\$*" >> /var/log/plesk-standin.log
case "\$1" in
  version) echo "Product version: Plesk Obsidian $version (stand-in)"; echo "    OS version: Debian" ;;
esac
EOS
chmod 0755 /usr/sbin/plesk
cat > /etc/systemd/system/sw-cp-server.service <<EOS
[Unit]
Description=Plesk panel web server (stand-in)
[Service]
ExecStart=/usr/bin/python3 -m http.server 8443 --bind 0.0.0.0 --directory /var/lib/plesk-standin/www
[Install]
WantedBy=multi-user.target
EOS
cat > /etc/systemd/system/sw-engine.service <<EOS
[Unit]
Description=Plesk panel engine (stand-in)
[Service]
ExecStart=/bin/sleep infinity
[Install]
WantedBy=multi-user.target
EOS
systemctl enable sw-cp-server.service sw-engine.service
"""


class StandinServer:
    """The installer at /plesk-installer and the mirror's probe at /mirror/standin-probe, on 127.0.0.1; every
    path asked for is recorded."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                outer.requests.append(self.path)
                body = {"/plesk-installer": STANDIN_INSTALLER.encode(), "/mirror/standin-probe": b"ok\n"}.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> StandinServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def standin() -> Iterator[StandinServer]:
    with StandinServer() as server:
        yield server


@pytest.fixture(scope="module")
def artifact(standin: StandinServer, tmp_path_factory: pytest.TempPathFactory):
    guest_url = f"http://10.0.2.2:{standin.port}"  # QEMU's user network: the host's 127.0.0.1
    overlay = tmp_path_factory.mktemp("overlay") / "plesk-standin.yaml"
    overlay.write_text(f"""\
settings:
  plesk:
    installer_url: {guest_url}/plesk-installer
    release: PLESK_18_0_71
    installation_type: Full
    source: {guest_url}/mirror/
""")
    return bake("plesk", 12, (overlay,), force=True)  # always baked here, never found in the store


def test_the_vm_pass_runs_the_installer_from_the_overlays_address_with_its_settings(standin, artifact):
    runcmd = artifact.manifest().data["route"]["vm_pass_runcmd"]
    installer = [shlex.split(line) for line in runcmd if line.startswith("/root/plesk-installer ")]
    assert installer == [["/root/plesk-installer", "install", "PLESK_18_0_71", "--preset", "Full",
                          "--source", f"http://10.0.2.2:{standin.port}/mirror/"]], runcmd
    # fetched by this bake, once each
    assert standin.requests == ["/plesk-installer", "/mirror/standin-probe"], standin.requests


def test_golden_verify_passes_the_base_hygiene_and_plesk_suites(artifact):
    proc = subprocess.run([sys.executable, "-m", "goldenimage.cli", "verify", str(artifact.qcow2)], cwd=ROOT,
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-3000:]
    # every check of the three suites passed on each clone (BIOS and Secure Boot): the plesk suite ran
    suites = suites_for(["plesk"])
    assert suites[-1].name == "test_plesk.py"
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-c",
                                str(SUITES_DIR / "pytest.ini"), *map(str, suites)],
                               capture_output=True, text=True, check=True).stdout
    checks = sum("::" in line for line in collected.splitlines())
    assert proc.stdout.count(f"{checks} passed") == 2 and " failed" not in proc.stdout, proc.stdout[-3000:]


def test_first_boot_installs_the_licence_from_the_host_data(artifact, tmp_path):
    key = ephemeral_keypair(tmp_path)
    user_data = render_host_user_data("plesk1", {"plesk": {"license_key": LICENCE}}, ssh_authorized_keys=[key.public])
    seed = write_seed_iso(tmp_path / "seed.iso", user_data, render_meta_data("plesk1", "plesk1"), None)
    with VM(artifact.qcow2, seed=seed, key=key, name="plesk1", workdir=tmp_path / "vm", memory_mib=1024) as vm:
        vm.wait_for_ssh(timeout=900)
        vm.wait_cloud_init(timeout=900)
        assert wait_for_first_boot(vm) == "done"
        state = json.loads(vm.ssh("sudo cat /var/lib/golden/plesk.json").stdout)
        assert set(state) == {"settings"}  # a fingerprint, not the key itself
        calls = vm.ssh("sudo cat /var/log/plesk-standin.log").stdout.splitlines()
        assert calls[:2] == ["bin ipmanage --reread", f"bin license --install {LICENCE}"], calls
        # the agent's log and the journal redact the key
        logs = vm.ssh("sudo journalctl -b --no-pager; sudo cat /var/log/golden-firstboot.log 2>/dev/null || true",
                      check=False).stdout
        assert LICENCE not in logs
