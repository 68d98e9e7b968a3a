"""The schema of the release matrix file (profiles/releases.yaml), checked once when it is read."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class CloudInitQuirks(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str
    clean_machine_id: bool
    status_wait_ok: list[int]
    network_renderers: list[str] = []


class ReleaseModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    codename: str
    archived: bool
    mirror: str
    security_mirror: str
    suites: list[str]
    security_suite: str
    components: list[str]
    kernel: dict[str, str]
    base_packages: list[str] = []
    metal_packages: list[str] = []
    vars: dict[str, str]
    cloud_init: CloudInitQuirks


class MatrixModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default: int
    base_packages: list[str] = []
    metal_packages: list[str] = []
    releases: dict[int, ReleaseModel]
