"""The native bake of the local qemu target: the package layer's tree copied, the profile's user-data
converged into it by the first-boot agent's engine (cloud-init's semantics, no VM), the golden-image hygiene
done on the tree, then the disk assembled and compressed. Only bake commands that need a running system
(`vm_bake_commands`) leave for a VM pass, on the disk made here."""

from __future__ import annotations

import glob
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from ..core.log import info, step
from ..core.run import run
from ..model.profiles import ResolvedProfile, size_mib
from ..render.firstboot_bundle import build_zipapp
from ..render.userdata import cloud_config_json
from .base_image import BaseImage, extract_layer_tree
from .disk import assemble_disk

#: The first-boot agent's state: a VM pass on the converged disk boots with it present (the agent must not run
#: on the build VM), and the cleanup removes it.
FIRSTBOOT_DONE = "var/lib/golden/firstboot.done"
#: What the hygiene removes from the tree, besides the profile's instance_unique (cleanup.sh does the same in a VM).
HYGIENE_GLOBS = (
    "etc/ssh/ssh_host_*",
    "var/lib/dbus/machine-id",
    "var/lib/apt/lists/*_*",
    "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb",
    "var/log/journal/*",
    "var/lib/cloud/instances/*",
    "var/lib/cloud/instance",
    "root/.bash_history",
    "home/*/.bash_history",
    "root/.lesshst",
    "root/.viminfo",
    "tmp/*",
    "tmp/.[!.]*",
    "var/tmp/*",
    "var/tmp/.[!.]*",
    "var/lib/systemd/random-seed",
    "var/lib/urandom/random-seed",
    "var/lib/systemd/credential.secret",
    "var/lib/dhcp/*.leases",
    "usr/sbin/policy-rc.d",
)
POLICY_RC_D = "#!/bin/sh\n# goldenimage native bake: no service starts in the tree\nexit 101\n"


def copy_layer(layer: BaseImage, root: Path) -> None:
    """The package layer's tree, copied into `root` (the cached layer is never written)."""
    with step("Copying the package layer"):
        extract_layer_tree(layer, root)


def converge_tree(root: Path, user_data: str, work: Path) -> list[str]:
    """The first-boot agent's converge engine (the zipapp the image carries) applies `user_data` to the tree;
    returns its report lines (one per change, then the summary)."""
    app = work / "golden-firstboot.pyz"
    app.write_bytes(build_zipapp())
    data = work / "user-data.json"
    data.write_text(cloud_config_json(user_data))
    with step("Converging the profile into the tree (cloud-init's semantics, natively)"):
        out = run([sys.executable, app, "converge", "--user-data", data, "--root", root], timeout=1800,
                  hint="the converge engine names the key and the command that failed").stdout
    lines = out.splitlines()
    info(lines[-1] if lines else "converge printed nothing")
    return lines


def tree_manifest(root: Path) -> dict[str, Any]:
    """What collect-manifest.sh records in a VM, read from the tree: packages and versions, cloud-init's
    version, kernels, os-release, and what dpkg installed or upgraded since the package layer (its log was
    emptied by the layer: anything there was installed by the converge)."""
    packages: dict[str, str] = {}
    name = version = status = ""
    with (root / "var/lib/dpkg/status").open(encoding="utf-8", errors="replace") as f:
        for line in [*f, "\n"]:
            if line.startswith("Package: "):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("Version: "):
                version = line.split(":", 1)[1].strip()
            elif line.startswith("Status: "):
                status = line.split(":", 1)[1].strip()
            elif not line.strip():
                if name and status.endswith(" installed"):
                    packages[name] = version
                name = version = status = ""
    actions = []
    log = root / "var/log/dpkg.log"
    if log.is_file():
        for line in log.read_text(errors="replace").splitlines():
            fields = line.split()
            if len(fields) >= 6 and fields[2] in ("install", "upgrade"):
                actions.append(" ".join(fields[2:6]))
    cloud_init = packages.get("cloud-init")
    return {
        "packages": packages,
        # the upstream version, as `cloud-init --version` prints it (22.4.2 for 22.4.2-1+deb12u4)
        "cloud_init": cloud_init.split(":")[-1].split("-")[0] if cloud_init else None,
        "kernels": sorted(n for n in packages if n.startswith("linux-image-")),
        "after_layer_dpkg": actions,
        "os_release": (root / "etc/os-release").read_text() if (root / "etc/os-release").exists() else "",
    }


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _inside(root: Path, pattern: str) -> list[Path]:
    """Matches of `pattern` (relative to the tree) that really are inside it."""
    base = os.path.realpath(root)
    out = []
    for match in glob.glob(str(root / pattern.lstrip("/")), include_hidden=False):
        parent = os.path.realpath(os.path.dirname(match))
        if parent == base or parent.startswith(base + os.sep):
            out.append(Path(match))
    return out


def clean_tree(root: Path, profile: ResolvedProfile) -> None:
    """The golden-image hygiene on the tree (cleanup.sh's, without a VM): no identity (empty machine-id, no
    host keys, the profile's instance_unique), no apt lists or caches, no logs, no cloud-init state, no
    history or temporaries. The build account never existed."""
    with step("Cleaning the tree (identity, caches, logs)"):
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text(POLICY_RC_D)
        policy.chmod(0o755)
        chroot = ["chroot", root, "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
                  "DEBIAN_FRONTEND=noninteractive"]
        run([*chroot, "apt-get", "-y", "-q", "autoremove", "--purge"], timeout=600)
        run([*chroot, "apt-get", "-q", "clean"], timeout=300)
        (root / "etc/machine-id").write_text("")
        for pattern in (*HYGIENE_GLOBS, *profile.content.instance_unique):
            for path in _inside(root, pattern):
                _remove(path)
        logs = root / "var/log"
        for path in sorted(logs.rglob("*")):
            if path.is_file() and not path.is_symlink():
                if path.suffix == ".gz" or path.suffix == ".old" or path.suffix[1:].isdigit():
                    path.unlink()
                else:
                    with path.open("r+b") as f:
                        f.truncate(0)


def assemble(root: Path, profile: ResolvedProfile, work: Path) -> Path:
    """The raw disk of the profile's layout, filled from the tree, GRUB for BIOS and UEFI (Secure Boot)."""
    raw = work / "disk.raw"
    scratch = work / "disk"
    scratch.mkdir()
    with step(f"Assembling the disk (GPT, ext4 {profile.disk_layout}, GRUB for BIOS and UEFI)"):
        assemble_disk(root, raw, scratch, profile.release, profile.disk_layout)
    shutil.rmtree(scratch, ignore_errors=True)
    return raw


def to_qcow2(raw: Path, out: Path, profile: ResolvedProfile, compression: str | None) -> Path:
    """raw -> qcow2 of the profile's disk_size: zlib-compressed for an artifact (every consumer's qemu-img reads
    it), or uncompressed for a VM pass that Packer compresses after."""
    out.parent.mkdir(parents=True, exist_ok=True)
    argv: list[object] = ["qemu-img", "convert", "-O", "qcow2"]
    if compression:
        argv[2:2] = ["-c", "-o", f"compression_type={compression}"]
    with step(f"Converting to qcow2 ({compression or 'uncompressed'})"):
        run([*argv, raw, out], timeout=1800)
        if size_mib(profile.disk_size) * 2**20 > raw.stat().st_size:
            run(["qemu-img", "resize", "-q", out, profile.disk_size])
    raw.unlink()
    return out


def mark_firstboot_done(root: Path) -> None:
    """Before a VM pass: the agent finds first boot done and leaves the build VM alone (cleanup.sh removes it)."""
    done = root / FIRSTBOOT_DONE
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text("vm pass of the native bake\n")
