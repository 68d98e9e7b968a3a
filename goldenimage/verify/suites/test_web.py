"""web: Apache 2.4 (event MPM) with PHP-FPM, mod_ssl, the default vhost and the health endpoint."""

from __future__ import annotations


def test_packages(host, php):
    for name in ("apache2", f"php{php}-fpm", "ssl-cert"):
        assert host.package(name).is_installed, name


def test_services_running_and_enabled(host, php):
    for name in ("apache2", f"php{php}-fpm"):
        service = host.service(name)
        assert service.is_running and service.is_enabled, name


def test_listens_on_http_and_https(host):
    assert host.socket("tcp://0.0.0.0:80").is_listening or host.socket("tcp://:::80").is_listening
    assert host.socket("tcp://0.0.0.0:443").is_listening or host.socket("tcp://:::443").is_listening


def test_event_mpm_with_php_fpm_and_ssl(host, php):
    modules = host.run("apachectl -M").stdout
    assert "mpm_event_module" in modules and "mpm_prefork_module" not in modules
    assert "proxy_fcgi_module" in modules and "ssl_module" in modules
    assert host.file(f"/etc/apache2/conf-enabled/php{php}-fpm.conf").exists


def test_health_endpoint_answers_200_with_the_host_name(host):
    out = host.run("curl -s -o /dev/stdout -w '\\n%{http_code}' http://127.0.0.1/healthz")
    body, code = out.stdout.rsplit("\n", 1)
    assert code == "200"
    assert body.strip() == f"ok {host.check_output('hostname')}"


def test_https_health_endpoint_with_this_instances_certificate(host):
    assert host.run("curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1/healthz").stdout == "200"
    key = host.file("/etc/ssl/private/ssl-cert-snakeoil.key")
    assert key.exists and key.user == "root" and key.group == "ssl-cert" and key.mode & 0o007 == 0


def test_server_tokens_hidden(host):
    headers = host.run("curl -sI http://127.0.0.1/").stdout
    assert "Server: Apache\r" in headers or "Server: Apache\n" in headers


def test_snakeoil_pair_is_this_instances_ecdsa_key_made_before_apache(host):
    # made by golden-firstboot-early.service (web.snakeoil), not by make-ssl-cert under Apache's start timeout
    key_type = host.run("sudo openssl pkey -in /etc/ssl/private/ssl-cert-snakeoil.key -noout -text").stdout
    assert "ASN1 OID: prime256v1" in key_type
    subject = host.run("openssl x509 -in /etc/ssl/certs/ssl-cert-snakeoil.pem -noout -subject").stdout
    assert host.check_output("hostname") in subject
    early = host.service("golden-firstboot-early")
    assert early.is_enabled and host.run("systemctl show -p Result --value golden-firstboot-early").stdout.strip() \
        == "success"


def _wait_active(host, unit: str, timeout: int = 180) -> bool:
    """Whether unit is active within timeout seconds (bounded poll in the guest)."""
    cmd = f"for i in $(seq {timeout // 3}); do systemctl is-active --quiet {unit} && exit 0; sleep 3; done; exit 1"
    return host.run(cmd).rc == 0


def test_apache_killed_is_restarted_by_systemd(host):
    # golden-resilience.conf: Restart=on-failure (Debian's unit restarts on abort only)
    before = int(host.check_output("systemctl show -p NRestarts --value apache2"))
    host.run("sudo systemctl kill --signal=SIGKILL apache2")
    assert _wait_active(host, "apache2")
    assert int(host.check_output("systemctl show -p NRestarts --value apache2")) > before


def test_first_boot_rerun_starts_a_stopped_apache_before_waiting_for_health(host):
    host.run("sudo systemctl stop apache2")
    assert host.run("systemctl is-active --quiet apache2").rc != 0
    rerun = host.run("sudo golden-firstboot --rerun")
    assert rerun.rc == 0, rerun.stderr
    assert "apache2 is inactive" in rerun.stderr and "starting it" in rerun.stderr
    assert host.service("apache2").is_running
    assert host.run("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1/healthz").stdout == "200"
