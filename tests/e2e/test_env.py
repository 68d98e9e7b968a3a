"""Hosting environments on the lb + 2 web + nfs + SQL pair cluster: `golden env apply` creates, changes and
prunes three environments; A's PHP and SFTP cannot reach B; certificates come from a Pebble on the host, whose
HTTP-01 validations reach the load balancer's port 80 (forwarded to the host's loopback); each site answers
HTTPS with its own certificate on every web node and through the load balancer's port 443 (passed through).

Marked `vm` and `env`: `make test-env` runs them (not `make test` for now).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from goldenimage.cli import main
from goldenimage.verify.vm import VM
from tests.e2e.cluster_boot import booted_cluster
from tests.e2e.test_cluster_sql import wait_firstboot
from tests.pebble_server import free_port, pebble_server

pytestmark = [pytest.mark.vm, pytest.mark.env]
LB_HTTP = free_port()

CLUSTER = {
    "name": "envs",
    "network": "10.10.0.0/24",
    "interface": {"mac_prefix": "52:54:00:10:00", "name": "eth1"},
    "uplink": {"mac_prefix": "52:54:00:20:00", "name": "eth0"},
    "hosts": [
        {"name": "db1", "profile": "sql-primary", "address": "10.10.0.11"},
        {"name": "db2", "profile": "sql-replica", "address": "10.10.0.12", "primary": "db1"},
        {"name": "nfs1", "profile": "nfs", "address": "10.10.0.30", "exports": ["/srv/nfs/www"]},
        {"name": "web1", "profile": "web", "address": "10.10.0.21", "lb": "lb1", "nfs": "nfs1"},
        {"name": "web2", "profile": "web", "address": "10.10.0.22", "lb": "lb1", "nfs": "nfs1"},
        {"name": "lb1", "profile": "lb", "address": "10.10.0.10"},
    ],
}
DOMAIN = "{}.golden-test.net"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, VM], Path]]:
    tmp = tmp_path_factory.mktemp("env")
    # six guests on two cores under TCG: each gets a third of a core, and a SQL host needs about 250 s of CPU to SSH
    with booted_cluster(CLUSTER, tmp, forwards={"lb1": [f"hostfwd=tcp:127.0.0.1:{LB_HTTP}-:80"]},
                        ssh_timeout=2400) as vms:
        for vm in vms.values():
            wait_firstboot(vm, timeout=2400)
        yield vms, tmp


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    with pebble_server(tmp_path_factory.mktemp("pebble"), LB_HTTP) as server:
        yield server


def golden(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = main(list(argv))
    out = capsys.readouterr().out
    with capsys.disabled():
        print(out)
    return status, out


def write_envs(tmp: Path, names: list[str], sftp_key: str, domain_of: dict[str, str] | None = None) -> Path:
    path = tmp / "envs.yaml"
    path.write_text(yaml.safe_dump({"environments": [
        {"name": n, "domains": [(domain_of or {}).get(n, DOMAIN.format(n))], "ssh_authorized_keys": [sftp_key],
         "php": {"max_children": 3}} for n in names]}))
    return path


def env_args(vms: dict[str, VM], tmp: Path, pebble: tuple[str, str]) -> list[str]:
    inventory = tmp / "inventory.yaml"
    inventory.write_text(yaml.safe_dump({"user": "debian", "hosts": {
        name: f"127.0.0.1:{vm.ssh_port}" for name, vm in vms.items()}}))
    directory, ca = pebble
    return ["--cluster", str(tmp / "cluster.yaml"), "--inventory", str(inventory), "--identity", str(vms["db1"].key),
            "--known-hosts", str(tmp / "known_hosts"), "--accept-new-host-key", "--acme-directory", directory,
            "--acme-ca-bundle", ca, "--acme-account-key", str(tmp / "acme-account.pem")]


PROBE = """<?php
mysqli_report(MYSQLI_REPORT_OFF);  // PHP 8.1+ throws on a refused connection or database: answer false instead
$out = [];
foreach (['/srv/env/beta/htdocs/secret.txt', '/srv/env/beta/conf/database.ini', '/srv/env/beta/tmp/t',
          '/srv/env/beta/sessions/sess_x', '/etc/passwd'] as $f) { $out[$f] = @file_get_contents($f) !== false; }
$own = parse_ini_file('/srv/env/alpha/conf/database.ini');
$db = @new mysqli($own['host'], $own['user'], $own['password']);
$out['own_db'] = !$db->connect_errno && $db->select_db('alpha_1');
$out['other_db'] = !$db->connect_errno && @$db->select_db('beta_1');
echo json_encode($out);
"""


def test_environments_created_isolated_certified_changed_and_pruned(cluster, pebble, capsys, tmp_path):
    vms, tmp = cluster
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "sftp")], check=True)
    sftp_key = (tmp_path / "sftp.pub").read_text().strip()
    args = env_args(vms, tmp, pebble)
    names = ["alpha", "beta", "gamma"]

    status, out = golden(capsys, "env", "apply", str(write_envs(tmp_path, names, sftp_key)), *args)
    assert status == 0, out
    status, out = golden(capsys, "env", "apply", str(write_envs(tmp_path, names, sftp_key)), *args)
    assert status == 0 and re.search(r"^changed: 0,", out, re.MULTILINE), out

    web1 = vms["web1"]
    # each site answers HTTPS on every web node with its own certificate from the test CA
    for node in ("web1", "web2"):
        for name in names:
            cert = vms[node].ssh(f"echo | openssl s_client -connect 127.0.0.1:443 -servername {DOMAIN.format(name)} "
                                 "2>/dev/null | openssl x509 -noout -issuer -ext subjectAltName").stdout
            assert "Pebble" in cert and DOMAIN.format(name) in cert, (node, name, cert)
    # ... and through the load balancer's port 443, passed through (TLS ends on the web nodes): twice per site,
    # so that round robin reaches both nodes
    for name in names * 2:
        cert = vms["lb1"].ssh(f"echo | openssl s_client -connect 10.10.0.10:443 -servername {DOMAIN.format(name)} "
                              "2>/dev/null | openssl x509 -noout -issuer -ext subjectAltName").stdout
        assert "Pebble" in cert and DOMAIN.format(name) in cert, ("lb1:443", name, cert)
    # HTTP redirects to HTTPS, through the load balancer
    location = vms["lb1"].ssh(f"curl -s -o /dev/null -w '%{{redirect_url}}' -H 'Host: {DOMAIN.format('alpha')}' "
                              "http://10.10.0.10/x").stdout
    assert location == f"https://{DOMAIN.format('alpha')}/x"

    # isolation: alpha's PHP reads none of beta's files, sessions, temporary files, nor its database
    web1.ssh("echo secret | sudo tee /srv/env/beta/htdocs/secret.txt /srv/env/beta/tmp/t "
             "/srv/env/beta/sessions/sess_x >/dev/null; sudo chown beta:beta /srv/env/beta/htdocs/secret.txt "
             "/srv/env/beta/tmp/t /srv/env/beta/sessions/sess_x")
    web1.ssh("sudo tee /srv/env/alpha/htdocs/probe.php >/dev/null", input=PROBE)
    web1.ssh("sudo chown alpha:alpha /srv/env/alpha/htdocs/probe.php")
    answer = web1.ssh(f"curl -sk -w '\\n%{{http_code}}' --resolve {DOMAIN.format('alpha')}:443:127.0.0.1 "
                      f"https://{DOMAIN.format('alpha')}/probe.php").stdout
    body, _, code = answer.rpartition("\n")
    if code != "200":
        log = web1.ssh("sudo tail -n 20 /var/log/apache2/error.log /var/log/php*-fpm.log", check=False).stdout
        pytest.fail(f"probe.php answered {code}: {body[:500]}\n{log}")
    result = json.loads(body)
    assert result["own_db"] is True, result
    assert not any(v for k, v in result.items() if k != "own_db"), result
    # beyond open_basedir, the files' own permissions: alpha's account cannot read beta's tree
    denied = web1.ssh("sudo -u alpha cat /srv/env/beta/htdocs/secret.txt", check=False)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr

    # SFTP: alpha's key logs into its chroot only; no shell
    sftp = subprocess.run(["sftp", "-q", "-i", str(tmp_path / "sftp"), "-P", str(web1.ssh_port),
                           "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={tmp_path / 'kh'}",
                           "-b", "-", "alpha@127.0.0.1"], input="pwd\nls /\ncd /etc\n", capture_output=True,
                          text=True, timeout=60)
    assert "Remote working directory: /htdocs" in sftp.stdout, sftp
    listing = sftp.stdout.split("sftp> ls /")[-1].split("sftp> cd")[0]  # the root the account sees: its home
    assert set(listing.split()) == {"/conf", "/htdocs", "/sessions", "/tmp"}, sftp.stdout
    shell = subprocess.run(["ssh", "-i", str(tmp_path / "sftp"), "-p", str(web1.ssh_port), "-o",
                            "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={tmp_path / 'kh'}",
                            "alpha@127.0.0.1", "id"], capture_output=True, text=True, timeout=60)
    assert "uid=" not in shell.stdout

    # a changed domain changes that environment only; a removed one stays until --prune
    changed = write_envs(tmp_path, names[:2], sftp_key, {"beta": DOMAIN.format("beta2")})
    status, out = golden(capsys, "env", "apply", str(changed), *args)
    assert status == 0 and "no longer declared: kept" in out and "golden-env-alpha" not in out, out
    status, out = golden(capsys, "env", "apply", str(changed), "--prune", *args)
    assert status == 0, out
    assert web1.ssh("test -d /srv/env/gamma", check=False).returncode != 0
    assert web1.ssh("sudo ls /var/lib/golden/env-archive/ | grep -c '^gamma-'").stdout.strip() == "1"  # 0700 root
    assert vms["db1"].ssh("sudo test -s /var/lib/golden/env-archive/gamma-databases.sql", check=False).returncode == 0
    status, out = golden(capsys, "env", "list", *args[:8])
    assert status == 0 and "alpha" in out and "gamma" not in out and "MISSING" not in out, out
