"""Base images: a cloud-ready Debian qcow2 built without a VM (mmdebstrap + disk assembly), or an
official Debian cloud image fetched and checked; both cached under cache_dir()/base by content key."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..core.errors import CommandError, GoldenError, InputError
from ..core.fs import orphans, sha256_file, work_dir
from ..core.log import info, step
from ..core.paths import cache_dir
from ..core.run import require, run
from ..model.disk_layout import DiskLayout
from ..model.releases import Release
from ..model.support import extended_keyring
from . import stable_pins
from .disk import FIRMWARE, assemble_disk, set_grub_defaults

#: Bump when the recipe below changes what lands in the image: it is part of every base key.
#: 4: package layers (issue 11); 5: GPT, BIOS boot partition and ESP, shim + signed GRUB; 6: no_timer_check
RECIPE_VERSION = 6

MMDEBSTRAP_TIMEOUT = 1800
#: The file form of a package layer kept as a tree (build_layer_tree).
TREE_FORM = "tree.tar.zst"
#: qcow2 cluster compressions: zlib is read by every qemu-img; zstd needs QEMU 5.1+ built with it.
COMPRESSIONS = ("zlib", "zstd")
DOWNLOAD_TIMEOUT = 30  # per socket operation
DOWNLOAD_DEADLINE = 1800  # whole download
#: NoCloud first (seed ISO), then the OpenStack-style config drive and metadata service; None last so
#: that a VM without any datasource still boots to a login.
DATASOURCES = ("NoCloud", "ConfigDrive", "OpenStack", "None")
REQUIRED_TOOLS = ("mmdebstrap", "parted", "mkfs.ext4", "debugfs", "grub-mkimage", "mkfs.vfat", "mcopy", "qemu-img")


@dataclass(frozen=True)
class BaseImage:
    """A base qcow2 in the cache; `source` is "mmdebstrap" or the URL it was downloaded from."""

    path: Path
    sha256: str
    key: str
    release: int
    source: str

    @property
    def firmware(self) -> tuple[str, ...]:
        """What the base boots: ours are hybrid BIOS + UEFI with Secure Boot (disk.FIRMWARE); a downloaded
        image is taken as BIOS only, the one boot every x86 cloud image is known to have."""
        return FIRMWARE if self.source == "mmdebstrap" else ("bios",)


def base_dir() -> Path:
    """Where base images are cached."""
    return cache_dir() / "base"


def resolve_mirror(release: Release, mirror: str | None = None) -> str:
    """The mirror to build from: the argument, else $GOLDEN_MIRROR, else the release's own mirror."""
    return (mirror or os.environ.get("GOLDEN_MIRROR") or release.mirror).rstrip("/")


def base_packages(release: Release, flavour: str = "cloud") -> tuple[str, ...]:
    """Every package the base image asks for: the flavour's kernel, then the matrix's base list."""
    return (release.kernel(flavour), *release.base_packages)


def base_key(release: Release, mirror: str, flavour: str, layout: DiskLayout = DiskLayout.SINGLE,
             extra_packages: Sequence[str] = (), packages: Sequence[str] = (), compression: str = "zlib",
             form: str = "qcow2") -> str:
    """Content key of a built base: release data, mirror, flavour, package lists, disk layout and recipe version.

    Only what changes the installed packages goes in: a profile's files, settings or first-boot agent do not,
    so that changing them reuses the base (the package layer) and reruns only the VM pass.
    """
    data = {
        "release": release.number,
        "codename": release.codename,
        "suites": release.suites,
        "components": release.components,
        "mirror": mirror.rstrip("/"),
        # the image's own apt sources
        "sources": [release.mirror, release.security_mirror, release.security_suite],
        "flavour": flavour,
        "packages": base_packages(release, flavour),
        "datasources": DATASOURCES,
        "renderers": release.network_renderers,
        "recipe": RECIPE_VERSION,
    }
    if stable_pins.current():  # a stable rebuild: the pinned versions make another layer
        data["pins"] = dict(sorted(stable_pins.current().items()))
    extended = extended_source(release)
    if extended:  # an extended-support source (ELTS): other packages, another base
        data["extended"] = [extended[0], release.support.extended.keyring_sha256 if release.support and
                            release.support.extended else ""]
    if layout is not DiskLayout.SINGLE:
        # only other layouts add it, so that the single layout's key (and every bake on it) stays as it was
        data["layout"] = str(layout)
    if extra_packages:  # a profile's base_packages; likewise only present when there are some
        data["extra_packages"] = sorted(set(extra_packages))
    if packages:  # the profile's packages (the package layer), installed with their Recommends
        data["packages_layer"] = sorted(set(packages))
    if compression != "zlib":
        data["compression"] = compression
    if form != "qcow2":  # the package layer as a tree (a tarball), for the native bake
        data["form"] = form
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def base_file_name(release: Release, flavour: str, layout: DiskLayout, key: str) -> str:
    """debian12-cloud-KEY.qcow2; other layouts than single say theirs: debian12-cloud-separate-mounts-KEY.qcow2."""
    suffix = "" if layout is DiskLayout.SINGLE else f"-{layout}"
    return f"debian{release.number}-{flavour}{suffix}-{key}.qcow2"


def build_base(
    release: Release,
    *,
    mirror: str | None = None,
    flavour: str = "cloud",
    force: bool = False,
    layout: DiskLayout = DiskLayout.SINGLE,
    extra_packages: Sequence[str] = (),
    packages: Sequence[str] = (),
    compression: str = "zlib",
) -> BaseImage:
    """Build (or return the cached) base qcow2 of `release` with mmdebstrap and `layout`; needs root.

    `extra_packages` (a profile's base_packages) are installed by mmdebstrap too: natively, in seconds,
    where a bake under emulation spends minutes in their maintainer scripts (aide-common's 200 ucf calls).
    `packages` (the rest of a profile's packages) are then installed natively as apt-get in the VM would:
    with their Recommends. The result is the profile's package layer; the bake's VM pass installs nothing.
    `compression` is the qcow2 cluster compression: zlib (every qemu-img reads it: a base may be uploaded to a
    cloud) or zstd (about six times faster to write here; for layers only this machine's QEMU reads).
    """
    require(*REQUIRED_TOOLS, purpose="to build a base image")
    if os.geteuid() != 0:
        raise GoldenError(
            "building a base image needs root (mmdebstrap --mode=root writes device nodes and owners)",
            hint="run as root, or start from an official Debian cloud image with fetch_base",
        )
    mirror = resolve_mirror(release, mirror)
    if compression not in COMPRESSIONS:
        raise GoldenError(f"unknown qcow2 compression {compression!r}", hint=f"use one of {', '.join(COMPRESSIONS)}")
    key = base_key(release, mirror, flavour, layout, extra_packages, packages, compression)
    final = base_dir() / base_file_name(release, flavour, layout, key)
    with _locked(final):
        cached = _cached(final, key, release.number, "mmdebstrap")
        if cached and not force:
            info(f"base image cached: {final}")
            return cached
        with step(f"Building the {release.name} base image ({flavour}, {layout} layout)"), _tempdir() as tmp:
            root = tmp / "rootfs"
            with step(f"mmdebstrap {release.codename} from {mirror}"):
                _mmdebstrap(release, mirror, flavour, root, extra_packages, packages)
                prepare_rootfs(root, release, flavour)
            raw = tmp / "disk.raw"
            with step(f"Assembling the disk (GPT, ext4 {layout}, GRUB for BIOS and UEFI)"):
                assemble_disk(root, raw, tmp, release, layout)
            qcow2 = tmp / "disk.qcow2"
            with step(f"Compressing to qcow2 ({compression})"):
                run(["qemu-img", "convert", "-c", "-o", f"compression_type={compression}", "-O", "qcow2", raw, qcow2],
                    timeout=1800)
            return _commit(qcow2, final, key, release.number, "mmdebstrap")


def build_layer_tree(
    release: Release,
    *,
    mirror: str | None = None,
    flavour: str = "cloud",
    layout: DiskLayout = DiskLayout.SINGLE,
    extra_packages: Sequence[str] = (),
    packages: Sequence[str] = (),
) -> BaseImage:
    """The package layer as a tree, cached as a zstd tarball (owners, modes, xattrs kept): the same
    mmdebstrap call and preparation as build_base, without the disk. The native bake copies it, converges
    the profile into the copy and assembles the disk from that. Needs root."""
    require(*REQUIRED_TOOLS, "tar", "zstd", purpose="to build a package layer")
    if os.geteuid() != 0:
        raise GoldenError("building a package layer needs root (mmdebstrap --mode=root writes device nodes and owners)",
                          hint="run as root")
    mirror = resolve_mirror(release, mirror)
    key = base_key(release, mirror, flavour, layout, extra_packages, packages, form=TREE_FORM)
    final = base_dir() / f"debian{release.number}-{flavour}-{key}.{TREE_FORM}"
    with _locked(final):
        cached = _cached(final, key, release.number, "mmdebstrap")
        if cached:
            info(f"package layer cached: {final}")
            return cached
        with step(f"Building the {release.name} package layer ({flavour}, {len(packages)} profile packages)"), \
                _tempdir() as tmp:
            root = tmp / "rootfs"
            with step(f"mmdebstrap {release.codename} from {mirror}"):
                _mmdebstrap(release, mirror, flavour, root, extra_packages, packages)
                prepare_rootfs(root, release, flavour)
            tarball = tmp / "layer.tar.zst"
            with step("Saving the tree (tar, zstd)"):
                run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls", "-I", "zstd -T0 -3",
                     "-C", root, "-cf", tarball, "."], timeout=1800)
            return _commit(tarball, final, key, release.number, "mmdebstrap")


def extract_layer_tree(layer: BaseImage, dest: Path) -> None:
    """Copy a package layer's tree into `dest` (a new directory), owners, modes and xattrs as they were."""
    dest.mkdir(mode=0o755)
    run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls", "-I", "zstd -T0", "-C", dest,
         "-xpf", layer.path], timeout=1800)


def check_official_base(checksum: str | None, layout: DiskLayout, wanted_by: str) -> str:
    """The rules of `--base-url`, checked before anything is built or fetched: a checksum is given, and the layout
    is the single root filesystem an official cloud image has. Returns the checksum."""
    if not checksum:
        raise InputError("--base-url needs --base-checksum (sha256:HEX or sha512:HEX)",
                         hint="take the checksum from the image's SHA512SUMS file")
    if layout is not DiskLayout.SINGLE:
        raise InputError(
            f"{wanted_by} wants the {layout} disk layout, but an official cloud image (--base-url) has one partition",
            hint="leave out --base-url: the base is then built from the Debian mirror with that layout",
        )
    return checksum


def fetch_base(url: str, checksum: str, release: Release) -> BaseImage:
    """Download an official Debian cloud image, verify "sha256:HEX" or "sha512:HEX" before use, cache it.

    A mismatch raises one clear error and leaves nothing in the cache.
    """
    algo, expected = _parse_checksum(checksum)
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https", "file"):
        raise InputError(f"unsupported base image URL {url!r}", hint="use an http(s):// or file:// URL")
    key = f"{algo}-{expected[:16]}"
    final = base_dir() / f"debian{release.number}-official-{key}.qcow2"
    with _locked(final):
        cached = _cached(final, key, release.number, url)
        if cached:
            info(f"base image cached: {final}")
            return cached
        with step(f"Downloading the {release.name} base image"), _tempdir() as tmp:
            part = tmp / "download"
            digests = _download(url, part)
            got = digests[algo].hexdigest()
            if got != expected:
                raise GoldenError(
                    f"checksum mismatch for {url}: expected {algo}:{expected}, got {algo}:{got}",
                    hint="check the URL and the checksum (from the image's SHA512SUMS); nothing was cached",
                )
            return _commit(part, final, key, release.number, url, sha256=digests["sha256"].hexdigest())


# --- mmdebstrap and the root filesystem ------------------------------------------------------


def extended_source(release: Release) -> tuple[str, Path, str] | None:
    """The extended-support apt line, its checked key file and the key's name in trusted.gpg.d, when
    $GOLDEN_EXTENDED_SUPPORT asks for it (model/support.py)."""
    if release.support is None:
        return None
    found = extended_keyring(release.name, release.support)
    if found is None:
        return None
    source, keyring = found
    armored = keyring.read_bytes().lstrip().startswith(b"-----BEGIN")
    name = f"golden-{source.name.lower()}.{'asc' if armored else 'gpg'}"
    return f"deb {source.url.rstrip('/')} {source.suite} {' '.join(source.components)}", keyring, name


def mmdebstrap_argv(release: Release, mirror: str, flavour: str, root: Path, extra: Sequence[str] = (),
                    packages: Sequence[str] = ()) -> list[str | Path]:
    """The mmdebstrap call of a base: the release's suites, updates and security (as the image's own apt
    sources), the base packages, then `packages` with their Recommends, installed natively in the chroot.

    mmdebstrap keeps services from starting there: policy-rc.d answers 101 (invoke-rc.d and
    deb-systemd-invoke obey it) and start-stop-daemon is a stub while packages are installed and the
    customize hooks run; systemctl inside a chroot only enables units.
    """
    components = " ".join(release.components)
    sources = [f"deb {mirror} {suite} {components}" for suite in release.suites]
    # Security updates go into the base, so that bakes do not spend minutes upgrading (kernel, initramfs).
    security = os.environ.get("GOLDEN_SECURITY_MIRROR") or release.security_mirror
    sources.append(f"deb {security.rstrip('/')} {release.security_suite} {components}")
    hooks = []
    extended = extended_source(release)
    if extended:  # Freexian's ELTS and its key, which stays in the image (its apt sources list it too)
        sources.append(extended[0])
        hooks += ['--setup-hook=mkdir -p "$1/etc/apt/trusted.gpg.d"',
                  f'--setup-hook=cp {shlex.quote(str(extended[1]))} "$1/etc/apt/trusted.gpg.d/{extended[2]}"']
    setup, last = stable_pins.mmdebstrap_hooks(stable_pins.current())  # a stable rebuild: every version held
    hooks += setup
    if packages:
        # mmdebstrap turns Recommends off for its own install; cloud-init's apt-get in a VM keeps them on.
        install = ["chroot", '"$1"', "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
                   "--install-recommends", "-o", "Dpkg::Options::=--force-confold",
                   *(shlex.quote(p) for p in packages)]
        hooks.append("--customize-hook=" + " ".join(install))
    hooks += last
    return [
        "mmdebstrap",
        "--mode=root",
        "--variant=important",
        "--include=" + ",".join(dict.fromkeys([*base_packages(release, flavour), *extra])),
        '--aptopt=Acquire::Retries "3"',
        *hooks,
        release.codename,
        root,
        *sources,
    ]


#: apt's line for a file a mirror's index lists but its pool does not serve
MISSING_FROM_POOL = re.compile(r"Failed to fetch (\S+)\s+404\s+Not Found")


def _mmdebstrap(release: Release, mirror: str, flavour: str, root: Path, extra: Sequence[str] = (),
                packages: Sequence[str] = ()) -> None:
    try:
        run(
            mmdebstrap_argv(release, mirror, flavour, root, extra, packages),
            timeout=MMDEBSTRAP_TIMEOUT,
            hint=f"check that {mirror} serves {release.codename} and that the package names in "
            "profiles/releases.yaml and the profile's packages exist there",
        )
    except CommandError as exc:
        missing = MISSING_FROM_POOL.search(exc.stderr_tail)
        if missing is None:
            raise
        raise mirror_out_of_step(release, mirror, missing.group(1)) from exc


def mirror_out_of_step(release: Release, mirror: str, url: str) -> GoldenError:
    """The error for a mirror whose index lists a file its pool answers 404 for: no package set can be
    installed from it, and no retry helps (seen on deb.debian.org's bullseye-security after its LTS ended)."""
    security = (os.environ.get("GOLDEN_SECURITY_MIRROR") or release.security_mirror).rstrip("/")
    which, variable = ((f"{security} ({release.security_suite})", "GOLDEN_SECURITY_MIRROR")
                       if url.startswith(security + "/") else (f"{mirror} ({release.codename})", "GOLDEN_MIRROR"))
    return GoldenError(
        f"the mirror {which} lists {url.rsplit('/', 1)[-1]} in its index, but its pool answers 404 Not Found "
        f"for {url}: the mirror is out of step with its own index, so Debian {release.number} cannot be built "
        "from it",
        hint=f"retry once the mirror has caught up, or set {variable} to a complete mirror",
    )


def prepare_rootfs(root: Path, release: Release, flavour: str) -> None:
    """Make the tree cloud-ready and host-neutral: datasources, serial console, no identity."""
    cloud_cfg = {
        "datasource_list": list(DATASOURCES),
        # without it sudo warns "unable to resolve host" once cloud-init changes the hostname
        "manage_etc_hosts": True,
        # C.UTF-8 exists without running locale-gen, which would cost seconds at every first boot
        "locale": "C.UTF-8",
    }
    if release.network_renderers:
        cloud_cfg["system_info"] = {"network": {"renderers": list(release.network_renderers)}}
    cfg = root / "etc/cloud/cloud.cfg.d/01_goldenimage.cfg"
    cfg.write_text("# written by goldenimage.bake.base_image\n" + yaml.safe_dump(cloud_cfg, sort_keys=False))
    # mmdebstrap copies the build host's hostname and resolver: neither belongs in an image
    (root / "etc/hostname").write_text("debian\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n")
    resolv = root / "etc/resolv.conf"
    if not resolv.is_symlink():  # a symlink is systemd-resolved's stub: that one stays
        resolv.unlink(missing_ok=True)
    # the build mirror may be a local proxy: the image itself points at the release's public mirrors
    components = " ".join(release.components)
    sources = [f"deb {release.mirror} {suite} {components}" for suite in release.suites]
    sources.append(f"deb {release.security_mirror} {release.security_suite} {components}")
    extended = extended_source(release)
    if extended:
        sources.append(extended[0])
    (root / "etc/apt/sources.list").write_text("\n".join(sources) + "\n")
    set_grub_defaults(root / "etc/default/grub")
    # identity is made at first boot: host keys by cloud-init, machine-id by systemd
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    # The native install is not the bake's: dpkg's and apt's logs start empty (mmdebstrap's cleanup removes
    # them; made sure here), so they show only what the VM pass did (collect-manifest.sh reports installs).
    for log in ("dpkg.log", "apt/history.log", "apt/term.log", "alternatives.log"):
        if (root / "var/log" / log).is_file():
            (root / "var/log" / log).write_text("")
    lists = root / "var/lib/apt/lists"
    for entry in lists.glob("*"):
        if entry.is_file() and entry.name != "lock":
            entry.unlink()
    # grub-cloud-amd64 reinstalls GRUB for BIOS and UEFI when GRUB or shim are upgraded inside the image,
    # only with this flag (it skips its first install, in mmdebstrap's chroot: the disk is made here)
    (root / "etc/grub.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/grub.d/enable_cloud").touch()
    if flavour == "cloud":
        # shim-signed's upgrades call grub-install too: in a VM, keep the removable path (BOOTX64.EFI)
        # current and leave the firmware's boot entries alone, as grub-cloud-amd64 does
        run(
            ["chroot", root, "debconf-set-selections"],
            input="grub-efi-amd64 grub2/force_efi_extra_removable boolean true\n"
            "grub-efi-amd64 grub2/update_nvram boolean false\n",
        )


# --- download ---------------------------------------------------------------------------------


def _parse_checksum(checksum: str) -> tuple[str, str]:
    algo, _, hexdigest = checksum.strip().partition(":")
    algo, hexdigest = algo.lower(), hexdigest.lower()
    lengths = {"sha256": 64, "sha512": 128}
    if algo not in lengths or not re.fullmatch(rf"[0-9a-f]{{{lengths[algo]}}}", hexdigest):
        raise InputError(
            f"bad checksum {checksum!r}",
            hint='write it as "sha256:<64 hex digits>" or "sha512:<128 hex digits>"',
        )
    return algo, hexdigest


def _download(url: str, dest: Path) -> dict[str, hashlib._Hash]:
    """Stream `url` to `dest`, hashing as it goes; bounded per read and in total."""
    import time

    digests = {"sha256": hashlib.sha256(), "sha512": hashlib.sha512()}
    deadline = time.monotonic() + DOWNLOAD_DEADLINE
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as resp, dest.open("wb") as out:
            while chunk := resp.read(1024 * 1024):
                if time.monotonic() > deadline:
                    raise GoldenError(f"download of {url} took longer than {DOWNLOAD_DEADLINE}s")
                out.write(chunk)
                for d in digests.values():
                    d.update(chunk)
    except OSError as exc:  # URLError and socket timeouts are OSErrors
        raise GoldenError(f"cannot download {url}: {exc}", hint="check the URL and the network") from exc
    return digests


# --- cache ------------------------------------------------------------------------------------


def _cached(final: Path, key: str, release: int, source: str) -> BaseImage | None:
    """The cached base if complete: the .sha256 file is written last, so its presence means done."""
    sha_file = final.with_name(final.name + ".sha256")
    if final.exists() and sha_file.exists():
        sha256 = sha_file.read_text().split()[0]
        return BaseImage(path=final, sha256=sha256, key=key, release=release, source=source)
    return None


def _commit(src: Path, final: Path, key: str, release: int, source: str, sha256: str | None = None) -> BaseImage:
    """Move a finished image into the cache, then write its .sha256 (the completeness mark)."""
    if sha256 is None:
        sha256 = sha256_file(src)
    sha_tmp = src.with_name(src.name + ".sha256")
    sha_tmp.write_text(f"{sha256}  {final.name}\n")
    os.replace(src, final)
    os.replace(sha_tmp, final.with_name(final.name + ".sha256"))
    return BaseImage(path=final, sha256=sha256, key=key, release=release, source=source)


@contextlib.contextmanager
def _locked(final: Path) -> Iterator[None]:
    """One builder per image at a time: a second process waits, then finds the first one's result."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with final.with_name(f".{final.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _tempdir() -> Iterator[Path]:
    """A scratch dir beside the cache (same filesystem, so the final rename is atomic), always removed: by this
    process when it ends, by the next build when this one is killed outright (mmdebstrap's mounts included)."""
    for orphan in orphans(base_dir(), ".build"):
        _remove_tree(orphan)
    tmp = work_dir(base_dir(), ".build")
    try:
        yield tmp
    finally:
        _remove_tree(tmp)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def _remove_tree(tmp: Path) -> None:
    """Remove a scratch dir, first unmounting what an interrupted mmdebstrap may have left in it.

    Never recurse through a mount: rmtree on a leftover bind mount of /dev would empty the host's /dev.
    """
    for point in _mounts_under(tmp):
        run(["umount", "--lazy", point], check=False)
    left = _mounts_under(tmp)
    if left:
        raise GoldenError(f"{tmp} still has mounts ({', '.join(left)}); not removing it", hint="umount them")
    shutil.rmtree(tmp, ignore_errors=True)
