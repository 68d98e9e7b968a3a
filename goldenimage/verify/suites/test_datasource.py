"""A clone booted with a cloud's data (`golden verify --datasource`, `--hardware`): it took its name, address and
key from that data, through the datasource that cloud uses, on the NIC and buses of that hardware.
(That this suite runs at all proves SSH with the key the data named; test_base proves first boot done.)"""

from __future__ import annotations

import json
import os

import pytest


@pytest.fixture(scope="session")
def expected():
    return json.loads(os.environ["GOLDEN_DATASOURCE"])


@pytest.fixture(scope="module")
def nic(host, expected):
    """The guest's interface with the MAC the data names, as `ip -j addr` reports it."""
    links = json.loads(host.check_output("ip -j addr show"))
    found = [link for link in links if link.get("address", "").lower() == expected["mac"].lower()]
    assert found, f"no interface with MAC {expected['mac']}: {[link.get('address') for link in links]}"
    return found[0]


def test_cloud_init_used_the_datasource_of_the_target(host, expected):
    status = json.loads(host.file("/run/cloud-init/status.json").content_string)
    # the metadata service is read in cloud-init's local stage (ephemeral DHCP): DataSourceOpenStackLocal
    name = status["v1"]["datasource"].split()[0]
    assert name in (expected["cloud_init_name"], expected["cloud_init_name"] + "Local"), status["v1"]["datasource"]


def test_hostname_is_the_one_in_the_data(host, expected):
    assert host.check_output("hostname") == expected["hostname"]


def test_the_address_is_the_one_in_the_data(nic, expected):
    address, prefix = expected["address"].split("/")
    inet = [a for a in nic.get("addr_info", []) if a.get("family") == "inet"]
    assert [(a["local"], a["prefixlen"]) for a in inet] == [(address, int(prefix))], inet
    if expected["static"]:
        # a DHCP lease would be `dynamic` (a valid lifetime): this address is configured, not leased
        assert not any(a.get("dynamic") for a in inet), inet


def test_the_default_route_is_the_gateway_in_the_data(host, nic, expected):
    routes = json.loads(host.check_output("ip -j -4 route show default"))
    assert [(r.get("gateway"), r.get("dev")) for r in routes] == [(expected["gateway"], nic["ifname"])], routes


#: The driver of each layout's NIC and of the disk holding /.
HARDWARE_DRIVERS = {
    "virt": ("virtio_net", "virtio_blk"),
    "proxmox-bios": ("virtio_net", "virtio_scsi"),
    "proxmox-uefi": ("virtio_net", "virtio_scsi"),
    "metal": ("e1000e", "ahci"),
}


def test_nic_and_disk_are_those_of_the_hardware(host, nic, expected):
    nic_driver, disk_driver = HARDWARE_DRIVERS[expected["hardware"]]
    assert host.check_output(f"basename $(readlink -f /sys/class/net/{nic['ifname']}/device/driver)") == nic_driver
    # the root filesystem's disk, up its sysfs path to the controller's driver
    disk = host.check_output("lsblk -no pkname $(findmnt -no source /)")
    chain = host.check_output(f"p=$(readlink -f /sys/block/{disk}/device); while [ \"$p\" != / ]; do "
                              "[ -e \"$p/driver\" ] && basename $(readlink -f \"$p/driver\"); "
                              "p=$(dirname \"$p\"); done")
    assert disk_driver in chain.split(), chain


def test_an_image_for_metal_has_storage_drivers_in_its_initramfs_and_mdadm(host, expected):
    if expected["hardware"] != "metal":
        pytest.skip("only images for metal carry the generic kernel")
    assert host.package("mdadm").is_installed and host.package("linux-image-amd64").is_installed
    listing = host.check_output("lsinitramfs /boot/initrd.img-$(uname -r)")
    modules = {line.rsplit("/", 1)[-1].split(".ko")[0] for line in listing.splitlines() if ".ko" in line}
    assert {"ahci", "nvme", "megaraid_sas", "mpt3sas"} <= modules, sorted(modules)[:50]
