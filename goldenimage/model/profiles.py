"""Load profiles, validate them, and resolve extends, roles, release variables and overlays.

Merge order (later wins): roles, then the extends chain from the root down, then `with_roles` additions, then
overlays in the order given. Each key's merge rule is declared with the key (profile_schema.key, Merge).
Once everything is merged, the names in remove_packages leave packages and services, whichever file added them
(the bake also purges them if the base or a dependency installed them).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..core.errors import InputError
from ..core.paths import find_profile_file, profile_dirs
from ..core.schema import SchemaErrors, schema_error_lines
from ..core.yamlfile import display_path, read_yaml_mapping
from . import plesk_install
from .disk_layout import DiskLayout, layout_size_mib
from .profile_content import JsonObject, ProfileContent
from .profile_reference import keys_merged_by
from .profile_schema import (
    FILE_NAME,
    SQL_ROLES,
    Merge,
    OverlayFile,
    ProfileFile,
    Role,
    RoleFragment,
)
from .releases import Release, matrix
from .values import PLACEHOLDER, check_package, check_path, check_unit

DEFAULT_DISK_SIZE = "4G"
DEFAULT_DISK_LAYOUT = DiskLayout.SINGLE

#: The merge rules, as each key declares its own (profile_schema.key).
APPEND_LISTS = tuple(keys_merged_by(Merge.APPEND))
KEYED_LISTS = {name: str(by) for name, by in keys_merged_by(Merge.BY_KEY).items()}


class ProfileErrors(SchemaErrors):
    """All schema errors of one input, one line each."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines, hint="fix the file(s) above; see README 'Profile reference'")


@dataclass(frozen=True)
class ResolvedProfile:
    """A profile with inheritance, roles, overlays and one release applied: what the generators use."""

    name: str
    description: str
    roles: tuple[Role, ...]
    release: Release
    content: ProfileContent  # merged Fragment fields, {{ var }} substituted, typed
    disk_size: str
    disk_layout: DiskLayout
    sources: tuple[Path, ...]  # every file that contributed, in merge order
    overlays: tuple[Path, ...]
    example_settings: JsonObject  # first-boot settings examples of its roles, merged (host.json data)

    @property
    def packages(self) -> list[str]:
        """Everything the bake installs: base_packages first (already there on a mirror-built base)."""
        base = list(self.content.base_packages)
        return base + [p for p in self.content.packages if p not in base]

    @property
    def base_packages(self) -> tuple[str, ...]:
        """Packages the mirror-built base carries for this profile."""
        return self.content.base_packages

    @property
    def has_sql(self) -> bool:
        return any(r in SQL_ROLES for r in self.roles)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description, for manifests, content keys and the baked image.json."""
        return {
            "profile": self.name,
            "description": self.description,
            "roles": [str(r) for r in self.roles],
            "debian": self.release.number,
            "codename": self.release.codename,
            "disk_size": self.disk_size,
            "disk_layout": str(self.disk_layout),
            "content": self.content.as_json(),
            "overlays": [p.name for p in self.overlays],
        }


def _validate(path: Path, model: type[BaseModel]) -> dict[str, Any]:
    """Validate a file against its schema; return only the keys it sets (so defaults never override)."""
    raw = read_yaml_mapping(path)
    try:
        parsed = model.model_validate(raw)
    except ValidationError as exc:
        raise ProfileErrors(schema_error_lines(display_path(path), exc, model)) from None
    return parsed.model_dump(mode="json", exclude_unset=True)


def _searched(relative: str) -> str:
    """Where a file was looked for: profiles/web.yaml, or each profile folder's in turn."""
    return " nor ".join(display_path(d / relative) for d in profile_dirs())


def profile_path(name_or_path: str) -> Path:
    """profiles/NAME.yaml for a name; a path to a .yaml file is taken as it is.

    The name (the file's stem) goes into image, template and host names: it is a plain lower-case word."""
    stem = Path(name_or_path).stem if name_or_path.endswith((".yaml", ".yml")) else Path(name_or_path).name
    if not FILE_NAME.fullmatch(stem):
        raise InputError(f"{name_or_path[:120]!r}: not a profile name (a-z, 0-9, '.', '_', '-'; at most 64)",
                         hint="rename the file: its name becomes the image's name")
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise InputError(f"{name_or_path}: no such profile file")
        return path
    found = find_profile_file(f"{name_or_path}.yaml")
    if found is None:
        raise InputError(
            f"profile {name_or_path!r}: no file {_searched(f'{name_or_path}.yaml')}",
            hint=f"known profiles: {', '.join(list_profiles())}",
        )
    return found


def list_profiles() -> list[str]:
    """Names of the buildable profiles in the profile folders (abstract ones such as base are left out)."""
    names = []
    for stem in sorted({p.stem for d in profile_dirs() for p in d.glob("*.yaml")} - {"releases"}):
        path = find_profile_file(f"{stem}.yaml")
        assert path is not None
        if not read_yaml_mapping(path).get("abstract", False):
            names.append(path.stem)
    return names


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Merge `top` over `base` by the module's merge rules; neither input is modified."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if key in APPEND_LISTS:
            merged = list(out.get(key, []))
            merged += [v for v in value if v not in merged]
            out[key] = merged
        elif key in KEYED_LISTS:
            ident = KEYED_LISTS[key]
            items = {item[ident]: item for item in out.get(key, [])}
            for item in value:
                items[item[ident]] = copy.deepcopy(item)
            out[key] = list(items.values())
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _chain(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """The extends chain of a profile, root first; cycles and missing parents are errors."""
    resolved = path.resolve()
    if resolved in seen:
        cycle = " -> ".join(p.stem for p in (*seen, resolved))
        raise InputError(f"{display_path(path)}: extends: cycle {cycle}")
    data = _validate(path, ProfileFile)
    parents = data.get("extends") or []
    if isinstance(parents, str):
        parents = [parents]
    chain: list[tuple[Path, dict[str, Any]]] = []
    for parent in parents:
        # A parent beside the profile first (customer profile trees), then the project's profiles/.
        parent_path = path.parent / f"{parent}.yaml"
        if not parent_path.is_file():
            parent_path = find_profile_file(f"{parent}.yaml") or parent_path
        if not parent_path.is_file():
            raise InputError(f"{display_path(path)}: extends: no profile named {parent!r}")
        for item in _chain(parent_path, (*seen, resolved)):
            if item[0] not in [c[0] for c in chain]:
                chain.append(item)
    chain.append((resolved, data))
    return chain


def _role_fragment(role: Role) -> tuple[Path, dict[str, Any]]:
    path = find_profile_file(f"roles/{role}.yaml")
    if path is None:
        raise InputError(f"role {role!r} has no fragment file {_searched(f'roles/{role}.yaml')}")
    return path, _validate(path, RoleFragment)


def _substitute(value: Any, variables: dict[str, str], file: str, key: str, errors: list[str]) -> Any:
    """Replace {{ var }} from the release matrix in every string; unknown names and package names that
    are illegal once filled in are errors ('FILE: KEY: problem')."""
    if isinstance(value, str):

        def repl(m: Any) -> str:
            name = m.group(1)
            if name not in variables:
                errors.append(f"{file}: {key}: unknown variable {{{{ {name} }}}} (known: {', '.join(variables)})")
                return m.group(0)
            return variables[name]

        out = PLACEHOLDER.sub(repl, value)
        # A value checked with its placeholders is checked again filled in (the matrix is data too).
        field = re.sub(r"\[\d+\]", "", key)
        if field.startswith("with_roles.") and field.count(".") >= 2:
            field = field.split(".", 2)[2]
        check = {"packages": check_package, "base_packages": check_package, "remove_packages": check_package,
                 "services": check_unit, "files.path": check_path}.get(field)
        if check is not None and out != value and out == PLACEHOLDER.sub("", out):
            try:
                check(out)
            except ValueError as exc:
                errors.append(f"{file}: {key}: {exc}")
        return out
    if isinstance(value, list):
        return [_substitute(v, variables, file, f"{key}[{i}]", errors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _substitute(v, variables, file, f"{key}.{k}" if key else k, errors) for k, v in value.items()}
    return value


def load_overlay(path: Path) -> dict[str, Any]:
    """Read and validate one overlay file."""
    if not path.is_file():
        raise InputError(f"{path}: no such overlay file")
    return _validate(path, OverlayFile)


def resolve(
    name_or_path: str, debian: int | str | None = None, overlays: list[Path] | tuple[Path, ...] = ()
) -> ResolvedProfile:
    """Resolve a profile for one Debian release: extends, roles, with_roles, overlays, variables."""
    path = profile_path(name_or_path)
    release = matrix().get(debian)
    chain = _chain(path)
    own = chain[-1][1]
    if not own:
        raise InputError(f"{display_path(path)}: (top level): empty profile: nothing to render",
                         hint="give it `extends: base` and `roles`, or content keys (packages, files...)")
    if own.get("abstract"):
        raise InputError(f"{display_path(path)}: abstract: {path.stem} is a base for other profiles, not an image",
                         hint=f"render one that extends it: {', '.join(list_profiles())}")

    roles: list[Role] = []
    supported: list[int] | None = None
    disk_size = DEFAULT_DISK_SIZE
    disk_layout = DEFAULT_DISK_LAYOUT
    for _, data in chain:
        roles += [Role(r) for r in data.get("roles", []) if Role(r) not in roles]
        if "debian" in data:
            supported = data["debian"]
        # `disk_size: null` (or ~) leaves the inherited value, like a key not given.
        disk_size = data.get("disk_size") or disk_size
        disk_layout = DiskLayout(data.get("disk_layout") or disk_layout)
    _check_disk_size(path, disk_size, disk_layout)

    bad = [n for n in supported or [] if n not in matrix().releases]
    if bad:
        raise InputError(
            f"{display_path(path)}: debian: unsupported Debian release {bad[0]}",
            hint=f"supported releases: {', '.join(str(n) for n in sorted(matrix().releases))}",
        )
    if supported is not None and release.number not in supported:
        raise InputError(
            f"{display_path(path)}: debian: profile does not support Debian {release.number}",
            hint=f"this profile supports: {', '.join(str(n) for n in supported)}",
        )

    strip = ("extends", "roles", "debian", "abstract", "disk_size", "disk_layout", "with_roles", "example_settings")
    fragments = [_role_fragment(r) for r in roles]
    overlay_paths = tuple(Path(p) for p in overlays)
    overlay_data = [(p, load_overlay(p)) for p in overlay_paths]

    # Release variables are filled in file by file, so that an error names the file and key it is in.
    errors: list[str] = []
    variables = dict(release.template_vars)

    def prepared(path: Path, data: dict[str, Any]) -> dict[str, Any]:
        return _substitute(data, variables, display_path(path), "", errors)

    fragments = [(p, prepared(p, d)) for p, d in fragments]
    chain = [(p, prepared(p, d)) for p, d in chain]
    overlay_data = [(p, prepared(p, d)) for p, d in overlay_data]
    if errors:
        raise ProfileErrors(errors)

    content: dict[str, Any] = {}
    for _, frag in fragments:
        content = merge(content, {k: v for k, v in frag.items() if k not in strip})
    for _, data in chain:
        content = merge(content, {k: v for k, v in data.items() if k not in strip})
    for _, frag in fragments:
        for other, extra in frag.get("with_roles", {}).items():
            if Role(other) in roles:
                content = merge(content, extra)
    examples: dict[str, Any] = {}
    for _, frag in fragments:
        examples = _deep_merge(examples, frag.get("example_settings", {}))
    for _, data in overlay_data:
        content = merge(content, data)

    # An error about removals names the last file that removes chrony (an overlay's error names the overlay).
    removers = [p for p, d in [*fragments, *chain, *overlay_data] if "chrony" in d.get("remove_packages", [])]
    _apply_removals(removers[-1] if removers else path, content)
    if Role.PLESK in roles:  # the installer's command line is built from the role's settings, overlays included
        plesk = content.get("settings", {}).get("plesk", {})
        content["vm_bake_commands"] = [*plesk_install.install_commands(plesk), *content.get("vm_bake_commands", [])]
    description = content.pop("description", None) or chain[-1][1].get("description") or ""
    return ResolvedProfile(
        name=path.stem,
        description=description,
        roles=tuple(roles),
        release=release,
        content=ProfileContent.from_json(content),
        disk_size=disk_size,
        disk_layout=disk_layout,
        sources=tuple([p for p, _ in fragments] + [p for p, _ in chain] + list(overlay_paths)),
        overlays=overlay_paths,
        example_settings=examples,
    )


def size_mib(size: str) -> int:
    """'8G' or '6144M' (the schema's disk sizes) in MiB."""
    return int(size[:-1]) * (1024 if size.endswith("G") else 1)


def _check_disk_size(path: Path, disk_size: str, layout: DiskLayout) -> None:
    """The image cannot be smaller than its base: qemu-img can grow a disk, never shrink it."""
    needed = layout_size_mib(layout)
    if size_mib(disk_size) < needed:
        raise InputError(
            f"{display_path(path)}: disk_size: {disk_size} is smaller than the {layout} disk layout ({needed} MiB)",
            hint=f"set disk_size: {-(-needed // 1024)}G or more",
        )


def _apply_removals(path: Path, content: dict[str, Any]) -> None:
    """Drop remove_packages from (base_)packages and services; chrony cannot go while it is the NTP client."""
    removed = content.get("remove_packages", [])
    if not removed:
        return
    for key in ("packages", "base_packages", "services"):
        if key in content:
            content[key] = [name for name in content[key] if name not in removed]
    system = content.get("system", {})
    if "chrony" in removed and system.get("ntp_servers") and system.get("ntp_client") in (None, "chrony"):
        raise InputError(
            f"{display_path(path)}: remove_packages: chrony is removed but is the NTP client for system.ntp_servers",
            hint="set system.ntp_client: ntp (and add the ntp package) or keep chrony",
        )


def describe(name: str) -> tuple[list[str], str]:
    """(roles, description) of a profile without resolving it for a release; for `golden profiles`."""
    chain = _chain(profile_path(name))
    roles: list[str] = []
    for _, data in chain:
        roles += [r for r in data.get("roles", []) if r not in roles]
    return roles, chain[-1][1].get("description", "")


def supported_releases(name_or_path: str) -> list[int]:
    """The Debian releases a profile supports (its `debian` list, else every release in the matrix)."""
    supported: list[int] | None = None
    for _, data in _chain(profile_path(name_or_path)):
        if "debian" in data:
            supported = data["debian"]
    known = sorted(matrix().releases)
    return [n for n in (supported if supported is not None else known) if n in known]
