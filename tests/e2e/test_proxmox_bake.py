"""A local stand-in for the Proxmox bake (`golden render PROFILE --target proxmox`, run by packer-plugin-proxmox):

1. the template to clone: the profile's package layer as a disk, never booted (as an uploaded golden base or
   Debian's cloud image is on the Proxmox node);
2. the clone boots on Proxmox's hardware (virtio-scsi, the NIC's bc:24:11 MAC) WITH the cloud-init drive
   qemu-server writes for it (a NoCloud `cidata` ISO: its own user-data with `ciuser` golden-build and the
   build key as `sshkeys`, meta-data, network-config version 1), as the plugin's `cloud_init: true` has it;
3. the rendered template's provisioners run in their order over SSH as Packer runs them (packer_standin);
4. the drive is unplugged and the machine stopped through QEMU's monitor (the plugin removes the drive after
   provisioning, then stops the VM through the API: no shutdown_command runs);
5. the clone's disk, the future template, is read offline.

It shows the profile's files are in the result, not Proxmox's generated cloud-config, and that no build
account, sudo rule or build key remains. The guest reaches only the Debian mirror (mirror_relay), through an
apt proxy that the drive's vendor-data sets (a `cicustom vendor=` snippet: the site's, not the profile's).
Marked `vm` and `proxmox_bake`: `make test-proxmox-bake` runs it (one boot, about 10 minutes under TCG)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from goldenimage.bake.render_dir import render
from goldenimage.core.run import run
from goldenimage.core.ssh_keys import SSHKey
from goldenimage.model.profiles import resolve
from goldenimage.render.packer_template import Target
from goldenimage.render.seed import write_seed_iso
from goldenimage.render.userdata import BUILD_USER, dump_cloud_config
from goldenimage.verify.datasources import proxmox_files, random_mac
from goldenimage.verify.mirror_relay import apt_proxy_conf, guestfwd
from goldenimage.verify.vm import VM
from tests.e2e.offline_disk import mounted_disk
from tests.e2e.packer_standin import layer_disk, mirror_hosts, play_provisioners, qmp_args, stop_through_api

pytestmark = [pytest.mark.vm, pytest.mark.proxmox_bake]

PROFILE = "web"
CLONE = "pve-bake-clone"
#: The site's apt proxy, written by the drive's vendor-data (it stays in the result: the test's site, not Proxmox's
#: generated user-data and not the profile).
SITE_PROXY = "/etc/apt/apt.conf.d/00site-proxy"
#: The drive as it is on the clone (vm.hardware_argv, proxmox-*: the cloud-init drive is scsi1).
DRIVE_DEVICE = "scsi1"


def pve_drive(work: Path, key: SSHKey, mac: str) -> tuple[Path, dict[str, str]]:
    """qemu-server's cloud-init drive for the bake's clone: ciuser golden-build, the build key, a static address."""
    files = proxmox_files(CLONE, key, {}, mac, ciuser=BUILD_USER)
    vendor = dump_cloud_config({"write_files": [{"path": SITE_PROXY, "content": apt_proxy_conf()}]})
    iso = write_seed_iso(work / f"{CLONE}-cloudinit.iso", files["user-data"], files["meta-data"],
                         files["network-config"], vendor_data=vendor)
    return iso, files


def profile_files(user_data: str) -> list[dict[str, str]]:
    """The write_files entries of the profile's bake user-data (the build account's are none)."""
    return list(yaml.safe_load(user_data).get("write_files", []))


def assert_profile_applied(root: Path, user_data: str) -> None:
    """Every file the profile writes is in the tree, with its content and mode."""
    missing, wrong = [], []
    for entry in profile_files(user_data):
        path = root / entry["path"].lstrip("/")
        if not path.is_file():
            missing.append(entry["path"])
            continue
        if entry.get("encoding") in (None, "text/plain") and "content" in entry:
            if path.read_text(errors="replace") != entry["content"]:
                wrong.append(f"{entry['path']}: content")
        if "permissions" in entry and stat.S_IMODE(path.stat().st_mode) != int(entry["permissions"], 8):
            wrong.append(f"{entry['path']}: mode {oct(stat.S_IMODE(path.stat().st_mode))}, "
                         f"profile {entry['permissions']}")
    assert not missing, f"the profile's files are not in the baked disk: {missing}"
    assert not wrong, f"the profile's files differ in the baked disk: {wrong}"


def assert_no_build_account(root: Path, build_public_key: str) -> None:
    """No build account, home, sudo rule or key anywhere a login would read them."""
    for name in ("passwd", "shadow", "group", "gshadow"):
        lines = [line for line in (root / "etc" / name).read_text().splitlines()
                 if line.split(":")[0] == BUILD_USER or f",{BUILD_USER}" in line or f":{BUILD_USER}" in line]
        assert not lines, f"/etc/{name} still names {BUILD_USER}: {lines}"
    assert not (root / "home" / BUILD_USER).exists(), f"/home/{BUILD_USER} remains"
    sudoers = [root / "etc/sudoers", *sorted((root / "etc/sudoers.d").iterdir())]
    for path in sudoers:
        assert BUILD_USER not in path.read_text(errors="replace"), f"{path.relative_to(root)} names {BUILD_USER}"
    blob = build_public_key.split()[1]
    found = []
    for top in ("etc", "home", "root", "var/lib", "var/tmp", "tmp", "usr/local"):
        for dirpath, _dirs, names in os.walk(root / top):
            for name in names:
                path = Path(dirpath) / name
                if path.is_file() and not path.is_symlink() and path.stat().st_size < 4 * 2**20 \
                        and blob.encode() in path.read_bytes():
                    found.append(str(path.relative_to(root)))
    assert not found, f"the build key is still in: {found}"


def test_proxmox_bake_applies_the_profile_and_ships_no_build_account(tmp_path: Path) -> None:
    profile = resolve(PROFILE, 12)
    rendered = render(profile, Target.PROXMOX, tmp_path / "render", packer_version="1.11")
    template = json.loads(rendered.template.read_text())
    values = json.loads(rendered.var_file.read_text())
    build_key = SSHKey(rendered.build_key, rendered.build_key.with_name("build_key.pub").read_text().strip())
    # the rendered user-data carries the build key: the template's clone logs in with the same one
    assert build_key.public in rendered.user_data.read_text()
    if os.environ.get("GOLDEN_PVE_UNPINNED"):
        # the check of the check: apply-user-data.sh without its seed pin, as before 53b161a (this test must fail)
        script = rendered.directory / "scripts/apply-user-data.sh"
        script.write_text(script.read_text().replace("    fs_label: null\n", ""))
        assert "    fs_label: null" not in script.read_text()

    disk = layer_disk(profile, tmp_path)
    mac = random_mac("proxmox")
    drive, _ = pve_drive(tmp_path, build_key, mac)
    qmp = tmp_path / "qmp.sock"
    vm = VM(disk, seed=drive, key=build_key, user=BUILD_USER, name=CLONE, workdir=tmp_path / "vm", mac=mac,
            hardware="proxmox-bios", memory_mib=2048, netdev_options=[guestfwd(mirror_hosts(profile))],
            extra_args=qmp_args(qmp))
    try:
        vm.start()
        vm.wait_for_ssh(timeout=1200)
        variables = {**values, "user_data_file": rendered.user_data, "scripts_dir": rendered.directory / "scripts",
                     "manifest_dir": tmp_path}
        steps = play_provisioners(template, variables, vm, "proxmox-clone")
        assert steps[-1] == "shell remove-build-account.sh", steps
        # the bake's user-data went to the guest; the drive's own user-data is Proxmox's
        assert (tmp_path / "guest-manifest.json").is_file()
        ended = stop_through_api(vm, qmp, unplug=DRIVE_DEVICE)
        print(f"[clone stopped: {ended}]")
        keep = os.environ.get("GOLDEN_PVE_KEEP")  # the result kept, to be read again (system_diff)
        if keep:
            run(["qemu-img", "convert", "-O", "qcow2", vm.overlay, Path(keep) / f"{PROFILE}-proxmox.qcow2"])
        with mounted_disk(vm.overlay, tmp_path) as root:
            assert_profile_applied(root, rendered.user_data.read_text())
            assert_no_build_account(root, build_key.public)
            # the pin is gone: the template's clones read their own Proxmox drive
            assert not (root / "etc/cloud/cloud.cfg.d/99-golden-bake-seed.cfg").exists()
            assert not list((root / "var/lib/cloud/seed").glob("nocloud*/user-data")), "the bake's seed remains"
    finally:
        vm.stop()
