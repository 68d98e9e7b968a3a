"""Pebble (Let's Encrypt's test CA) on loopback for the tests: its DNS from pebble-challtestsrv (every name is
127.0.0.1), its HTTP-01 validations sent to a port the test chooses (a loopback server, or a port forwarded to a
guest's port 80)."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from goldenimage.verify.vm import free_port


def tls_pair(tmp: Path) -> tuple[Path, Path, Path]:
    """A CA and Pebble's listener certificate for 127.0.0.1 (Pebble's ACME API is HTTPS only)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "golden test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
          .not_valid_after(now + timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths



@contextmanager
def pebble_server(tmp: Path, http_port: int) -> Iterator[tuple[str, str]]:
    """Pebble validating HTTP-01 on 127.0.0.1:http_port: (its directory URL, the CA bundle of its API)."""
    if shutil.which("pebble") is None or shutil.which("pebble-challtestsrv") is None:
        if os.environ.get("CI"):
            pytest.fail("pebble is required: scripts/install-deps installs it")
        pytest.skip("pebble is not installed (scripts/install-deps installs it)")
    ca, cert, key = tls_pair(tmp)
    api, management, dns, dns_management = (free_port() for _ in range(4))
    config = tmp / "pebble.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{api}", "managementListenAddress": f"127.0.0.1:{management}",
        "certificate": str(cert), "privateKey": str(key), "httpPort": http_port, "tlsPort": free_port(),
        "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
    env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0")
    with open(tmp / "pebble.log", "wb") as log:
        dns_server = subprocess.Popen(
            ["pebble-challtestsrv", "-dns01", f"127.0.0.1:{dns}", "-http01", "", "-https01", "", "-tlsalpn01", "",
             "-management", f"127.0.0.1:{dns_management}", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
            stdout=log, stderr=subprocess.STDOUT)
        ca_server = subprocess.Popen(["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{dns}"],
                                     stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp)
        directory = f"https://127.0.0.1:{api}/dir"
        (tmp / "management-url").write_text(f"https://127.0.0.1:{management}")
        context = ssl.create_default_context(cafile=str(ca))
        try:
            for _ in range(100):  # at most 10 s
                try:
                    with urllib.request.urlopen(directory, context=context, timeout=2):
                        break
                except OSError:
                    time.sleep(0.1)
            else:
                pytest.fail("pebble did not answer: " + (tmp / "pebble.log").read_text()[-2000:])
            yield directory, str(ca)
        finally:
            for proc in (ca_server, dns_server):
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()



def issuing_root(tmp: Path) -> str:
    """The root of the certificates the Pebble running in `tmp` issues (PEM, from its management API): what a
    client trusts to check a served chain. Pebble makes a new one each start."""
    base = (tmp / "management-url").read_text()
    context = ssl.create_default_context(cafile=str(tmp / "ca.pem"))
    with urllib.request.urlopen(base + "/roots/0", context=context, timeout=10) as answer:
        return answer.read().decode()
