"""Keystone v3 + Glance v2 + Nova's servers (list, show, rebuild), as their public API references describe them.

One server, three path prefixes (/identity, /image, /compute), as a devstack-style cloud lays them out.
It asserts what openstacksdk sends: the password auth body, the token on every call, the image create
body, the octet-stream upload; and answers what Glance answers: checksum (MD5), os_hash_algo/value.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .server import FakeServer, Request, Response

TOKEN = "gAAAAAfake-token"
IMAGE_FIELDS = {"id", "name", "status", "disk_format", "container_format", "tags", "min_disk", "min_ram",
                "visibility", "protected", "created_at", "updated_at", "checksum", "os_hash_algo", "os_hash_value",
                "size", "virtual_size", "self", "file", "schema", "owner", "os_hidden"}


class FakeOpenStack(FakeServer):
    def __init__(self, username: str = "demo", password: str = "s3cret-password", project: str = "demo") -> None:
        super().__init__()
        self.username, self.password, self.project = username, password, project
        self.images: dict[str, dict[str, Any]] = {}
        self.data: dict[str, bytes] = {}
        self.servers: list[dict[str, Any]] = []  # {"id", "name", "image": {"id"}}, optional "status"
        #: called with the server once a rebuild is done (it boots its new disk then)
        self.on_boot: Callable[[dict[str, Any]], None] | None = None
        #: a rebuild on one of these images ends in ERROR
        self.failing_images: set[str] = set()
        self.quota_bytes: int | None = None
        self.drop_uploads = 0  # break this many PUT .../file connections mid-body
        self.wrong_checksum = False
        self._clock = 0

    # --- Keystone ------------------------------------------------------------------------------------

    def _version_v3(self) -> dict[str, Any]:
        return {"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
                "links": [{"rel": "self", "href": f"{self.url}/identity/v3/"}],
                "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]}

    def _token(self, request: Request) -> Response:
        auth = request.json()["auth"]
        identity = auth["identity"]
        assert identity["methods"] == ["password"], f"unexpected auth methods {identity['methods']}"
        user = identity["password"]["user"]
        assert "domain" in user, "user without a domain"
        if user.get("name") != self.username or user.get("password") != self.password:
            return Response(401, {"error": {"code": 401, "title": "Unauthorized",
                                            "message": "The request you have made requires authentication."}})
        project = auth.get("scope", {}).get("project", {})
        assert project.get("name") == self.project, f"scope {auth.get('scope')}"
        now = datetime.now(UTC)
        catalog = [
            {"type": "image", "name": "glance", "id": "img", "endpoints": [
                {"id": "img-pub", "interface": "public", "region": "RegionOne", "region_id": "RegionOne",
                 "url": f"{self.url}/image"}]},
            {"type": "compute", "name": "nova", "id": "cmp", "endpoints": [
                {"id": "cmp-pub", "interface": "public", "region": "RegionOne", "region_id": "RegionOne",
                 "url": f"{self.url}/compute/v2.1"}]},
        ]
        token = {"methods": ["password"], "expires_at": now.replace(year=now.year + 1).isoformat(),
                 "issued_at": now.isoformat(), "audit_ids": ["a"],
                 "user": {"id": "u1", "name": self.username, "domain": {"id": "default", "name": "Default"}},
                 "project": {"id": "p1", "name": self.project, "domain": {"id": "default", "name": "Default"}},
                 "roles": [{"id": "r1", "name": "member"}], "catalog": catalog}
        return Response(201, {"token": token}, headers={"X-Subject-Token": TOKEN})

    # --- Glance --------------------------------------------------------------------------------------

    def _image_view(self, image: dict[str, Any]) -> dict[str, Any]:
        return dict(image)

    def _create_image(self, request: Request) -> Response:
        body = request.json()
        for required in ("name", "disk_format", "container_format"):
            assert required in body, f"image create without {required}"
        assert body["disk_format"] == "qcow2" and body["container_format"] == "bare", body
        for key, value in body.items():
            if key not in IMAGE_FIELDS and key != "tags":
                assert isinstance(value, str), f"property {key} must be a string, got {value!r}"
        self._clock += 1
        image_id = str(uuid.uuid4())
        stamp = f"2026-11-26T20:{self._clock // 60:02d}:{self._clock % 60:02d}Z"
        image = {"visibility": "private", "protected": False, "os_hidden": False, "min_disk": 0, "min_ram": 0,
                 "tags": [], **body, "id": image_id, "status": "queued", "checksum": None, "os_hash_algo": None,
                 "os_hash_value": None, "size": None, "virtual_size": None, "owner": "p1", "created_at": stamp,
                 "updated_at": stamp, "self": f"/v2/images/{image_id}", "file": f"/v2/images/{image_id}/file",
                 "schema": "/v2/schemas/image"}
        self.images[image_id] = image
        return Response(201, self._image_view(image), headers={"Location": f"{self.url}/image/v2/images/{image_id}"})

    def before_body(self, method: str, path: str, headers: dict[str, str]) -> Response | None:
        if method == "PUT" and path.endswith("/file") and self.drop_uploads > 0:
            self.drop_uploads -= 1
            return Response(drop=True)
        return None

    def _upload(self, image_id: str, request: Request) -> Response:
        image = self.images.get(image_id)
        if image is None:
            return Response(404, {"message": "not found"})
        assert request.headers.get("Content-Type") == "application/octet-stream", request.headers
        assert image["status"] == "queued", f"upload to a {image['status']} image"
        used = sum(len(d) for d in self.data.values())
        if self.quota_bytes is not None and used + len(request.body) > self.quota_bytes:
            return Response(413, raw=b"<html><body><h1>413 Request Entity Too Large</h1>Denying attempt to upload "
                                     b"image because it exceeds the quota</body></html>",
                            headers={"Content-Type": "text/html"})
        self.data[image_id] = request.body
        sha512 = hashlib.sha512(request.body).hexdigest()
        image.update(status="active", size=len(request.body), checksum=hashlib.md5(request.body).hexdigest(),
                     os_hash_algo="sha512", os_hash_value="0" * 128 if self.wrong_checksum else sha512)
        return Response(204)

    def _list_images(self, request: Request) -> Response:
        tags = request.query.get("tag", [])
        found = [i for i in self.images.values() if all(t in i["tags"] for t in tags)]
        return Response(200, {"images": [self._image_view(i) for i in found], "first": "/v2/images",
                              "schema": "/v2/schemas/images"})

    # --- Nova ----------------------------------------------------------------------------------------

    def _server_view(self, server: dict[str, Any]) -> dict[str, Any]:
        return {"status": "ACTIVE", "flavor": {"original_name": "b3-8"}, "addresses": {}, "metadata": {},
                "links": [], **{k: v for k, v in server.items() if not k.startswith("_")}}

    def _server(self, server_id: str, request: Request, action: bool) -> Response:
        server = next((s for s in self.servers if s["id"] == server_id), None)
        if server is None:
            return Response(404, {"itemNotFound": {"code": 404, "message": f"Instance {server_id} could not be "
                                                                              "found."}})
        if not action:
            assert request.method == "GET", request.method
            if server.get("status") == "REBUILD":  # done at the next look: the client must wait for it
                image_id = server["image"]["id"]
                server["status"] = "ERROR" if image_id in self.failing_images else "ACTIVE"
                if server["status"] == "ACTIVE" and self.on_boot:
                    self.on_boot(server)
            return Response(200, {"server": self._server_view(server)})
        body = request.json()
        assert request.method == "POST" and list(body) == ["rebuild"], body
        image_id = body["rebuild"]["imageRef"]
        # Nova's rebuild API: an image that is not active, or unknown, is a 400
        image = self.images.get(image_id)
        if image is None or image["status"] != "active":
            return Response(400, {"badRequest": {"code": 400, "message": f"Image {image_id} is not active."}})
        assert server.get("status", "ACTIVE") == "ACTIVE", f"rebuild of a {server.get('status')} server"
        assert set(body["rebuild"]) == {"imageRef"}, f"the rebuild changes more than the image: {body}"
        server.update(status="REBUILD", image={"id": image_id})
        return Response(202, {"server": self._server_view(server)})

    # --- routing -------------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        path, method = request.path.rstrip("/"), request.method
        if path == "/identity":
            return Response(300, {"versions": {"values": [self._version_v3()]}})
        if path == "/identity/v3":
            return Response(200, {"version": self._version_v3()})
        if path == "/identity/v3/auth/tokens" and method == "POST":
            return self._token(request)
        if path == "/image":
            return Response(300, {"versions": [{"id": "v2.16", "status": "CURRENT",
                                                "links": [{"rel": "self", "href": f"{self.url}/image/v2/"}]}]})
        if path in ("/compute", "/compute/v2.1"):
            version = {"id": "v2.1", "status": "CURRENT", "version": "2.96", "min_version": "2.1",
                       "updated": "2013-07-23T11:33:21Z",
                       "links": [{"rel": "self", "href": f"{self.url}/compute/v2.1/"}]}
            return Response(200, {"version": version} if path.endswith("v2.1") else {"versions": [version]})
        if request.headers.get("X-Auth-Token") != TOKEN:
            return Response(401, {"error": {"code": 401, "message": "authentication required"}})
        if path == "/image/v2/images" and method == "POST":
            return self._create_image(request)
        if path == "/image/v2/images" and method == "GET":
            return self._list_images(request)
        if match := re.fullmatch(r"/image/v2/images/([^/]+)/file", path):
            return self._upload(match[1], request)
        if match := re.fullmatch(r"/image/v2/images/([^/]+)", path):
            image = self.images.get(match[1])
            if image is None:
                return Response(404, {"message": "No image found"})
            if method == "DELETE":
                del self.images[match[1]]
                self.data.pop(match[1], None)
                return Response(204)
            return Response(200, self._image_view(image))
        if path == "/compute/v2.1/servers/detail" and method == "GET":
            image_id = request.query.get("image", [None])[0]
            found = [s for s in self.servers if image_id is None or s["image"]["id"] == image_id]
            return Response(200, {"servers": found})
        if match := re.fullmatch(r"/compute/v2.1/servers/([^/]+)(/action)?", path):
            return self._server(match[1], request, bool(match[2]))
        raise AssertionError(f"unexpected request {method} {request.path}")
