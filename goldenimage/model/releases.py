"""The Debian release matrix (profiles/releases.yaml) as typed, frozen data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from ..core.errors import InputError
from ..core.paths import find_profile_file, shipped
from ..core.yamlfile import display_path, read_yaml, read_yaml_mapping
from .support import ExtendedSource, Support

if TYPE_CHECKING:
    from .release_schema import ReleaseModel


@dataclass(frozen=True)
class Release:
    """One Debian release: where its packages live and the names that differ from the others."""

    number: int
    codename: str
    archived: bool
    mirror: str
    security_mirror: str
    suites: tuple[str, ...]
    security_suite: str
    components: tuple[str, ...]
    kernels: MappingProxyType[str, str]
    vars: MappingProxyType[str, str]
    cloud_init_version: str
    clean_machine_id: bool
    status_wait_ok: tuple[int, ...]
    #: cloud-init's network renderers in order of preference; empty keeps cloud-init's own order.
    network_renderers: tuple[str, ...] = ()
    #: Packages of the base image besides the kernel: the shared list, then this release's own.
    base_packages: tuple[str, ...] = ()
    #: What an image for metal (dedicated servers) adds to the generic kernel: the shared list (mdadm), then
    #: this release's own (the server NICs' firmware, in non-free-firmware from Debian 12 on).
    metal_packages: tuple[str, ...] = ()
    #: Security support, LTS or none, by date; the extended-support source when there is one.
    support: Support | None = None
    template_vars: MappingProxyType[str, str] = field(init=False)

    def __post_init__(self) -> None:
        tv = {"debian": str(self.number), "codename": self.codename, **self.vars}
        object.__setattr__(self, "template_vars", MappingProxyType(tv))

    @property
    def name(self) -> str:
        return f"Debian {self.number} ({self.codename})"

    def kernel(self, flavour: str) -> str:
        try:
            return self.kernels[flavour]
        except KeyError:
            raise InputError(
                f"unknown kernel flavour {flavour!r} for Debian {self.number}",
                hint=f"choose one of: {', '.join(sorted(self.kernels))}",
            ) from None


@dataclass(frozen=True)
class Matrix:
    default: int
    releases: MappingProxyType[int, Release]

    def get(self, number: int | str | None) -> Release:
        """The release numbered `number` (the default when None); InputError if unsupported."""
        if number is None:
            number = self.default
        try:
            key = int(str(number).removeprefix("debian"))
            return self.releases[key]
        except (ValueError, KeyError):
            raise InputError(
                f"unsupported Debian release {number!r}",
                hint=f"supported releases: {', '.join(str(n) for n in sorted(self.releases))}",
            ) from None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.releases[n] for n in sorted(self.releases))


def _to_release(number: int, m: ReleaseModel, base_packages: list[str],
                metal_packages: Sequence[str] = ()) -> Release:
    return Release(
        number=number,
        codename=m.codename,
        archived=m.archived,
        mirror=m.mirror,
        security_mirror=m.security_mirror,
        suites=tuple(m.suites),
        security_suite=m.security_suite,
        components=tuple(m.components),
        kernels=MappingProxyType(dict(m.kernel)),
        vars=MappingProxyType(dict(m.vars)),
        cloud_init_version=m.cloud_init.version,
        clean_machine_id=m.cloud_init.clean_machine_id,
        status_wait_ok=tuple(m.cloud_init.status_wait_ok),
        network_renderers=tuple(m.cloud_init.network_renderers),
        base_packages=tuple(base_packages + m.base_packages),
        metal_packages=tuple([*metal_packages, *m.metal_packages]),
        support=Support(m.support.security_until, m.support.lts_until, None if m.support.extended is None else
                        ExtendedSource(m.support.extended.name, m.support.extended.url, m.support.extended.suite,
                                       tuple(m.support.extended.components), m.support.extended.keyring_sha256,
                                       m.support.extended.keyring_fingerprint)),
    )


def load_matrix(path: Path | None = None) -> Matrix:
    """Read and validate the release matrix file (default: releases.yaml of the profile folders)."""
    path = path or find_profile_file("releases.yaml") or shipped("profiles") / "releases.yaml"
    from pydantic import ValidationError  # here, not at the top: `golden --help` needs no pydantic

    from ..core.schema import SchemaErrors, schema_error_lines
    from .release_schema import MatrixModel

    raw = read_yaml_mapping(path)  # a key given twice (a release listed twice) is refused, naming the file
    try:
        model = MatrixModel.model_validate(raw)
    except ValidationError as exc:
        raise SchemaErrors(schema_error_lines(display_path(path), exc, MatrixModel),
                           hint="the release matrix is checked like a profile (README: Errors in input)") from None
    releases = {n: _to_release(n, r, model.base_packages, model.metal_packages) for n, r in model.releases.items()}
    if model.default not in releases:
        raise InputError(f"{display_path(path)}: default: release {model.default} is not in the matrix")
    return Matrix(default=model.default, releases=MappingProxyType(releases))


@cache
def matrix() -> Matrix:
    """The project's release matrix, read once."""
    return load_matrix()


def release_help(what: str = "Debian release") -> str:
    """A `--debian` help string from the matrix file: "Debian release: 10, 11, 12 or 13 (default 12)".

    Read without validation (no pydantic: the parser is built on every start); a command that uses the
    matrix validates it and reports what is wrong."""
    path = find_profile_file("releases.yaml") or shipped("profiles") / "releases.yaml"
    try:
        raw = read_yaml(path)
        numbers = [str(n) for n in sorted(int(n) for n in raw["releases"])]
        default = int(raw["default"])
    except (InputError, KeyError, TypeError, ValueError, OverflowError):
        return f"{what} (see {display_path(path)})"
    listed = f"{', '.join(numbers[:-1])} or {numbers[-1]}" if len(numbers) > 1 else numbers[0]
    return f"{what}: {listed} (default {default})"
