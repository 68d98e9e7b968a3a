"""The OVH API v1 (/1.0) as its documentation describes it: /auth/time unsigned, every other call signed
with X-Ovh-Application, X-Ovh-Consumer, X-Ovh-Timestamp and X-Ovh-Signature
`$1$` + sha1(AS+CK+METHOD+URL+BODY+TSTAMP, joined by '+'); the BYOI reinstall and its task.

The task API answers the statuses queued in `task_failures` first (OVH's API does answer 404 and 5xx now and
then while a task runs). The reinstall's `storage` must name one of the server's disk groups.

Like OVH's installer, it downloads imageURL (here a presigned URL on the local moto server) and checks it
against imageCheckSum before the task is done.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import requests

from .server import FakeServer, Request, Response

AK, AS, CK = "fakeAppKey123", "fakeAppSecret456", "fakeConsumerKey789"
SERVER = "ns1234567.ip-203-0-113.eu"


class FakeOvh(FakeServer):
    def __init__(self, ram_gb: int = 32, disks: int = 1, raid_controller: str | None = None,
                 boot_mode: str = "legacy") -> None:
        super().__init__()
        self.ram_gb, self.disks, self.raid_controller = ram_gb, disks, raid_controller
        self.extra_groups: list[dict[str, Any]] = []  # disk groups after the first (diskGroupId 1)
        self.task_failures: list[int] = []  # HTTP statuses the task API answers before the real status
        assert boot_mode in ("legacy", "uefi", "uefi-legacy")  # dedicated.server.BootModeEnum
        self.boot_mode = boot_mode
        self.reinstalls: list[dict[str, Any]] = []
        self.tasks: dict[int, dict[str, Any]] = {}
        self.downloaded_sha256: str | None = None

    def _check_signature(self, request: Request) -> Response | None:
        h = request.headers
        assert h.get("X-Ovh-Application") == AK, "X-Ovh-Application missing or wrong"
        if h.get("X-Ovh-Consumer") != CK:
            return Response(403, {"errorCode": "INVALID_CREDENTIAL", "httpCode": "403 Forbidden",
                                  "message": "This credential is not valid"})
        stamp = h.get("X-Ovh-Timestamp", "")
        assert abs(int(stamp) - time.time()) < 60, "timestamp out of the server's window"
        url = f"{self.url}{request.path}" + (f"?{request.raw_query}" if request.raw_query else "")
        expected = "$1$" + hashlib.sha1("+".join([AS, CK, request.method, url, request.body.decode(), stamp])
                                        .encode()).hexdigest()
        if h.get("X-Ovh-Signature") != expected:
            return Response(400, {"errorCode": "INVALID_SIGNATURE", "httpCode": "400 Bad Request",
                                  "message": "Invalid signature"})
        return None

    def handle(self, request: Request) -> Response:
        path = request.path.removeprefix("/1.0")
        if path == "/auth/time":
            assert "X-Ovh-Signature" not in request.headers, "/auth/time must not be signed"
            return Response(200, int(time.time()))
        refused = self._check_signature(request)
        if refused:
            return refused
        base = f"/dedicated/server/{SERVER}"
        if request.method == "GET" and path == f"{base}/specifications/hardware":
            return Response(200, {"memorySize": {"unit": "MB", "value": self.ram_gb * 1024},
                                  "diskGroups": self.disk_groups(),
                                  "bootMode": self.boot_mode, "defaultHardwareRaidType": None})
        if request.method == "POST" and path == f"{base}/reinstall":
            return self._reinstall(request.json())
        if request.method == "GET" and path.startswith(f"{base}/task/"):
            if self.task_failures:
                status = self.task_failures.pop(0)
                code = "NOT_FOUND" if status == 404 else "INTERNAL_SERVER_ERROR"
                return Response(status, {"errorCode": code, "httpCode": str(status), "message": "try again"},
                                headers={"X-Ovh-QueryId": "EU.ext-1.fake"})
            task = self.tasks[int(path.rsplit("/", 1)[1])]
            task["polls"] += 1
            task["status"] = "doing" if task["polls"] == 1 else "done"
            return Response(200, {k: v for k, v in task.items() if k != "polls"})
        if not path.startswith(base):
            return Response(404, {"errorCode": "NOT_FOUND", "message": f"The requested object ({path}) does not exist"})
        raise AssertionError(f"unexpected request {request.method} {request.path}")

    def disk_groups(self) -> list[dict[str, Any]]:
        return [{"diskGroupId": 1, "numberOfDisks": self.disks, "diskSize": {"unit": "GB", "value": 960},
                 "diskType": "NVME", "raidController": self.raid_controller}, *self.extra_groups]

    def _reinstall(self, body: dict[str, Any]) -> Response:
        assert body["operatingSystem"] == "byoi_64", body["operatingSystem"]
        c = body["customizations"]
        assert c["imageType"] == "qcow2" and c["imageCheckSumType"] == "sha256", c
        groups = {g["diskGroupId"] for g in self.disk_groups()}
        assert all(s.get("diskGroupId") in groups for s in body.get("storage", [])), body.get("storage")
        assert c["imageURL"].startswith("http://127.0.0.1:"), "the fake only downloads from loopback"
        base64.b64decode(c.get("configDriveUserData", ""), validate=True)
        assert set(c) <= {"imageURL", "imageType", "imageCheckSum", "imageCheckSumType", "configDriveUserData",
                          "configDriveMetadata", "efiBootloaderPath", "hostname", "sshKey", "httpHeaders"}, c
        data = requests.get(c["imageURL"], timeout=10).content
        self.downloaded_sha256 = hashlib.sha256(data).hexdigest()
        assert self.downloaded_sha256 == c["imageCheckSum"], "image at imageURL does not match imageCheckSum"
        self.reinstalls.append(body)
        task_id = 1000 + len(self.tasks)
        self.tasks[task_id] = {"taskId": task_id, "function": "reinstallServer", "status": "init", "polls": 0,
                               "comment": "Start reinstall", "startDate": "2026-11-26T20:00:00+01:00"}
        return Response(200, {k: v for k, v in self.tasks[task_id].items() if k != "polls"})
