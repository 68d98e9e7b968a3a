"""The Proxmox VE API (/api2/json) as its API viewer documents it: API-token auth, storage upload with
content `import`, VM create with import-from, convert to template, tasks by UPID, cluster resources; and for
the rolling `--image` upgrade: a VM's status, shutdown and start, a config change that replaces its boot disk
(import-from another volume, the old disk kept as unusedN as qemu-server does; a volume taken back from unusedN
leaves it), and a disk resize.

It asserts what proxmoxer sends: the `PVEAPIToken=USER@REALM!TOKENID=SECRET` header on every call, the
multipart upload's fields (content, filename, checksum, checksum-algorithm) and the VM's settings.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qs

from .server import FakeServer, Request, Response

USER, TOKEN_ID, SECRET = "golden@pve", "publish", "5b1f0c1e-aaaa-bbbb-cccc-0123456789ab"


class FakeProxmox(FakeServer):
    def __init__(self, tls: ssl.SSLContext, version: str = "8.4.1", node: str = "pve1", host: str = "127.0.0.1"
                 ) -> None:
        super().__init__(tls, host)
        self.version, self.node = version, node
        self.storage_content = {"local": "iso,vztmpl,import,backup", "local-lvm": "images,rootdir"}
        self.volumes: dict[str, bytes] = {}  # volid -> bytes
        self.vms: dict[int, dict[str, Any]] = {}  # vmid -> config (strings, as PVE returns them)
        self.tasks: dict[str, dict[str, Any]] = {}
        self.drop_uploads = 0
        self.fail_create = False
        self.forbid_upload = False  # a token without Datastore.AllocateTemplate on the upload storage
        self._upid = 0
        #: vmid -> "running" or "stopped" (a VM not listed is stopped)
        self.power: dict[int, str] = {}
        #: called with the vmid and its config when a VM starts (it boots its boot disk then)
        self.on_start: Callable[[int, dict[str, Any]], None] | None = None

    def _task(self, kind: str, vmid: Any = "", exitstatus: str = "OK") -> str:
        self._upid += 1
        upid = f"UPID:{self.node}:{self._upid:08X}:0001E240:6543210F:{kind}:{vmid}:{USER}!{TOKEN_ID}:"
        # Running at the first poll, finished at the second: the client must really wait.
        self.tasks[upid] = {"polls": 0, "exitstatus": exitstatus}
        return upid

    def before_body(self, method: str, path: str, headers: dict[str, str]) -> Response | None:
        if method == "POST" and path.endswith("/upload") and self.drop_uploads > 0:
            self.drop_uploads -= 1
            return Response(drop=True)
        return None

    def handle(self, request: Request) -> Response:
        auth = request.headers.get("Authorization", "")
        if auth != f"PVEAPIToken={USER}!{TOKEN_ID}={SECRET}":
            assert auth.startswith("PVEAPIToken="), f"not an API token header: {auth[:20]!r}"
            return Response(401, {"data": None}, headers={"Content-Type": "application/json"})
        path, method = request.path.removeprefix("/api2/json"), request.method
        form = self._form(request)
        route = f"{method} {path}"
        if route == "GET /version":
            return ok({"version": self.version, "release": self.version.rsplit(".", 1)[0], "repoid": "fake"})
        if route == "GET /cluster/nextid":
            return ok(str(max([99, *self.vms]) + 1))
        if route == "GET /cluster/resources":
            assert request.query.get("type") == ["vm"], request.query
            return ok([{"id": f"qemu/{vmid}", "type": "qemu", "vmid": vmid, "node": self.node,
                        "name": c.get("name"), "template": int(c.get("template", 0)), "tags": c.get("tags", "")}
                       for vmid, c in self.vms.items()])
        if m := re.fullmatch(rf"GET /nodes/{self.node}/storage/([\w-]+)/status", route):
            return ok({"content": self.storage_content[m[1]], "active": 1, "enabled": 1, "type": "dir"})
        if m := re.fullmatch(rf"POST /nodes/{self.node}/storage/([\w-]+)/upload", route):
            return self._upload(m[1], form)
        if m := re.fullmatch(rf"DELETE /nodes/{self.node}/storage/[\w-]+/content/(.+)", route):
            self.volumes.pop(m[1], None)
            return ok(self._task("imgdel"))
        if m := re.fullmatch(rf"GET /nodes/{self.node}/tasks/([^/]+)/status", route):
            task = self.tasks[m[1]]
            task["polls"] += 1
            if task["polls"] == 1:
                return ok({"status": "running", "upid": m[1]})
            return ok({"status": "stopped", "exitstatus": task["exitstatus"], "upid": m[1]})
        if route == f"POST /nodes/{self.node}/qemu":
            return self._create_vm(form)
        if m := re.fullmatch(rf"GET /nodes/{self.node}/qemu/(\d+)/config", route):
            return ok(self.vms[int(m[1])])
        if m := re.fullmatch(rf"GET /nodes/{self.node}/qemu/(\d+)/status/current", route):
            return ok({"status": self.power.get(int(m[1]), "stopped"), "vmid": int(m[1])})
        if m := re.fullmatch(rf"POST /nodes/{self.node}/qemu/(\d+)/status/(shutdown|start)", route):
            return self._power(int(m[1]), m[2], form)
        if m := re.fullmatch(rf"POST /nodes/{self.node}/qemu/(\d+)/config", route):
            return self._update_vm(int(m[1]), form)
        if m := re.fullmatch(rf"PUT /nodes/{self.node}/qemu/(\d+)/resize", route):
            return self._resize(int(m[1]), form)
        if m := re.fullmatch(rf"POST /nodes/{self.node}/qemu/(\d+)/template", route):
            self.vms[int(m[1])]["template"] = 1
            return ok(self._task("qmtemplate", m[1]))
        if m := re.fullmatch(rf"DELETE /nodes/{self.node}/qemu/(\d+)", route):
            assert request.query.get("purge") == ["1"], "VM removed without purge"
            if self.vms.pop(int(m[1]), None) is None:
                return Response(500, {"data": None, "message": f"Configuration file for VM {m[1]} does not exist"})
            return ok(self._task("qmdestroy", m[1]))
        raise AssertionError(f"unexpected request {route}")

    def _form(self, request: Request) -> dict[str, Any]:
        content_type = request.headers.get("Content-Type", "")
        if content_type.startswith("multipart/form-data"):
            message = BytesParser(policy=HTTP).parsebytes(
                f"Content-Type: {content_type}\r\n\r\n".encode() + request.body)
            form: dict[str, Any] = {}
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                filename = part.get_filename()
                payload = part.get_payload(decode=True)
                form[str(name)] = (filename, payload) if filename else payload.decode()
            return form
        return {k: v[0] for k, v in parse_qs(request.body.decode()).items()}

    def _upload(self, storage: str, form: dict[str, Any]) -> Response:
        if self.forbid_upload:  # PVE answers a failed permission check in the status line
            return Response(403, {"data": None}, reason=f"Permission check failed (/storage/{storage}, "
                                                        "Datastore.AllocateTemplate)")
        assert form.get("content") == "import", f"content {form.get('content')}"
        assert "import" in self.storage_content[storage].split(","), f"{storage} has no import content"
        filename, data = form["filename"]
        assert filename.endswith(".qcow2"), filename
        assert form.get("checksum-algorithm") == "sha256", form.get("checksum-algorithm")
        digest = hashlib.sha256(data).hexdigest()
        if digest != form.get("checksum"):
            return ok(self._task("imgcopy", exitstatus=f"checksum mismatch: got '{digest}' != expect "
                                                       f"'{form.get('checksum')}'"))
        self.volumes[f"{storage}:import/{filename}"] = data
        return ok(self._task("imgcopy"))

    def _create_vm(self, form: dict[str, Any]) -> Response:
        vmid = int(form["vmid"])
        assert vmid not in self.vms, f"VM {vmid} exists"
        scsi0 = dict(kv.split("=", 1) for kv in form["scsi0"].split(",")[1:])
        assert scsi0["import-from"] in self.volumes, f"import-from {scsi0['import-from']} is not a volume"
        assert form["scsihw"].startswith("virtio-scsi"), form["scsihw"]
        drives = [k for k, v in form.items() if re.fullmatch(r"(ide|sata|scsi|virtio)\d+", k) and ":cloudinit" in v]
        assert len(drives) == 1, f"cloud-init drives: {drives}"
        # qm.conf: ide0-3, sata0-5, scsi0-30 (virtio cannot hold a cloud-init drive: it is a CD-ROM)
        bus, index = re.fullmatch(r"([a-z]+)(\d+)", drives[0]).groups()  # type: ignore[union-attr]
        assert int(index) <= {"ide": 3, "sata": 5, "scsi": 30}[bus], drives
        assert form["agent"].startswith("1") or "enabled=1" in form["agent"], form["agent"]
        assert form["serial0"] == "socket" and form["ciupgrade"] == "0", form
        if "efidisk0" in form:  # as qm.conf documents it: an EFI vars disk is for OVMF; keys need efitype=4m
            assert form.get("bios") == "ovmf", form
            storage, size = form["efidisk0"].split(",")[0].split(":")
            assert size.isdigit(), form["efidisk0"]
            efi = dict(kv.split("=", 1) for kv in form["efidisk0"].split(",")[1:])
            assert efi.get("efitype", "2m") in ("2m", "4m") and set(efi) <= {"efitype", "pre-enrolled-keys"}, efi
            assert efi.get("pre-enrolled-keys", "0") == "0" or efi.get("efitype") == "4m", efi
        if self.fail_create:
            return ok(self._task("qmcreate", vmid, exitstatus="unable to create VM: storage full"))
        config = {k: v for k, v in form.items() if k != "vmid"}
        config["scsi0"] = f"{form['scsi0'].split(':')[0]}:base-{vmid}-disk-0,size=4G"
        self.vms[vmid] = config
        return ok(self._task("qmcreate", vmid))

    # --- a running VM's boot disk (rolling --image) --------------------------------------------------------

    def volumes_in_use(self) -> dict[str, str]:
        """volid -> its drive string, for every disk of every VM (templates' base disks included)."""
        found = {}
        for config in self.vms.values():
            for key, value in config.items():
                if re.fullmatch(r"(ide|sata|scsi|virtio)\d+|unused\d+", key) and ":cloudinit" not in str(value):
                    found[str(value).split(",")[0]] = str(value)
        return found

    def _power(self, vmid: int, action: str, form: dict[str, Any]) -> Response:
        config = self.vms.get(vmid)
        if config is None:
            return Response(500, {"data": None}, reason=f"Configuration file 'nodes/{self.node}/qemu-server/"
                                                        f"{vmid}.conf' does not exist")
        assert str(config.get("template", 0)) != "1", f"{action} of template {vmid}"
        state = self.power.get(vmid, "stopped")
        if action == "shutdown":
            if state != "running":  # PVE: "VM NNN not running"
                return ok(self._task("qmshutdown", vmid, exitstatus=f"VM {vmid} not running"))
            assert form.get("forceStop") == "1", "a shutdown without forceStop may leave the VM running"
            self.power[vmid] = "stopped"
            return ok(self._task("qmshutdown", vmid))
        assert state == "stopped", f"start of a {state} VM {vmid}"
        self.power[vmid] = "running"
        if self.on_start:
            self.on_start(vmid, config)
        return ok(self._task("qmstart", vmid))

    def _update_vm(self, vmid: int, form: dict[str, Any]) -> Response:
        config = self.vms[vmid]
        disks = {k: v for k, v in form.items() if re.fullmatch(r"(ide|sata|scsi|virtio)\d+", k)}
        if disks:
            assert self.power.get(vmid, "stopped") == "stopped", f"VM {vmid}: disk changed while it runs"
        for key, value in disks.items():
            volume, _, options = value.partition(",")
            opts = dict(o.split("=", 1) for o in options.split(",") if o)
            if "import-from" in opts:
                storage, size = volume.split(":")
                assert size == "0", f"import-from needs STORAGE:0, got {volume}"
                source = self.volumes_in_use().get(opts.pop("import-from"))
                assert source is not None, f"import-from {value}: no such volume"
                number = len([k for k in self.volumes_in_use() if f"vm-{vmid}-disk-" in k])
                size_opt = re.search(r"size=([^,]+)", source)
                new = f"{storage}:vm-{vmid}-disk-{number}," + ",".join(
                    [*(f"{k}={v}" for k, v in opts.items()), f"size={size_opt[1] if size_opt else '4G'}"])
            else:  # an existing volume: this VM's own, taken back from unusedN (PVE drops that entry)
                assert f"vm-{vmid}-disk-" in volume, f"{key}: {volume} is not a disk of VM {vmid}"
                unused = [k for k, v in config.items() if k.startswith("unused") and v.split(",")[0] == volume]
                assert unused, f"{key}: {volume} is not an unused disk of VM {vmid}"
                del config[unused[0]]
                new = value
            if key in config:  # the old disk is kept, as unusedN
                index = next(i for i in range(256) if f"unused{i}" not in config)
                config[f"unused{index}"] = str(config[key]).split(",")[0]
            config[key] = new
        for key in str(form.get("delete", "")).split(","):
            if key:
                assert not key.startswith("unused") and key not in disks, f"delete {key} would destroy a disk"
                config.pop(key, None)
        for key, value in form.items():
            if key not in disks and key not in ("delete", "digest"):
                config[key] = value
        return ok(self._task("qmconfig", vmid) if disks else None)

    def _resize(self, vmid: int, form: dict[str, Any]) -> Response:
        config = self.vms[vmid]
        disk, size = form["disk"], form["size"]
        assert re.fullmatch(r"\d+(\.\d+)?[KMGT]", size), f"size {size}"
        config[disk] = re.sub(r"size=[^,]+", f"size={size}", str(config[disk]))
        return ok(self._task("resize", vmid))


def ok(data: Any) -> Response:
    return Response(200, {"data": data})
