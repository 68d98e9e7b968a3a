"""Proxmox target through proxmoxer (HTTPS, API token) against a local PVE API."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from goldenimage.bake.store import Artifact
from goldenimage.publish import proxmox, publisher
from goldenimage.publish.proxmox import ProxmoxPublisher, ProxmoxSettings, api_host
from goldenimage.publish.publisher import ChecksumMismatch, CredentialsError, PublishError, publish

from .fakes.proxmox import SECRET, TOKEN_ID, USER, FakeProxmox
from .fakes.tls import localhost_tls


@pytest.fixture
def pve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeProxmox, Path]]:
    monkeypatch.setattr(proxmox, "TASK_POLL_S", 0.01)
    monkeypatch.setattr(publisher, "RETRY_BACKOFF_S", 0.01)
    context, ca = localhost_tls(tmp_path)
    with FakeProxmox(context) as fake:
        yield fake, ca
        assert fake.errors == [], fake.errors


def publisher_for(pve: tuple[FakeProxmox, Path], secret: str = SECRET, uefi: bool = False) -> ProxmoxPublisher:
    fake, ca = pve
    return ProxmoxPublisher(ProxmoxSettings(url=fake.url, token_id=f"{USER}!{TOKEN_ID}", token_secret=secret,
                                            node=fake.node, verify=str(ca), uefi=uefi))


def test_publish_makes_a_template_from_an_import_upload(pve: tuple[FakeProxmox, Path],
                                                        make_artifact: Callable[..., Artifact]) -> None:
    fake, _ = pve
    artifact = make_artifact()
    result = publish(publisher_for(pve), artifact)
    assert result.uploaded
    assert all(r.headers["Authorization"] == f"PVEAPIToken={USER}!{TOKEN_ID}={SECRET}" for r in fake.requests)
    upload = fake.sent("POST", f"/api2/json/nodes/{fake.node}/storage/local/upload")[0]
    assert upload.headers["Content-Type"].startswith("multipart/form-data")
    assert hashlib.sha256(artifact.qcow2.read_bytes()).hexdigest().encode() in upload.body
    config = fake.vms[int(result.image.id)]
    assert config["template"] == 1 and config["name"] == artifact.name
    # The fake asserts the rest of the create call: import-from names the uploaded volume, a cloud-init drive.
    assert config["scsihw"] == "virtio-scsi-single" and config["serial0"] == "socket"
    assert config["ciupgrade"] == "0" and config["agent"] == "enabled=1"
    assert json.loads(config["description"])["sha256"] == artifact.sha256()
    assert fake.volumes == {}  # the uploaded qcow2 is removed once the template holds its copy
    assert "bios" not in config and "efidisk0" not in config  # SeaBIOS unless asked


def test_uefi_template_boots_ovmf_with_secure_boot_keys(pve: tuple[FakeProxmox, Path],
                                                        make_artifact: Callable[..., Artifact]) -> None:
    fake, _ = pve
    result = publish(publisher_for(pve, uefi=True), make_artifact())
    config = fake.vms[int(result.image.id)]
    assert (config["bios"], config["machine"]) == ("ovmf", "q35")
    assert config["efidisk0"] == "local-lvm:1,efitype=4m,pre-enrolled-keys=1"


@pytest.mark.parametrize("uefi", [False, True], ids=["bios", "uefi"])
def test_the_cloud_init_drive_is_a_scsi_cd_on_virtio_scsi(pve: tuple[FakeProxmox, Path],
                                                           make_artifact: Callable[..., Artifact], uefi: bool) -> None:
    """On q35 (the UEFI template) qemu-server puts ide2 on the AHCI controller, which the cloud kernel cannot
    read: the cloud-init drive is scsi1 on virtio-scsi, on either machine, and there is no IDE or SATA drive."""
    fake, _ = pve
    publish(publisher_for(pve, uefi=uefi), make_artifact())
    (create,) = [r for r in fake.sent("POST") if r.path == f"/api2/json/nodes/{fake.node}/qemu"]
    form = {k: v[0] for k, v in parse_qs(create.body.decode()).items()}
    assert form["scsi1"] == "local-lvm:cloudinit"
    assert form["scsihw"].startswith("virtio-scsi")
    assert not [k for k in form if k.startswith(("ide", "sata"))], form


def test_uefi_is_refused_before_upload_for_a_bios_only_artifact(pve: tuple[FakeProxmox, Path],
                                                                make_artifact: Callable[..., Artifact]) -> None:
    fake, _ = pve
    with pytest.raises(PublishError, match="boots bios only: Proxmox .* uefi-secureboot"):
        publish(publisher_for(pve, uefi=True), make_artifact(firmware=("bios",)))
    assert fake.sent("POST", f"/api2/json/nodes/{fake.node}/storage") == [] and fake.vms == {}


def test_second_publish_uploads_nothing(pve: tuple[FakeProxmox, Path],
                                        make_artifact: Callable[..., Artifact]) -> None:
    fake, _ = pve
    artifact = make_artifact()
    first = publish(publisher_for(pve), artifact)
    second = publish(publisher_for(pve), artifact)
    assert not second.uploaded and second.image.id == first.image.id
    assert len(fake.sent("POST", f"/api2/json/nodes/{fake.node}/storage/local/upload")) == 1


def test_uefi_publish_of_an_artifact_published_for_bios_makes_a_uefi_template(
        pve: tuple[FakeProxmox, Path], make_artifact: Callable[..., Artifact]) -> None:
    fake, _ = pve
    artifact = make_artifact()
    bios = publish(publisher_for(pve), artifact)
    first_uefi = publish(publisher_for(pve, uefi=True), artifact)
    assert first_uefi.uploaded and first_uefi.image.id != bios.image.id and first_uefi.image.boot == "uefi"
    assert fake.vms[int(first_uefi.image.id)]["bios"] == "ovmf" and "bios" not in fake.vms[int(bios.image.id)]
    again_uefi, again_bios = publish(publisher_for(pve, uefi=True), artifact), publish(publisher_for(pve), artifact)
    assert (again_uefi.uploaded, again_uefi.image.id) == (False, first_uefi.image.id)
    assert (again_bios.uploaded, again_bios.image.id) == (False, bios.image.id)
    assert len(fake.sent("POST", f"/api2/json/nodes/{fake.node}/storage/local/upload")) == 2


def test_bad_token(pve: tuple[FakeProxmox, Path], make_artifact: Callable[..., Artifact]) -> None:
    with pytest.raises(CredentialsError) as err:
        publish(publisher_for(pve, secret="wrong-secret"), make_artifact())
    assert "wrong-secret" not in err.value.message + (err.value.hint or "")
    assert "PROXMOX_TOKEN_SECRET" in (err.value.hint or "")


def test_interrupted_upload_is_retried(pve: tuple[FakeProxmox, Path],
                                       make_artifact: Callable[..., Artifact]) -> None:
    fake, _ = pve
    fake.drop_uploads = 1
    result = publish(publisher_for(pve), make_artifact())
    assert fake.drop_uploads == 0 and fake.vms[int(result.image.id)]["template"] == 1


def test_checksum_mismatch_leaves_no_volume(pve: tuple[FakeProxmox, Path],
                                            make_artifact: Callable[..., Artifact]) -> None:
    fake, _ = pve
    artifact = make_artifact()
    artifact.sha256_file.write_text("0" * 64 + "  x.qcow2\n")  # what PVE is told to expect is not what it gets
    with pytest.raises(ChecksumMismatch, match="checksum mismatch"):
        publish(publisher_for(pve), artifact)
    assert fake.volumes == {} and fake.vms == {}


def test_failed_vm_creation_removes_the_upload(pve: tuple[FakeProxmox, Path],
                                               make_artifact: Callable[..., Artifact]) -> None:
    fake, _ = pve
    fake.fail_create = True
    with pytest.raises(PublishError, match="storage full"):
        publish(publisher_for(pve), make_artifact())
    assert fake.volumes == {} and fake.vms == {}


def test_old_pve_is_refused_with_the_manual_fallback(pve: tuple[FakeProxmox, Path],
                                                     make_artifact: Callable[..., Artifact]) -> None:
    fake, _ = pve
    fake.version = "8.2.4"
    with pytest.raises(PublishError) as err:
        publish(publisher_for(pve), make_artifact())
    assert "needs 8.4" in err.value.message and "import-from=" in (err.value.hint or "")
    assert fake.sent("POST") == []


def test_keep_skips_a_template_with_linked_clones(pve: tuple[FakeProxmox, Path],
                                                  make_artifact: Callable[..., Artifact]) -> None:
    fake, _ = pve
    olds = [publish(publisher_for(pve), make_artifact(key=f"{i:016x}")).image for i in range(1, 4)]
    fake.vms[500] = {"name": "web1", "scsi0": f"local-lvm:base-{olds[0].id}-disk-0/vm-500-disk-0,size=4G"}
    result = publish(publisher_for(pve), make_artifact(key="e" * 16), keep=1)
    assert result.kept_in_use == (olds[0].id,)
    assert set(result.removed) == {olds[1].id, olds[2].id}
    assert set(fake.vms) == {int(olds[0].id), int(result.image.id), 500}


def _packer_vm_settings(source: dict, values: dict) -> dict[str, str]:
    """The PVE settings the proxmox plugin gives the clone, from the rendered proxmox-clone source: each
    option translated to its PVE config key as the plugin does (builder/proxmox/common/step_start_vm.go)."""
    def value(v: object) -> str:
        text = str(v)
        return str(values[text[len("${var."):-1]]) if text.startswith("${var.") else text

    nic = source["network_adapters"][0]
    settings = {
        "ostype": source["os"], "cpu": source["cpu_type"], "scsihw": source["scsi_controller"],
        "vga": source["vga"]["type"], "boot": source["boot"],
        "agent": f"enabled={int(source['qemu_agent'])}",
        "net0": f"{nic['model']},bridge={value(nic['bridge'])}",
        "memory": value(source["memory"]), "cores": value(source["cores"]),
        "ciupgrade": str(int(not source["cloud_init_disable_upgrade_packages"])),
        "cloudinit": f"{source['cloud_init_disk_type']}:{value(source['cloud_init_storage_pool'])}",
    }
    settings.update({f"serial{i}": s for i, s in enumerate(source["serials"])})
    return settings


def _published_vm_settings(config: dict) -> dict[str, str]:
    """The same settings read from the VM that `golden publish --to proxmox` created."""
    (drive,) = [k for k, v in config.items() if str(v).endswith(":cloudinit")]
    settings = {k: str(config[k]) for k in ("ostype", "cpu", "scsihw", "vga", "boot", "agent", "net0", "memory",
                                            "cores", "ciupgrade", "serial0")}
    settings["cloudinit"] = f"{drive.rstrip('0123456789')}:{config[drive].split(':')[0]}"
    return settings


def test_a_packer_made_template_has_the_hardware_of_a_published_one(pve: tuple[FakeProxmox, Path],
                                                                    make_artifact: Callable[..., Artifact]) -> None:
    from goldenimage.model.profiles import resolve
    from goldenimage.render.packer_template import Target, render_template

    fake, _ = pve
    result = publish(publisher_for(pve), make_artifact())
    published = fake.vms[int(result.image.id)]
    template, values = render_template(resolve("web", 12), Target.PROXMOX, required_plugins=True)
    packer = _packer_vm_settings(template["source"]["proxmox-clone"]["golden"], values)
    assert packer == _published_vm_settings(published)
    # the boot order names the published template's image disk; the clone keeps the base template's disks
    # (no `disks` list, which would replace them)
    disk = packer["boot"].removeprefix("order=").split(";")[0]
    assert disk in published and "cloudinit" not in published[disk]
    assert "disks" not in template["source"]["proxmox-clone"]["golden"]
    assert packer["cpu"] != "kvm64" and packer["ostype"] != "other"  # not the plugin's defaults


def test_an_ipv6_proxmox_url_keeps_its_brackets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                make_artifact: Callable[..., Artifact]) -> None:
    monkeypatch.setattr(proxmox, "TASK_POLL_S", 0.01)
    context, ca = localhost_tls(tmp_path)
    with FakeProxmox(context, host="::1") as fake:
        assert fake.url.startswith("https://[::1]:")
        monkeypatch.setenv("PROXMOX_URL", fake.url)
        monkeypatch.setenv("PROXMOX_TOKEN_ID", f"{USER}!{TOKEN_ID}")
        monkeypatch.setenv("PROXMOX_TOKEN_SECRET", SECRET)
        monkeypatch.setenv("PROXMOX_CA_BUNDLE", str(ca))
        result = publish(ProxmoxPublisher(ProxmoxSettings.from_env(node=fake.node)), make_artifact())
        assert result.uploaded and fake.vms[int(result.image.id)]["template"] == 1
        assert fake.errors == []


@pytest.mark.parametrize("url,host,port", [
    ("https://[::1]:8006", "[::1]", 8006),
    ("https://[2001:db8::5]", "[2001:db8::5]", 8006),
    ("pve.example:8443", "pve.example", 8443),
    ("https://192.0.2.7:8006/", "192.0.2.7", 8006),
])
def test_api_host_of_a_proxmox_url(url: str, host: str, port: int) -> None:
    assert api_host(url) == (host, port)


def test_a_permission_refusal_names_the_datastore_privileges(pve: tuple[FakeProxmox, Path],
                                                              make_artifact: Callable[..., Artifact]) -> None:
    fake, _ = pve
    fake.forbid_upload = True
    with pytest.raises(CredentialsError) as err:
        publish(publisher_for(pve), make_artifact())
    assert "Datastore.AllocateTemplate" in err.value.message  # PVE's own words
    hint = err.value.hint or ""
    assert "Datastore.AllocateTemplate" in hint and "Datastore.Allocate and" in hint and "PVEVMAdmin" in hint
