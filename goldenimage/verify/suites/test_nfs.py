"""nfs: nfs-kernel-server running and enabled, export root present."""

from __future__ import annotations


def test_packages(host):
    assert host.package("nfs-kernel-server").is_installed


def test_service_running_and_enabled(host):
    service = host.service("nfs-server")
    assert service.is_running and service.is_enabled


def test_export_root_and_listening(host):
    assert host.file("/srv/nfs").is_directory
    assert host.socket("tcp://0.0.0.0:2049").is_listening or host.socket("tcp://:::2049").is_listening
