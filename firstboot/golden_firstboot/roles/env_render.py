"""env (web nodes): what the env role writes, rendered from one environment's data: the sshd block, the PHP-FPM
pool, the Apache site and the database credentials. Pure functions: env.py compares and writes."""

from __future__ import annotations

from typing import Any

STATE_DIR = "/var/lib/golden/env"
ARCHIVE_DIR = "/var/lib/golden/env-archive"
SSHD_CONFIG = "/etc/ssh/sshd_config"
KEYS_DIR = "/etc/ssh/golden-env-keys"
GROUP = "golden-env"
SITES_AVAILABLE = "/etc/apache2/sites-available"
SITES_ENABLED = "/etc/apache2/sites-enabled"
SITE_PREFIX = "golden-env-"
#: Where the ACME challenge answers live on every web node (the same files on each: see acme.py).
CHALLENGE_DIR = "/var/lib/golden/acme-challenge"
CERT_DIR = "/etc/golden/env-certs"
SNAKEOIL_KEY = "/etc/ssl/private/ssl-cert-snakeoil.key"
SNAKEOIL_CERT = "/etc/ssl/certs/ssl-cert-snakeoil.pem"
APACHE_MODULES = ("ssl", "rewrite", "proxy_fcgi", "setenvif")
NOLOGIN = "/usr/sbin/nologin"
SSHD_BEGIN = "# BEGIN golden-env (golden env apply: SFTP-only, chrooted environment accounts)"
SSHD_END = "# END golden-env"
#: Functions no customer's PHP runs: they would leave the pool's limits (processes outside FPM's control).
DISABLED_FUNCTIONS = "exec,passthru,shell_exec,system,proc_open,popen,pcntl_exec"


def sshd_block(root: str) -> str:
    """The Match block every environment account falls under: SFTP only, chrooted, key only, no forwarding."""
    return "\n".join([
        SSHD_BEGIN,
        "Match Group " + GROUP,
        f"    ChrootDirectory {root}/%u",
        "    ForceCommand internal-sftp -d /htdocs",
        f"    AuthorizedKeysFile {KEYS_DIR}/%u",
        "    PasswordAuthentication no",
        "    KbdInteractiveAuthentication no",
        "    AllowTcpForwarding no",
        "    AllowAgentForwarding no",
        "    AllowStreamLocalForwarding no",
        "    PermitTunnel no",
        "    X11Forwarding no",
        "    PermitTTY no",
        SSHD_END,
    ]) + "\n"


#: PHP-FPM's [global] settings the env role owns, in pool.d (a [global] section there applies to the master);
#: not a pool's name: those start with golden-env-.
FPM_LIMITS = "golden-fpm-limits.conf"
#: The master's open files: a socket per pool, and two pipes per running child (catch_workers_output): room
#: for several thousand pools on one node, more than its memory holds.
FPM_MAX_FILES = 16384
#: Each pool's processes keep the usual limit (what a customer's PHP gets).
POOL_MAX_FILES = 1024


def render_fpm_limits() -> str:
    return "\n".join(["; goldenimage: PHP-FPM's master for many environments (golden env apply)", "[global]",
                      f"rlimit_files = {FPM_MAX_FILES}"]) + "\n"


def pool_name(name: str) -> str:
    return "golden-env-" + name


def socket_path(name: str) -> str:
    return f"/run/php/{pool_name(name)}.sock"


def render_pool(env: dict[str, Any], root: str) -> str:
    """The environment's PHP-FPM pool: its own account, ondemand with bounded children, its own tree only."""
    name, php = env["name"], env["php"]
    home = f"{root}/{name}"
    admin = [
        ("open_basedir", home + "/"),
        ("upload_tmp_dir", home + "/tmp"),
        ("sys_temp_dir", home + "/tmp"),
        ("session.save_path", home + "/sessions"),
        ("memory_limit", "{}M".format(php["memory_limit_mb"])),
        ("max_execution_time", str(php["max_execution_time"])),
        ("upload_max_filesize", "{}M".format(php["upload_max_mb"])),
        ("post_max_size", "{}M".format(php["upload_max_mb"])),
        ("disable_functions", DISABLED_FUNCTIONS),
    ]
    lines = [
        f"; goldenimage: environment {name} (golden env apply)",
        f"[{pool_name(name)}]",
        "user = " + name,
        "group = " + name,
        "listen = " + socket_path(name),
        "listen.owner = www-data",
        "listen.group = www-data",
        "listen.mode = 0660",
        "pm = ondemand",
        "pm.max_children = {}".format(php["max_children"]),
        "pm.process_idle_timeout = 10s",
        "pm.max_requests = 500",
        "request_terminate_timeout = {}".format(php["max_execution_time"] + 10),
        f"rlimit_files = {POOL_MAX_FILES}",
        "chdir = " + home + "/htdocs",
        "clear_env = yes",
        "env[TMPDIR] = " + home + "/tmp",
        "env[TMP] = " + home + "/tmp",
    ]
    lines += [f"php_admin_value[{k}] = {v}" for k, v in admin]
    return "\n".join(lines) + "\n"


def cert_paths(name: str) -> tuple:
    return (f"{CERT_DIR}/{name}/fullchain.pem", f"{CERT_DIR}/{name}/privkey.pem")


def render_vhost(env: dict[str, Any], root: str, has_cert: bool) -> str:
    """Port 80 answers the ACME challenge and redirects all else to HTTPS; port 443 serves the site through the
    environment's pool (its own certificate once issued, the host's snakeoil pair until then)."""
    name, domains = env["name"], env["domains"]
    home = f"{root}/{name}"
    cert, key = cert_paths(name) if has_cert else (SNAKEOIL_CERT, SNAKEOIL_KEY)
    names = ["    ServerName " + domains[0]] + (["    ServerAlias " + " ".join(domains[1:])] if domains[1:] else [])
    return "\n".join(
        [f"# goldenimage: environment {name} (golden env apply)", "<VirtualHost *:80>"] + names + [
            f"    Alias /.well-known/acme-challenge/ {CHALLENGE_DIR}/",
            f"    <Directory {CHALLENGE_DIR}>",
            "        Options None",
            "        AllowOverride None",
            "        Require all granted",
            "    </Directory>",
            "    RewriteEngine On",
            "    RewriteCond %{REQUEST_URI} !^/\\.well-known/acme-challenge/",
            "    RewriteRule ^ https://%{HTTP_HOST}%{REQUEST_URI} [R=301,L]",
            "</VirtualHost>",
            "<VirtualHost *:443>",
        ] + names + [
            f"    DocumentRoot {home}/htdocs",
            "    SSLEngine on",
            "    SSLCertificateFile " + cert,
            "    SSLCertificateKeyFile " + key,
            f"    <Directory {home}/htdocs>",
            "        Options -Indexes +SymLinksIfOwnerMatch",
            "        AllowOverride All",
            "        Require all granted",
            "    </Directory>",
            "    <FilesMatch \"\\.php$\">",
            f"        SetHandler \"proxy:unix:{socket_path(name)}|fcgi://{pool_name(name)}\"",
            "    </FilesMatch>",
            f"    ErrorLog ${{APACHE_LOG_DIR}}/{SITE_PREFIX}{name}-error.log",
            f"    CustomLog ${{APACHE_LOG_DIR}}/{SITE_PREFIX}{name}-access.log combined",
            "</VirtualHost>",
        ]) + "\n"


def render_db_ini(env: dict[str, Any], db_address: str) -> str:
    lines = ["; goldenimage: the database account of environment {}".format(env["name"]),
             "host = " + db_address, "user = " + env["name"], "password = " + env["db_password"],
             "prefix = " + env["name"] + "_"]
    lines += ["database = {}_{}".format(env["name"], i) for i in range(1, min(env["databases"], 1) + 1)]
    return "\n".join(lines) + "\n"
