"""`golden apply` on hosts that were not baked: the mirror-built base image, booted with nothing but a NoCloud
seed carrying an SSH key (and, for a cluster, its private address), stands in for a provider's bare Debian.

The guests' network is QEMU's user network with `restrict=on`: SSH comes in from 127.0.0.1, and the only way
out is the mirror relay (goldenimage/verify/mirror_relay.py, started by QEMU per connection), which lets apt
reach the Debian mirror's host and nothing else. Marked `vm` and `apply`: `make test-apply` runs them.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from goldenimage.bake.base_image import BaseImage, build_base
from goldenimage.cli import main
from goldenimage.core.errors import GoldenError
from goldenimage.core.run import kill, run, spawn
from goldenimage.core.ssh_keys import SSHKey, ephemeral_keypair
from goldenimage.model.releases import matrix
from goldenimage.render.cluster import render_cluster
from goldenimage.render.seed import write_seed_iso
from goldenimage.render.userdata import render_host_user_data, render_meta_data
from goldenimage.verify.artifact import SUITES_DIR
from goldenimage.verify.l2switch import L2Switch
from goldenimage.verify.mirror_relay import apt_proxy_conf, guestfwd, mirror_hosts
from goldenimage.verify.vm import VM
from tests.conftest import EXAMPLES
from tests.e2e.test_cluster_sql import assert_replicating

pytestmark = [pytest.mark.vm, pytest.mark.apply]
USER = "debian"  # the base image's cloud-init default user: sudo without a password, as on most providers
MANAGED = "/etc/apache2/conf-available/zz-golden-security.conf"
#: base-suite tests that read an artifact's manifest or firmware: an applied host has neither
NOT_FOR_APPLIED = "not image_says and not manifest_lists and not firmware"


def base_or_skip(release: int) -> BaseImage:
    """The mirror-built base of release; the test is skipped, naming the file, only when the mirror's index
    lists a package its pool answers 404 for (Debian 11 here: bullseye-security after the end of its LTS)."""
    try:
        return build_base(matrix().get(release))
    except GoldenError as exc:
        if "is out of step with its own index" not in exc.message:
            raise
        pytest.skip(f"Debian {release} cannot be booted from this mirror: {exc.message}")


def bare_guest(stack: ExitStack, release: int, name: str, key: SSHKey, workdir: Path, *,
               network: str | None = None, mac: str | None = None, uplink_mac: str | None = None,
               switch: L2Switch | None = None) -> VM:
    """A bare Debian booted from the mirror-built base: a key for USER, apt's proxy, maybe a private address."""
    base = base_or_skip(release)
    user_data = render_host_user_data(name, {}, ssh_authorized_keys=[key.public], extra={
        "write_files": [{"path": "/etc/apt/apt.conf.d/00proxy", "content": apt_proxy_conf()}]})
    seed = write_seed_iso(workdir / f"{name}-seed.iso", user_data, render_meta_data(f"bare-{name}", name), network)
    vm = VM(base.path, seed=seed, key=key, user=USER, name=name, workdir=workdir / name, mac=uplink_mac,
            netdev_options=[guestfwd(mirror_hosts(release))],
            extra_args=switch.netdev_args(mac) if switch and mac else (), memory_mib=1536)
    stack.enter_context(vm)
    return vm


def golden(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """`golden ARGV` in this process: (exit status, stdout); its wall time is printed (a figure for the README,
    never asserted)."""
    started = time.monotonic()
    status = main(list(argv))
    out = capsys.readouterr().out
    with capsys.disabled():  # shown with -s; written to the captured stdout, it would be part of the next call's
        sys.stdout.write(out)
        sys.stdout.write(f"[golden {' '.join(argv[:2])}: exit {status} after {time.monotonic() - started:.0f} s]\n")
    return status, out


def ssh_args(vm: VM, known_hosts: Path) -> list[str]:
    return ["--identity", str(vm.key), "--known-hosts", str(known_hosts), "--accept-new-host-key"]


def summary(out: str) -> tuple[int, int]:
    match = re.search(r"^(?:would change|changed): (\d+), unchanged: (\d+)$", out, re.MULTILINE)
    assert match, out
    return int(match.group(1)), int(match.group(2))


def run_web_suites(vm: VM, workdir: Path) -> int:
    """The web testinfra suites (and the base suite, less what reads an artifact) against the applied host."""
    config = workdir / "ssh_config"
    config.write_text("Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
                      "  IdentitiesOnly yes\n  ConnectTimeout 20\n")
    argv = [sys.executable, "-m", "pytest", "-q", "-c", str(SUITES_DIR / "pytest.ini"), "--sudo",
            f"--hosts=ssh://{USER}@127.0.0.1:{vm.ssh_port}", f"--ssh-config={config}",
            f"--ssh-identity-file={vm.key}", "-k", NOT_FOR_APPLIED,
            str(SUITES_DIR / "test_base.py"), str(SUITES_DIR / "test_web.py")]
    return run(argv, check=False, capture=False, timeout=1800).returncode


def apply_killed_while_dpkg_works(argv: list[str], vm: VM, others: list[VM], timeout: float = 2400.0) -> None:
    """`golden ARGV` in a process of its own, killed (SIGKILL, its ssh clients with it) once dpkg is working on
    `vm`; then the agent still running on each guest is killed too, as when the operator's machine and the
    session die at once. dpkg is left wherever it was."""
    proc = spawn([sys.executable, "-c", "import sys; from goldenimage.cli import main; sys.exit(main(sys.argv[1:]))",
                  *argv], stdout=None, stderr=None)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if vm.ssh("pgrep -x dpkg || true", check=False).stdout.strip():
                break
            time.sleep(5)
        assert proc.poll() is None, "the apply finished before dpkg was seen working: nothing was interrupted"
        assert time.monotonic() < deadline, "dpkg never started on the guest"
    finally:
        kill(proc)
    for guest in (vm, *others):
        # every agent run from an apply's directory (converge, or a host already at its role steps: left running,
        # it would wait for its peer beside the rerun's); [g], [.]: the pattern matches neither pkill's own command
        # line nor sudo's
        guest.ssh("sudo pkill -KILL -f '[g]olden-apply[.][^ ]*/golden-firstboot[.]pyz' || true", check=False)


@pytest.fixture
def key(tmp_path: Path) -> SSHKey:
    return ephemeral_keypair(tmp_path)


@pytest.mark.parametrize("release", [12, pytest.param(11, marks=pytest.mark.extended)])
def test_apply_web_to_a_bare_host_passes_the_web_suite_then_changes_nothing_and_repairs_drift(
        release, key, tmp_path, capsys):
    with ExitStack() as stack:
        vm = bare_guest(stack, release, "bare-web", key, tmp_path)
        vm.wait_for_ssh(timeout=900)
        vm.wait_cloud_init(timeout=900)
        known_hosts = tmp_path / "known_hosts"
        host = ["--host", f"{USER}@127.0.0.1:{vm.ssh_port}", *ssh_args(vm, known_hosts)]

        status, out = golden(capsys, "apply", "web", *host)
        assert status == 0, out
        changed, _ = summary(out)
        assert changed > 0 and "apache2" in out
        # the host key was recorded on first sight (ssh-keygen -F: Debian's ssh_config hashes the host names)
        assert run(["ssh-keygen", "-F", f"[127.0.0.1]:{vm.ssh_port}", "-f", str(known_hosts)],
                   check=False).returncode == 0, known_hosts.read_text()
        assert run_web_suites(vm, tmp_path) == 0

        apache_pid = vm.ssh("systemctl show -p MainPID --value apache2").stdout.strip()
        status, out = golden(capsys, "apply", "web", *host)
        assert status == 0 and summary(out)[0] == 0, out
        # nothing changed, so nothing was restarted
        assert vm.ssh("systemctl show -p MainPID --value apache2").stdout.strip() == apache_pid != "0"

        original = vm.ssh(["sudo", "cat", MANAGED]).stdout
        vm.ssh(f"echo 'ServerTokens Full' | sudo tee -a {MANAGED} >/dev/null")
        status, out = golden(capsys, "apply", "web", "--check", *host)
        assert status == 0 and summary(out)[0] >= 1 and MANAGED in out, out
        assert vm.ssh(["sudo", "cat", MANAGED]).stdout != original  # --check changed nothing

        status, out = golden(capsys, "apply", "web", *host)
        assert status == 0 and MANAGED in out, out
        # Apache's configuration changed: Apache is reloaded, PHP-FPM (which ships a file in the same directory) not
        assert "reloaded apache2.service" in out and "reloaded php8.2-fpm" not in out, out
        assert vm.ssh(["sudo", "cat", MANAGED]).stdout == original
        headers = vm.ssh("curl -sI http://127.0.0.1/").stdout
        assert re.search(r"^Server: Apache\r?$", headers, re.MULTILINE), headers  # the restored file is in effect
        status, out = golden(capsys, "apply", "web", *host)
        assert status == 0 and summary(out)[0] == 0, out

        # a role step's drift: Apache stopped; --check lists what web.health would do and changes nothing
        vm.ssh("sudo systemctl stop apache2")
        status, out = golden(capsys, "apply", "web", "--check", *host)
        assert status == 0 and "role step web.health: would change: start apache2.service" in out, out
        assert vm.ssh("systemctl is-active apache2 || true").stdout.strip() != "active"
        status, out = golden(capsys, "apply", "web", *host)
        assert status == 0 and vm.ssh("systemctl is-active apache2").stdout.strip() == "active", out


@pytest.fixture
def sql_cluster(tmp_path: Path, key: SSHKey) -> Iterator[tuple[Path, dict, Path]]:
    """examples/cluster-sql.yaml, and its rendering for the bare guests' private addresses (network-config)."""
    spec = yaml.safe_load((EXAMPLES / "cluster-sql.yaml").read_text())
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(spec))
    seeds = tmp_path / "provider"
    render_cluster(tmp_path / "cluster.yaml", seeds)
    yield tmp_path / "cluster.yaml", json.loads((seeds / "hosts.json").read_text()), seeds


def test_cluster_apply_sql_pair_to_bare_hosts_killed_midway_then_rerun_replicates(sql_cluster, key, tmp_path, capsys):
    cluster_file, hosts, seeds = sql_cluster
    with ExitStack() as stack:
        switch = stack.enter_context(L2Switch())
        vms = {}
        for name in ("db1", "db2"):
            network = (seeds / name / "network-config").read_text()
            vms[name] = bare_guest(stack, 12, name, key, tmp_path, network=network, mac=hosts[name]["mac"],
                                   uplink_mac=hosts[name]["uplink_mac"], switch=switch)
        for vm in vms.values():
            vm.wait_for_ssh(timeout=900)
            vm.wait_cloud_init(timeout=900)
        inventory = tmp_path / "inventory.yaml"
        inventory.write_text(yaml.safe_dump({"user": USER, "hosts": {
            name: f"127.0.0.1:{vm.ssh_port}" for name, vm in vms.items()}}))
        args = ["cluster", "apply", str(cluster_file), "--inventory", str(inventory), "--out", str(tmp_path / "state"),
                *ssh_args(vms["db1"], tmp_path / "known_hosts")]
        # an apply killed midway (while dpkg installs MariaDB's packages on db1), then run again: it converges
        apply_killed_while_dpkg_works(args, vms["db1"], [vms["db2"]])
        print(vms["db1"].ssh("sudo dpkg --audit; ls /var/lib/dpkg/updates", check=False).stdout)
        status, out = golden(capsys, *args)
        assert status == 0, out
        assert "2 of 2 host(s) ok" in out
        # the killed apply's temporary directory (its host.json holds the cluster's secrets) is gone with the rerun's
        assert "db1: note: removed /tmp/golden-apply." in out, out
        for vm in vms.values():
            assert vm.ssh("ls -d /tmp/golden-apply.* 2>/dev/null || true").stdout.strip() == ""
        assert_replicating(vms["db1"], vms["db2"])
        status, out = golden(capsys, *args)
        # every host changed nothing (the total line; one host's line alone could hide the other's changes)
        assert status == 0 and re.search(r"^2 of 2 host\(s\) ok; changed: 0, unchanged: \d+$", out, re.MULTILINE), out
        assert_replicating(vms["db1"], vms["db2"])
