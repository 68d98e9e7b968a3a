"""web: the shared docroot from NFS when the settings name one (and its watcher, which the health endpoint
reads), Apache vhosts from the settings, and the health endpoint answering, which is what puts this node into
its load balancer's pool."""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from typing import Any

from .. import share_watch
from ..services import ensure_running, plan_running, wait_serving
from ..steps import Context, step
from ..system import HOST, FirstbootError, SettingsError

SNAKEOIL_KEY = "/etc/ssl/private/ssl-cert-snakeoil.key"
SNAKEOIL_CERT = "/etc/ssl/certs/ssl-cert-snakeoil.pem"
SITES_AVAILABLE = "/etc/apache2/sites-available"
SITES_ENABLED = "/etc/apache2/sites-enabled"
HOSTNAME = re.compile(r"^[A-Za-z0-9*][A-Za-z0-9.*-]*$")
#: hard: a dead server never turns into silent I/O errors or corrupt writes (nfs(5)); the waits are killable, which
#: the share watcher and PHP-FPM's request_terminate_timeout rely on. timeo=100 (10 s) rather than TCP's 60 s:
#: requests waiting on a server that returns are sent again sooner.
NFS_OPTIONS = "rw,hard,timeo=100,retrans=3,_netdev,nofail"


def fstab_line(nfs: dict[str, Any], default_mount: str) -> str:
    mount = nfs.get("mount") or default_mount
    return "{}:{} {} nfs {} 0 0".format(nfs["server"], nfs["export"], mount, nfs.get("options") or NFS_OPTIONS)


def mounted_from(ctx: Context, mount: str) -> str:
    """The source mounted on `mount` ('' when nothing is)."""
    for line in (ctx.read("/proc/mounts") or "").splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[1] == mount:
            return fields[0]
    return ""


#: DER of the rsaEncryption algorithm identifier's OID (1.2.840.113549.1.1.1), early in a PKCS#8 RSA key.
RSA_OID = bytes.fromhex("06092a864886f70d010101")


def is_rsa_key(pem: str) -> bool:
    """Whether a PEM private key is RSA (PKCS#1, or PKCS#8 naming rsaEncryption); False for anything else."""
    if "BEGIN RSA PRIVATE KEY" in pem:
        return True
    body = "".join(line.strip() for line in pem.splitlines() if line.strip() and not line.startswith("-----"))
    try:
        der = base64.b64decode(body, validate=True)
    except (ValueError, binascii.Error):
        return False
    return RSA_OID in der[:32]


def web_units(ctx: Context) -> list[str]:
    """Apache and the release's PHP-FPM: what answers the health endpoint."""
    php = (ctx.image.get("release_vars") or {}).get("php")
    return ["apache2"] + ([f"php{php}-fpm"] if php else [])


@step("web.snakeoil", roles=["web"], early=True)
def snakeoil(ctx: Context) -> bool:
    """This instance's own self-signed pair for Apache's default TLS site (the image carries none): an ECDSA
    P-256 key, made in a fraction of a second even on a starved host, never under a unit's start timeout."""
    key, cert = ctx.path(SNAKEOIL_KEY), ctx.path(SNAKEOIL_CERT)
    replacing = False
    if os.path.isfile(key) and os.path.getsize(key) and os.path.isfile(cert) and os.path.getsize(cert):
        if not is_rsa_key(ctx.read(SNAKEOIL_KEY) or ""):
            return False
        # A host converged by `golden apply` has the RSA pair ssl-cert's postinst made when the package was
        # installed there: replaced once by the pair every image's clone has, then kept like theirs.
        replacing = True
    name = ctx.hostname()
    os.makedirs(os.path.dirname(key), exist_ok=True)
    os.makedirs(os.path.dirname(cert), exist_ok=True)
    tmp_key, tmp_cert = key + ".golden-new", cert + ".golden-new"
    # The key is made private before it holds anything: openssl writes into a file that is already 0640.
    with open(os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640), "w"):
        pass
    os.chmod(tmp_key, 0o640)
    ctx.chown(tmp_key, "root", "ssl-cert")
    ctx.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-sha256", "-days", "3650", "-subj", "/CN=" + name, "-addext", "subjectAltName=DNS:" + name,
             "-keyout", tmp_key, "-out", tmp_cert])
    os.chmod(tmp_cert, 0o644)
    os.rename(tmp_cert, cert)
    os.rename(tmp_key, key)
    ctx.log(f"made this instance's snakeoil certificate for {name} (ECDSA P-256)"
            + (", replacing ssl-cert's RSA pair" if replacing else ""))
    if replacing:
        ctx.run(["systemctl", "try-reload-or-restart", "apache2.service"])
    return True


@snakeoil.planner
def _snakeoil_plan(ctx: Context) -> list[str]:
    key, cert = ctx.path(SNAKEOIL_KEY), ctx.path(SNAKEOIL_CERT)
    if not (os.path.isfile(key) and os.path.getsize(key) and os.path.isfile(cert) and os.path.getsize(cert)):
        return [f"make this instance's snakeoil pair ({SNAKEOIL_CERT})"]
    if is_rsa_key(ctx.read(SNAKEOIL_KEY) or ""):
        return [f"replace ssl-cert's RSA snakeoil pair ({SNAKEOIL_CERT}) by an ECDSA one"]
    return []


@step("web.nfs-mount", roles=["web"], activate=["web.nfs"], require=["web.nfs.server", "web.nfs.export"])
def nfs_mount(ctx: Context) -> bool:
    """An fstab entry (_netdev, nofail) for the shared docroot, mounted; retried while the server is down."""
    nfs = ctx.get("web.nfs")
    mount = nfs.get("mount") or ctx.get("web.document_root", "/var/www/html")
    line = fstab_line(nfs, mount)
    fstab = ctx.read("/etc/fstab") or ""
    # One managed line per mount point: a changed server or export replaces it, other lines stay.
    kept = [entry for entry in fstab.splitlines() if entry.split()[1:2] != [mount] or entry.startswith("#")]
    wanted = "\n".join(kept + [line]) + "\n"
    changed = ctx.write("/etc/fstab", wanted) if line not in fstab.splitlines() else False
    source = "{}:{}".format(nfs["server"], nfs["export"])
    current = mounted_from(ctx, mount)
    if current == source:
        return changed
    if current:
        ctx.run(["umount", mount])
    os.makedirs(ctx.path(mount), exist_ok=True)
    ctx.retry(lambda: ctx.run(["mount", mount]), f"mounting {source} on {mount}")
    return True


@nfs_mount.planner
def _nfs_mount_plan(ctx: Context) -> list[str]:
    nfs = ctx.get("web.nfs")
    mount = nfs.get("mount") or ctx.get("web.document_root", "/var/www/html")
    plan = []
    if fstab_line(nfs, mount) not in (ctx.read("/etc/fstab") or "").splitlines():
        plan.append(f"/etc/fstab: the entry for {mount}")
    source = "{}:{}".format(nfs["server"], nfs["export"])
    current = mounted_from(ctx, mount)
    if current != source:
        plan.append(f"mount {source} on {mount}" + (f" (now {current})" if current else ""))
    return plan


SHARE_UNIT_PATH = "/etc/systemd/system/" + share_watch.UNIT


def share_watch_unit() -> str:
    """golden-share-watch.service: the watcher, restarted whenever it stops; its status directory goes with it
    (no status file means no fresh answer: the health endpoint then fails, as it should)."""
    return "\n".join([
        "[Unit]",
        "Description=goldenimage: watch the shared docroot (NFS) for the web health endpoint",
        "After=network-online.target remote-fs.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "ExecStart=/usr/local/sbin/golden-firstboot share-watch",
        "Restart=always",
        "RestartSec=2",
        "RuntimeDirectory=" + os.path.basename(share_watch.STATUS_DIR),
        "RuntimeDirectoryMode=0755",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


@step("web.share-watch", roles=["web"], activate=["web.nfs"], require=["web.nfs.server", "web.nfs.export"])
def share_watch_service(ctx: Context) -> bool:
    """The watcher of the shared docroot (golden-share-watch.service), configured and running: the health
    endpoint answers 503 while the share does not answer, and 200 again once it does, with no reboot."""
    nfs = ctx.get("web.nfs")
    mount = nfs.get("mount") or ctx.get("web.document_root", "/var/www/html")
    conf = json.dumps({"mount": mount, "source": "{}:{}".format(nfs["server"], nfs["export"])}, sort_keys=True)
    # Readable by all: health.php (www-data) only needs to know that this host's docroot is a share.
    changed = ctx.write(share_watch.CONF, conf + "\n", 0o644)
    if ctx.write(SHARE_UNIT_PATH, share_watch_unit()):
        ctx.run(["systemctl", "daemon-reload"])
        changed = True
    if changed and ctx.run(["systemctl", "is-active", "--quiet", share_watch.UNIT], check=False).returncode == 0:
        ctx.run(["systemctl", "restart", share_watch.UNIT])
    return ensure_running(ctx, share_watch.UNIT) or changed


@share_watch_service.planner
def _share_watch_plan(ctx: Context) -> list[str]:
    nfs = ctx.get("web.nfs")
    mount = nfs.get("mount") or ctx.get("web.document_root", "/var/www/html")
    conf = json.dumps({"mount": mount, "source": "{}:{}".format(nfs["server"], nfs["export"])}, sort_keys=True)
    plan = [path for path, content in ((share_watch.CONF, conf + "\n"), (SHARE_UNIT_PATH, share_watch_unit()))
            if ctx.differs(path, content)]
    return plan + plan_running(ctx, share_watch.UNIT)


def vhost_file(server_name: str) -> str:
    return "{}/golden-{}.conf".format(SITES_AVAILABLE, server_name.replace("*", "_"))


def render_vhost(vhost: dict[str, Any], default_root: str) -> str:
    name = vhost["server_name"]
    root = vhost.get("document_root") or default_root
    lines = [
        f"# goldenimage first boot: vhost {name} (written by golden-firstboot from host.json).",
        "<VirtualHost *:{}>".format(int(vhost.get("port", 80))),
        f"    ServerName {name}",
    ]
    aliases = vhost.get("aliases") or []
    if aliases:
        lines.append("    ServerAlias " + " ".join(aliases))
    lines += [
        f"    DocumentRoot {root}",
        f"    <Directory {root}>",
        "        Options -Indexes +FollowSymLinks",
        "        AllowOverride All",
        "        Require all granted",
        "    </Directory>",
        "    ErrorLog ${{APACHE_LOG_DIR}}/golden-{}-error.log".format(name.replace("*", "_")),
        "    CustomLog ${{APACHE_LOG_DIR}}/golden-{}-access.log combined".format(name.replace("*", "_")),
        "</VirtualHost>",
    ]
    return "\n".join(lines) + "\n"


def _vhosts(ctx: Context) -> list[dict[str, Any]]:
    vhosts = ctx.get("web.vhosts") or []
    for index, vhost in enumerate(vhosts):
        if not HOSTNAME.match(str(vhost.get("server_name") or "")):
            raise SettingsError(f"{HOST}: web.vhosts[{index}].server_name: missing or not a host name",
                                hint="e.g. server_name: www.example.com")
        for name in vhost.get("aliases") or []:
            if not HOSTNAME.match(str(name)):
                raise SettingsError(f"{HOST}: web.vhosts[{index}].aliases: {name!r} is not a host name")
    return vhosts


@step("web.vhosts", roles=["web"], activate=["web.vhosts"])
def vhosts(ctx: Context) -> bool:
    """golden-*.conf sites from the settings, enabled; stale golden sites disabled; Apache reloaded."""
    default_root = ctx.get("web.document_root", "/var/www/html")
    changed = False
    wanted = set()
    for vhost in _vhosts(ctx):
        path = vhost_file(vhost["server_name"])
        site = os.path.basename(path)[:-len(".conf")]
        wanted.add(os.path.basename(path))
        os.makedirs(ctx.path(vhost.get("document_root") or default_root), exist_ok=True)
        changed = ctx.write(path, render_vhost(vhost, default_root)) or changed
        if not ctx.exists(f"{SITES_ENABLED}/{site}.conf"):
            ctx.run(["a2ensite", "-q", site])
            changed = True
    available = ctx.path(SITES_AVAILABLE)
    for name in sorted(os.listdir(available)) if os.path.isdir(available) else []:
        if name.startswith("golden-") and name.endswith(".conf") and name not in wanted:
            ctx.log(f"vhost {name} is no longer in the settings: disabling it")
            if ctx.exists(f"{SITES_ENABLED}/{name}"):
                ctx.run(["a2dissite", "-q", name[:-len(".conf")]])
            ctx.remove(f"{SITES_AVAILABLE}/{name}")
            changed = True
    if changed:
        ctx.run(["apache2ctl", "configtest"])
        # A failed or not yet started Apache is started (and restarted within the budget) rather than reloaded.
        if not ensure_running(ctx, "apache2"):
            # Not fatal when Apache is busy starting: web.health checks it runs and restarts it if it fails.
            ctx.run(["systemctl", "reload-or-restart", "apache2"], check=False, timeout=ctx.service_timeout)
    return changed


@vhosts.planner
def _vhosts_plan(ctx: Context) -> list[str]:
    default_root = ctx.get("web.document_root", "/var/www/html")
    plan, wanted = [], set()
    for vhost in _vhosts(ctx):
        path = vhost_file(vhost["server_name"])
        site = os.path.basename(path)[:-len(".conf")]
        wanted.add(os.path.basename(path))
        if ctx.differs(path, render_vhost(vhost, default_root)):
            plan.append(f"{path}: {'differs' if ctx.exists(path) else 'missing'}")
        if not ctx.exists(f"{SITES_ENABLED}/{site}.conf"):
            plan.append(f"enable site {site}")
    available = ctx.path(SITES_AVAILABLE)
    for name in sorted(os.listdir(available)) if os.path.isdir(available) else []:
        if name.startswith("golden-") and name.endswith(".conf") and name not in wanted:
            plan.append(f"disable and remove site {name[:-len('.conf')]} (no longer in the settings)")
    return plan


@step("web.health", roles=["web"])
def health(ctx: Context) -> bool:
    """Apache and PHP-FPM enabled and running (restarted when they failed), then the health endpoint answers
    200: the load balancer's checks then take this node into its pool."""
    path = ctx.get("web.health_path", "/healthz")
    url = "http://127.0.0.1" + path

    def check() -> None:
        status = ctx.http_status(url)
        if status != 200:
            raise FirstbootError(f"{url} answered {status}")

    changed = wait_serving(ctx, web_units(ctx), check, "waiting for the health endpoint " + url)
    lb = ctx.get("web.lb")
    if lb:
        ctx.log("health endpoint {} answers: load balancer {} puts this node into backend {!r} once its check "
                "passes".format(path, lb.get("address", "?"), lb.get("backend", "web")))
    return changed


@health.planner
def _health_plan(ctx: Context) -> list[str]:
    plan = [line for unit in web_units(ctx) for line in plan_running(ctx, unit)]
    url = "http://127.0.0.1" + ctx.get("web.health_path", "/healthz")
    if not plan:
        status = ctx.http_status(url)
        if status != 200:
            plan.append(f"wait for {url} to answer 200 (it answers {status or 'nothing'})")
    return plan


STEPS = [snakeoil, nfs_mount, share_watch_service, vhosts, health]
