"""The banking variant of Galera: one cluster-wide key at rest and a TLS pair every member shares, generated once
into the cluster secrets (never into an image or a log), installed by first boot on the nodes and the arbitrator;
plain Galera clusters unchanged; a mix of hardened and plain nodes refused."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from goldenimage.model.profiles import resolve
from goldenimage.render.cluster_secrets import generate_tls_bundle, secret_problem
from tests.unit.firstboot_fake import FakeHost, make_root
from tests.unit.test_cluster import host_json, problems, render
from tests.unit.test_galera import GaleraHost

from golden_firstboot.roles import galera, hardened  # isort: skip  (on sys.path through firstboot_fake)
from golden_firstboot.system import FirstbootError, SettingsError  # isort: skip

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BANKING_GALERA = str(EXAMPLES / "banking-sql-galera.yaml")


def banking_cluster() -> dict[str, Any]:
    data = yaml.safe_load((EXAMPLES / "cluster-banking-galera.yaml").read_text())
    for host in data["hosts"]:
        if host["profile"] == "banking-sql-galera.yaml":
            host["profile"] = BANKING_GALERA
    return data


# Rendering


def test_hardened_galera_nodes_share_one_key_and_one_tls_pair_and_the_arbitrator_gets_the_pair(tmp_path):
    out = render(tmp_path, banking_cluster())
    db1, db2, lb1 = (host_json(out, name) for name in ("db1", "db2", "lb1"))
    key = db1["galera"]["encryption_key"]
    assert len(key) == 64 and int(key, 16) >= 0
    assert db2["galera"]["encryption_key"] == key
    tls = db1["galera"]["tls"]
    assert db2["galera"]["tls"] == tls == lb1["lb"]["arbitrator"]["tls"]
    assert "PRIVATE KEY-----" in tls and "-----BEGIN CERTIFICATE-----" in tls
    # hosts.json (no secrets) carries neither
    listing = (out / "hosts.json").read_text()
    assert key not in listing and "PRIVATE KEY" not in listing
    assert stat.S_IMODE((out / "secrets.json").stat().st_mode) == 0o600


def test_a_rerender_keeps_the_key_and_the_pair(tmp_path):
    out = render(tmp_path, banking_cluster())
    first = host_json(out, "db1")["galera"]
    out = render(tmp_path, banking_cluster())
    second = host_json(out, "db1")["galera"]
    assert (first["encryption_key"], first["tls"]) == (second["encryption_key"], second["tls"])


def test_the_secrets_never_reach_the_log(tmp_path):
    # A handler on goldenimage's own logger: caplog misses it once another test made it stop propagating.
    lines: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("goldenimage")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        out = render(tmp_path, banking_cluster())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    text = "\n".join(lines)
    stored = json.loads((out / "secrets.json").read_text())
    body = stored["galera_tls"].split("-----")[2].strip().splitlines()[0]
    assert stored["galera_encryption_key"] not in text and body not in text
    assert "openssl" in text  # the command was logged, without any secret in it


def test_plain_galera_clusters_get_no_key_and_no_tls(tmp_path):
    data = yaml.safe_load((EXAMPLES / "cluster-ha.yaml").read_text())
    out = render(tmp_path, data)
    db1, lb2 = host_json(out, "db1"), host_json(out, "lb2")
    assert "encryption_key" not in db1["galera"] and "tls" not in db1["galera"]
    assert "tls" not in lb2["lb"]["arbitrator"]
    assert "galera_tls" not in json.loads((out / "secrets.json").read_text())


def test_a_mix_of_hardened_and_plain_galera_nodes_is_refused(tmp_path):
    data = banking_cluster()
    data["hosts"][1]["profile"] = "sql-galera"
    lines = problems(tmp_path, data)
    assert any("hosts[1]" in line and "db2 is a plain sql-galera node, but db1 is hardened" in line
               for line in lines), lines


def test_a_key_from_a_file_must_be_hex(tmp_path):
    (tmp_path / "key").write_text("not-a-key\n")
    data = banking_cluster()
    data["secrets"]["galera_encryption_key"] = {"file": str(tmp_path / "key")}
    lines = problems(tmp_path, data)
    assert any("secrets.galera_encryption_key: not a key of 32, 48 or 64 hex digits" in line for line in lines)
    assert not any("not-a-key" in line for line in lines)  # never echoed


@pytest.mark.parametrize(("name", "value", "bad"), [
    ("galera_encryption_key", "ab" * 32, False),
    ("galera_encryption_key", "ab" * 31, True),
    ("galera_tls", "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n", True),  # no key
    ("replication_password", "two\nlines", True),
])
def test_secret_kinds_are_checked(name, value, bad):
    assert (secret_problem(name, value) is not None) is bad


def test_the_banking_galera_profile_carries_stunnel_and_the_encryption_settings_but_no_key():
    profile = resolve(BANKING_GALERA, 12)
    assert "stunnel4" in profile.packages
    paths = {f.path for f in profile.content.files}
    assert "/etc/golden/mariadb/70-golden-encryption.cnf" in paths
    assert not any(p.startswith(("/etc/mysql/encryption", "/etc/mysql/galera-tls")) for p in paths)
    assert {"/etc/mysql/encryption", "/etc/mysql/galera-tls"} <= set(profile.content.instance_unique)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_the_shared_pair_passes_mutual_verification_over_tls(tmp_path):
    """Each member presents the pair and trusts it as its CA (socket.ssl_ca, stunnel's VERIFY_CA): a TLS
    handshake on loopback with client certificates required and verified on both sides succeeds."""
    key, certs = galera.split_pem(generate_tls_bundle())
    (tmp_path / "key.pem").write_text(key)
    (tmp_path / "cert.pem").write_text(certs)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", "cert.pem", "-key", "key.pem",
         "-CAfile", "cert.pem", "-Verify", "1", "-verify_return_error", "-naccept", "1", "-quiet"],
        cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        client = None
        for _ in range(50):  # bounded: the server needs a moment to listen
            client = subprocess.run(
                ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-cert", "cert.pem", "-key", "key.pem",
                 "-CAfile", "cert.pem", "-verify_return_error", "-brief"],
                cwd=tmp_path, input="", capture_output=True, text=True, timeout=20)
            if "Connection refused" not in client.stderr:
                break
            time.sleep(0.1)
        assert client is not None and client.returncode == 0, client.stderr if client else ""
        assert "Verification: OK" in client.stderr
    finally:
        server.kill()
        server.wait(timeout=10)


# First boot

IMAGE = {"roles": ["hardened", "sql-galera"], "settings": {"galera": {"sst_method": "rsync"}}}


def node_settings(bundle: str, key: str = "ab" * 32) -> dict[str, Any]:
    return {"hostname": "db1", "address": "10.10.0.11", "network": "10.10.0.0/24",
            "galera": {"cluster_name": "bank", "nodes": ["10.10.0.11", "10.10.0.12"], "arbitrators": ["10.10.0.10"],
                       "bootstrap": True, "health_port": 9200, "encryption_key": key, "tls": bundle}}


def bundle() -> str:
    return ("-----BEGIN PRIVATE KEY-----\nS0VZ\n-----END PRIVATE KEY-----\n"
            "-----BEGIN CERTIFICATE-----\nQ0VSVA==\n-----END CERTIFICATE-----\n")


def context(tmp_path: Path, settings: dict[str, Any], files: dict[str, str] | None = None):
    make_root(str(tmp_path), {"image": IMAGE, "host": settings, "files": files or {}})
    fake = FakeHost(str(tmp_path), {"active": ["mariadb"]})
    return fake, fake.context(IMAGE, settings)


def test_a_galera_node_installs_the_clusters_key_not_one_of_its_own(tmp_path):
    _, ctx = context(tmp_path, node_settings(bundle()))
    assert hardened.mariadb_keyfile.apply(ctx)
    assert (tmp_path / hardened.KEY_FILE[1:]).read_text() == "1;" + "ab" * 32 + "\n"
    assert stat.S_IMODE((tmp_path / hardened.KEY_FILE[1:]).stat().st_mode) == 0o400
    assert not hardened.mariadb_keyfile.apply(ctx)  # the second run changes nothing


def test_a_node_holding_another_key_is_never_given_the_clusters(tmp_path):
    _, ctx = context(tmp_path, node_settings(bundle()), files={hardened.KEY_FILE[1:]: "1;" + "cd" * 32 + "\n"})
    with pytest.raises(FirstbootError, match="not the Galera cluster's key"):
        hardened.mariadb_keyfile.apply(ctx)
    assert (tmp_path / hardened.KEY_FILE[1:]).read_text() == "1;" + "cd" * 32 + "\n"


def test_a_malformed_cluster_key_is_refused(tmp_path):
    _, ctx = context(tmp_path, node_settings(bundle(), key="ab" * 32 + "\n"))
    with pytest.raises(SettingsError, match="galera.encryption_key"):
        hardened.mariadb_keyfile.apply(ctx)


def test_the_node_speaks_tls_to_its_peers_and_in_state_transfers(tmp_path):
    settings = node_settings(bundle())
    make_root(str(tmp_path), {"image": IMAGE, "host": settings, "files": {galera.STUNNEL[1:]: ""}})
    fake = GaleraHost(str(tmp_path), peer_primary=False)
    assert galera.cluster.apply(fake.context(IMAGE, settings))
    assert fake.commands.count("galera_new_cluster") == 1
    key = tmp_path / (galera.NODE_TLS_DIR[1:] + "/key.pem")
    cert = tmp_path / (galera.NODE_TLS_DIR[1:] + "/cert.pem")
    assert key.read_text() == "-----BEGIN PRIVATE KEY-----\nS0VZ\n-----END PRIVATE KEY-----\n"
    assert "BEGIN CERTIFICATE" in cert.read_text() and "PRIVATE" not in cert.read_text()
    assert stat.S_IMODE(key.stat().st_mode) == 0o400
    assert stat.S_IMODE(os.stat(key.parent).st_mode) == 0o750
    cnf = (tmp_path / galera.GALERA_CNF[1:]).read_text()
    k, c = galera.NODE_TLS_DIR + "/key.pem", galera.NODE_TLS_DIR + "/cert.pem"
    assert (f'wsrep_provider_options   = "pc.recovery=TRUE;socket.ssl=YES;socket.ssl_key={k};'
            f'socket.ssl_cert={c};socket.ssl_ca={c}"') in cnf
    assert f"[sst]\ntkey     = {k}\ntcert    = {c}\ntca      = {c}\nssl-mode = VERIFY_CA\n" in cnf
    assert "S0VZ" not in cnf  # paths only


def test_a_node_without_stunnel_refuses_to_join_rather_than_transfer_in_clear(tmp_path):
    _, ctx = context(tmp_path, node_settings(bundle()))
    with pytest.raises(FirstbootError, match="stunnel"):
        galera.cluster.apply(ctx)
    assert not (tmp_path / galera.GALERA_CNF[1:]).exists()


def test_plain_nodes_keep_todays_configuration():
    settings = {"cluster_name": "ha", "nodes": ["10.10.0.11", "10.10.0.12"], "arbitrators": ["10.10.0.9"],
                "address": "10.10.0.12", "sst_method": "rsync"}
    text = galera.render_cnf(settings, "db2")
    assert 'wsrep_provider_options   = "pc.recovery=TRUE"\n' in text and "[sst]" not in text and "ssl" not in text


def test_the_arbitrator_joins_the_tls_group_with_the_pair(tmp_path):
    image = {"roles": ["lb"], "settings": {}}
    settings = {"address": "10.10.0.10", "lb": {"arbitrator": {"group": "bank", "nodes": ["10.10.0.11", "10.10.0.12"],
                                                               "tls": bundle()}}}
    make_root(str(tmp_path), {"image": image, "host": settings, "files": {}})
    fake = FakeHost(str(tmp_path), {"active": []})
    assert galera.arbitrator.apply(fake.context(image, settings))
    default = (tmp_path / "etc/default/garb").read_text()
    k, c = galera.ARBITRATOR_TLS_DIR + "/key.pem", galera.ARBITRATOR_TLS_DIR + "/cert.pem"
    assert f'GALERA_OPTIONS="socket.ssl=YES;socket.ssl_key={k};socket.ssl_cert={c};socket.ssl_ca={c}"' in default
    key = tmp_path / k[1:]
    assert stat.S_IMODE(key.stat().st_mode) == 0o440  # root:nogroup: garbd runs as nobody
