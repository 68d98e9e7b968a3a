"""`golden verify --datasource` and `--hardware`: each cloud's data as cloud-init's own readers take it, the
metadata service's answers, and the QEMU layout of each target's hardware."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pycdlib
import pytest
import yaml

from goldenimage.bake.manifest import StoredManifest
from goldenimage.core.errors import InputError
from goldenimage.core.ssh_keys import SSHKey
from goldenimage.verify import metadata_service
from goldenimage.verify.artifact import check_hardware, suites_for
from goldenimage.verify.datasources import GUEST_ADDRESS, GUEST_GATEWAY, clone_data
from goldenimage.verify.vm import VM

KEY = SSHKey(private=Path("/nonexistent/id_ed25519"), public="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIVerify verify")
SETTINGS = {"address": GUEST_ADDRESS, "network": "10.0.2.0/24"}
SYSTEM_PYTHON = "/usr/bin/python3"


def _has_cloud_init() -> bool:
    probe = [SYSTEM_PYTHON, "-c", "import cloudinit.sources.helpers.openstack"]
    return Path(SYSTEM_PYTHON).exists() and subprocess.run(probe, capture_output=True).returncode == 0


needs_cloud_init = pytest.mark.skipif(not _has_cloud_init(), reason="cloud-init's Python package is not installed")


def extract_iso(path: Path, dest: Path) -> str:
    """Copy every Rock Ridge file of the ISO under dest; its volume label."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        for root, _dirs, files in iso.walk(rr_path="/"):
            for name in files:
                rr = f"{root.rstrip('/')}/{name}"
                out = io.BytesIO()
                iso.get_file_from_iso_fp(out, rr_path=rr)
                (dest / rr.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
                (dest / rr.lstrip("/")).write_bytes(out.getvalue())
        return iso.pvd.volume_identifier.decode().strip()
    finally:
        iso.close()


@needs_cloud_init
def test_config_drive_reads_through_cloud_inits_config_drive_reader(tmp_path: Path) -> None:
    data = clone_data("configdrive", tmp_path, "web-cd", KEY, SETTINGS)
    assert data.seed is not None
    tree = tmp_path / "tree"
    assert extract_iso(data.seed, tree) == "config-2"
    script = ("import json, sys\nfrom cloudinit.sources.helpers import openstack\n"
              "r = openstack.ConfigDriveReader(sys.argv[1]).read_v2()\n"
              "net = openstack.convert_net_json(r['networkdata'], known_macs={sys.argv[2]: 'ens3'})\n"
              "print(json.dumps({'meta': r['metadata'], 'user': r['userdata'].decode(), 'net': net}))\n")
    proc = subprocess.run([SYSTEM_PYTHON, "-c", script, str(tree), data.mac], capture_output=True, text=True,
                          check=True)
    read = json.loads(proc.stdout)
    assert read["meta"]["hostname"] == "web-cd" and KEY.public in read["meta"]["public_keys"].values()
    assert "hostname" not in yaml.safe_load(read["user"])  # the name comes from the metadata alone
    (nic,) = [c for c in read["net"]["config"] if c["type"] == "physical"]
    assert nic["mac_address"] == data.mac and nic["name"] == "ens3"
    (subnet,) = nic["subnets"]
    assert (subnet["type"], subnet["address"], subnet["netmask"]) == ("static", GUEST_ADDRESS, "255.255.255.0")
    assert subnet["routes"][0]["gateway"] == GUEST_GATEWAY


@needs_cloud_init
def test_proxmox_drive_is_qemu_servers_nocloud_layout(tmp_path: Path) -> None:
    data = clone_data("proxmox", tmp_path, "web-pve", KEY, SETTINGS)
    assert data.seed is not None and data.mac.startswith("bc:24:11:")
    tree = tmp_path / "tree"
    assert extract_iso(data.seed, tree) == "cidata"
    assert sorted(p.name for p in tree.iterdir()) == ["meta-data", "network-config", "user-data", "vendor-data"]
    user = yaml.safe_load((tree / "user-data").read_text())
    assert (user["hostname"], user["fqdn"], user["ssh_authorized_keys"]) == ("web-pve", "web-pve", [KEY.public])
    assert "package_upgrade" not in user  # ciupgrade 0
    assert "/etc/golden/host.json" in (tree / "vendor-data").read_text()
    assert yaml.safe_load((tree / "meta-data").read_text())["instance-id"]
    script = ("import sys, yaml\nfrom cloudinit.net import network_state\n"
              "ns = network_state.parse_net_config_data(yaml.safe_load(open(sys.argv[1])))\n"
              "print([(i['mac_address'], [(s['type'], s['address']) for s in i['subnets']]) "
              "for i in ns.iter_interfaces()])\n")
    proc = subprocess.run([SYSTEM_PYTHON, "-c", script, str(tree / "network-config")], capture_output=True,
                          text=True, check=True)
    assert f"('{data.mac}', [('static', '{GUEST_ADDRESS}')])" in proc.stdout


def test_metadata_service_serves_the_openstack_tree_and_nothing_else(tmp_path: Path) -> None:
    data = clone_data("metadata", tmp_path, "web-md", KEY, SETTINGS)
    assert data.seed is None
    *net, option = data.netdev_options
    assert option.startswith("guestfwd=tcp:169.254.169.254:80-cmd:") and "," not in option
    # libslirp forwards only addresses inside the user network: 169.254.0.0/16, with the static address in it
    assert net == ["net=169.254.0.0/16", "host=169.254.0.2", "dhcpstart=169.254.0.15", "dns=169.254.0.3"]
    assert data.expectations()["address"] == "169.254.0.15/16" and data.settings["address"] == "169.254.0.15"
    network = json.loads(data.files["openstack/latest/network_data.json"])["networks"][0]
    assert (network["ip_address"], network["routes"][0]["gateway"]) == ("169.254.0.15", "169.254.0.2")
    assert "product=OpenStack Nova" in " ".join(data.extra_args)  # ds-identify's test for OpenStack
    root = Path(option.rsplit(" ", 1)[1])
    (tmp_path / "secret").write_text("no")
    requests = (b"GET /openstack HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /openstack/latest/meta_data.json HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /../secret HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    out = io.BytesIO()
    assert metadata_service.serve(io.BytesIO(requests), out, root) == 4
    answers = out.getvalue().split(b"HTTP/1.1 ")[1:]
    assert [a.split(b" ", 1)[0] for a in answers] == [b"200", b"200", b"404", b"404"]
    assert answers[0].endswith(b"\r\n\r\nlatest\n")
    assert json.loads(answers[1].split(b"\r\n\r\n", 1)[1])["hostname"] == "web-md"


def _argv(hardware: str, firmware: str, tmp_path: Path) -> str:
    vm = VM(tmp_path / "disk.qcow2", seed=tmp_path / "seed.iso", hardware=hardware, firmware=firmware,
            mac="bc:24:11:00:00:01", workdir=tmp_path)
    vm.accel = "tcg"
    return " ".join(vm.qemu_argv())


def test_proxmox_uefi_is_q35_ovmf_with_ms_keys_and_scsi_drives(tmp_path: Path) -> None:
    argv = _argv("proxmox-uefi", "uefi-secureboot", tmp_path)
    assert "-machine q35,smm=on" in argv and "OVMF_CODE_4M.secboot.fd" in argv
    assert "scsi-hd,bus=virtioscsi0.0" in argv and "scsi-cd,bus=virtioscsi1.0" in argv
    assert "if=virtio" not in argv and "ide-" not in argv and "virtio-net-pci,netdev=n0,mac=bc:24:11" in argv


def test_proxmox_bios_is_the_default_machine_with_the_same_buses(tmp_path: Path) -> None:
    argv = _argv("proxmox-bios", "bios", tmp_path)
    assert "-machine" not in argv and "pflash" not in argv
    assert "scsi-hd,bus=virtioscsi0.0" in argv and "scsi-cd,bus=virtioscsi1.0" in argv


def test_metal_is_q35_uefi_with_ahci_disk_and_config_drive_and_e1000e(tmp_path: Path) -> None:
    argv = _argv("metal", "uefi", tmp_path)
    assert "-machine q35" in argv and "OVMF_CODE_4M.fd" in argv
    assert "ide-hd,bus=ide.0" in argv and "ide-cd,bus=ide.1" in argv and "e1000e,netdev=n0" in argv
    assert "virtio" not in argv


def test_virt_is_todays_layout(tmp_path: Path) -> None:
    argv = _argv("virt", "bios", tmp_path)
    assert argv.count("if=virtio") == 2 and "virtio-net-pci" in argv and "scsi" not in argv


def test_metal_hardware_refuses_a_cloud_image_in_one_line() -> None:
    with pytest.raises(InputError, match="the artifact is a cloud image") as caught:
        check_hardware(StoredManifest.from_json({"profile": {}}), "metal")
    assert "\n" not in str(caught.value)
    check_hardware(StoredManifest.from_json({"kind": "metal"}), "metal")
    check_hardware(StoredManifest.from_json({}), "proxmox-uefi")


def test_the_datasource_suite_runs_only_with_a_datasource() -> None:
    assert "test_datasource.py" not in [s.name for s in suites_for(["web"])]
    assert [s.name for s in suites_for(["web"], datasource=True)][2] == "test_datasource.py"


@needs_cloud_init
def test_a_config_drive_default_route_needs_net_tools_where_ifupdown_renders_it(tmp_path: Path) -> None:
    """cloud-init's ENI renderer turns network_data.json's default route into `route add` (net-tools): every
    release whose base renders with ifupdown carries net-tools, or a static clone has no default route."""
    from goldenimage.model.releases import matrix

    data = clone_data("configdrive", tmp_path, "web-cd", KEY, SETTINGS)
    script = ("import json, sys\nfrom cloudinit.sources.helpers import openstack\nfrom cloudinit.net import eni, "
              "network_state\nnet = openstack.convert_net_json(json.loads(sys.argv[1]), known_macs={sys.argv[2]: "
              "'ens3'})\nprint(eni.Renderer()._render_interfaces(network_state.parse_net_config_data(net)))\n")
    proc = subprocess.run([SYSTEM_PYTHON, "-c", script, data.files["openstack/latest/network_data.json"], data.mac],
                          capture_output=True, text=True, check=True)
    assert f"post-up route add default gw {GUEST_GATEWAY}" in proc.stdout
    for release in matrix():
        if "ifupdown" in release.base_packages:
            assert "net-tools" in release.base_packages, release.name
