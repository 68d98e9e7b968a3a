"""lb: HAProxy with its runtime API socket; keepalived installed but only enabled on request."""

from __future__ import annotations


def test_packages(host):
    assert host.package("haproxy").is_installed
    assert host.package("keepalived").is_installed
    assert host.package("galera-arbitrator-4").is_installed


def test_haproxy_running_enabled_and_config_valid(host):
    service = host.service("haproxy")
    assert service.is_running and service.is_enabled
    assert host.run("haproxy -c -f /etc/haproxy/haproxy.cfg").rc == 0


def test_runtime_api_answers(host):
    out = host.run("echo 'show info' | socat stdio /run/haproxy/admin.sock 2>/dev/null || "
                   "python3 -c \"import socket;s=socket.socket(socket.AF_UNIX);s.connect('/run/haproxy/admin.sock');"
                   "s.sendall(b'show info\\n');print(s.recv(65536).decode())\"")
    assert "Name: HAProxy" in out.stdout


def test_health_monitor(host):
    assert host.run("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8404/healthz").stdout == "200"


def test_keepalived_not_enabled_by_default(host):
    assert not host.service("keepalived").is_enabled


def test_galera_arbitrator_not_enabled_by_default(host):
    assert not host.service("garb").is_enabled
