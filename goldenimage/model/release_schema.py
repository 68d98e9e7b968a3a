"""The schema of the release matrix file (profiles/releases.yaml), checked once when it is read.

A releases.yaml in the user's profile folder is input like a profile: its mirrors, suites, components and
package names go into the image's apt sources and command lines, so they are checked by the same rules."""

from __future__ import annotations

import datetime
import re
from typing import Annotated

from pydantic import AfterValidator, Strict

from ..core.schema import StrictModel
from .values import OneLine, PackageName, Url, _fullmatch

# Debian archive names: suites and codenames (bookworm, bookworm-updates, buster/updates), components.
SUITE = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}(/[a-z0-9][a-z0-9.+-]{0,63})?")
COMPONENT = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}")
VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# A value substituted into profiles ({{ php }} -> 8.2): a version or a package-like word.
VAR_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}")


def _checked(pattern: re.Pattern[str], what: str) -> AfterValidator:
    return AfterValidator(lambda value: _fullmatch(pattern, value, what))


Suite = Annotated[str, _checked(SUITE, "Debian suite such as 'bookworm-updates'")]
Component = Annotated[str, _checked(COMPONENT, "archive component such as 'main'")]
VarName = Annotated[str, _checked(VAR_NAME, "variable name (letters, digits, '_')")]
VarValue = Annotated[str, _checked(VAR_VALUE, "variable value (one word: letters, digits, '.', '+', '_', '-')")]
StrictInt = Annotated[int, Strict()]


class CloudInitQuirks(StrictModel):
    version: OneLine
    clean_machine_id: bool
    status_wait_ok: list[StrictInt]
    network_renderers: list[VarValue] = []


SHA256 = re.compile(r"[0-9a-f]{64}")
FINGERPRINT = re.compile(r"[0-9A-F]{40}")


class ExtendedSourceModel(StrictModel):
    name: VarValue
    url: Url
    suite: Suite
    components: list[Component]
    keyring_sha256: Annotated[str, _checked(SHA256, "sha256 in hex")]
    keyring_fingerprint: Annotated[str, _checked(FINGERPRINT, "OpenPGP fingerprint (40 hex digits)")]


class SupportModel(StrictModel):
    # dates, ISO 8601: Debian's security support ends at the first, Debian LTS at the second
    security_until: datetime.date
    lts_until: datetime.date
    extended: ExtendedSourceModel | None = None


class ReleaseModel(StrictModel):
    codename: Suite
    archived: bool
    mirror: Url
    security_mirror: Url
    suites: list[Suite]
    security_suite: Suite
    components: list[Component]
    kernel: dict[VarName, PackageName]
    base_packages: list[PackageName] = []
    metal_packages: list[PackageName] = []
    vars: dict[VarName, VarValue]
    cloud_init: CloudInitQuirks
    support: SupportModel


class MatrixModel(StrictModel):
    default: StrictInt
    base_packages: list[PackageName] = []
    metal_packages: list[PackageName] = []
    releases: dict[int, ReleaseModel]
