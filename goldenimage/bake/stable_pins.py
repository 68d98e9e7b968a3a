"""Only fixes into stable: the package versions a rebuild of the stable artifact may take.

Every package keeps the version the stable artifact's manifest pins, except where the release's security suite or
its -updates suite (point-release fixes) has a newer one: that one moves. A newer version in the main suite alone
does not move anything. A pinned version that no suite serves any more cannot be installed: that is a failure
naming the package. After the rebuild, the manifest diff against the stable artifact must list exactly the
packages that moved; anything else is a failure naming the package.
"""

from __future__ import annotations

import gzip
import lzma
import re
import shlex
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from ..core.errors import GoldenError
from ..model.releases import Release

#: An index is a few MB (bookworm main amd64: 9 MB gzip, 45 MB plain): bounded, and one read per suite.
MAX_INDEX_BYTES = 256 * 1024 * 1024
TIMEOUT_S = 60
#: The suites whose newer versions are fixes, by role (the release's own names fill them in).
FIX_SUITES = ("security", "updates")


class StableChannelError(GoldenError):
    """A rebuild of the stable artifact would take something other than fixes."""


# --- Debian version comparison (deb-version(7); the same order as dpkg --compare-versions) ------------

def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            bc = _order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def _split(version: str) -> tuple[int, str, str]:
    epoch, _, rest = version.rpartition(":") if ":" in version else ("0", "", version)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
    return int(epoch or 0), upstream, revision


def compare_versions(a: str, b: str) -> int:
    """<0, 0 or >0 as Debian version a sorts before, with or after b."""
    ea, ua, ra = _split(a)
    eb, ub, rb = _split(b)
    if ea != eb:
        return ea - eb
    return _compare_part(ua, ub) or _compare_part(ra, rb)


def newest(versions: list[str]) -> str:
    best = versions[0]
    for version in versions[1:]:
        if compare_versions(version, best) > 0:
            best = version
    return best


# --- apt indices ---------------------------------------------------------------------------------

Index = dict[str, list[str]]  # package -> versions the suite serves


def parse_packages(text: str) -> Index:
    """An apt Packages index as package -> versions."""
    index: Index = {}
    for stanza in re.split(r"\n\s*\n", text):
        name = re.search(r"^Package:\s*(\S+)", stanza, re.M)
        version = re.search(r"^Version:\s*(\S+)", stanza, re.M)
        if name and version:
            index.setdefault(name[1], []).append(version[1])
    return index


def fetch_index(base_url: str, suite: str, components: tuple[str, ...], arch: str = "amd64") -> Index:
    """Every component's Packages index of a suite (Packages.xz, .gz or plain, the first the mirror serves)."""
    index: Index = {}
    for component in components:
        root = f"{base_url.rstrip('/')}/dists/{suite}/{component}/binary-{arch}/Packages"
        for suffix, unpack in ((".xz", lzma.decompress), (".gz", gzip.decompress), ("", lambda b: b)):
            try:
                with urllib.request.urlopen(root + suffix, timeout=TIMEOUT_S) as answer:  # noqa: S310 (the mirror)
                    data = answer.read(MAX_INDEX_BYTES + 1)
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    continue
                raise GoldenError(f"{root}{suffix}: HTTP {exc.code}", hint="check the mirror") from exc
            except (urllib.error.URLError, OSError) as exc:
                raise GoldenError(f"{root}{suffix}: {exc}", hint="check the mirror and the network path") from exc
            if len(data) > MAX_INDEX_BYTES:
                raise GoldenError(f"{root}{suffix}: larger than {MAX_INDEX_BYTES // 2**20} MiB")
            for name, versions in parse_packages(unpack(data).decode("utf-8", "replace")).items():
                index.setdefault(name, []).extend(versions)
            break
    return index


def release_indices(release: Release, mirror: str | None = None, security_mirror: str | None = None
                    ) -> dict[str, Index]:
    """The main, -updates and security indices of a release, by role."""
    main_suites = [s for s in release.suites if not s.endswith("-updates")]
    updates = [s for s in release.suites if s.endswith("-updates")]
    mirror = mirror or release.mirror
    indices: dict[str, Index] = {"main": {}, "updates": {}, "security": {}}
    for suite in main_suites:
        _merge(indices["main"], fetch_index(mirror, suite, release.components))
    for suite in updates:
        _merge(indices["updates"], fetch_index(mirror, suite, release.components))
    indices["security"] = fetch_index(security_mirror or release.security_mirror, release.security_suite,
                                      release.components)
    return indices


def _merge(into: Index, more: Index) -> None:
    for name, versions in more.items():
        into.setdefault(name, []).extend(versions)


# --- the plan ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """What a rebuild of the stable artifact installs: every package's version, the ones that move (old, new,
    the suite with the fix), the ones kept back although main has newer (pinned, main's)."""

    pins: dict[str, str]
    moved: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    held: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def nothing_new(self) -> bool:
        return not self.moved


def plan(stable: Mapping[str, str], indices: Mapping[str, Index]) -> Plan:
    """The versions to install for a rebuild of an artifact whose manifest lists `stable` (package -> version);
    StableChannelError naming every package whose pinned version no suite serves."""
    pins: dict[str, str] = {}
    moved: dict[str, tuple[str, str, str]] = {}
    held: dict[str, tuple[str, str]] = {}
    missing: list[str] = []
    for name, old in sorted(stable.items()):
        fixes = [(v, role) for role in FIX_SUITES for v in indices.get(role, {}).get(name, [])
                 if compare_versions(v, old) > 0]
        if fixes:
            best = newest([v for v, _ in fixes])
            moved[name] = (old, best, next(role for v, role in fixes if v == best))
            pins[name] = best
            continue
        served = [v for index in indices.values() for v in index.get(name, [])]
        if old not in served:
            missing.append(f"{name} {old}" + (f" (the archive has {', '.join(sorted(set(served)))})" if served else
                                              " (no suite has it)"))
            continue
        pins[name] = old
        main = indices.get("main", {}).get(name, [])
        if main and compare_versions(newest(main), old) > 0:
            held[name] = (old, newest(main))
    if missing:
        raise StableChannelError(f"the stable artifact's pinned versions are no longer served: {'; '.join(missing)}",
                                 hint="promote a newer artifact to stable (golden images promote)")
    return Plan(pins, moved, held)


def diff(stable: Mapping[str, str], rebuilt: Mapping[str, str]) -> dict[str, tuple[str | None, str | None]]:
    """The manifest diff: every package whose version differs, appeared or went (old, new)."""
    return {name: (stable.get(name), rebuilt.get(name)) for name in sorted(set(stable) | set(rebuilt))
            if stable.get(name) != rebuilt.get(name)}


def check_rebuild(stable: Mapping[str, str], rebuilt: Mapping[str, str], expected: Plan
                  ) -> dict[str, tuple[str | None, str | None]]:
    """The manifest diff of a rebuild, checked to be exactly the plan's moves; StableChannelError naming every
    package that changed otherwise (moved without a fix, appeared, went, or a fix not taken)."""
    changes = diff(stable, rebuilt)
    wrong = [f"{name} {old or '(absent)'} -> {new or '(absent)'}" for name, (old, new) in changes.items()
             if name not in expected.moved or new != expected.moved[name][1]]
    wrong += [f"{name} {old} -> {new} was not taken" for name, (old, new, _) in expected.moved.items()
              if name not in changes]
    if wrong:
        raise StableChannelError(f"the rebuild changed more than fixes: {'; '.join(wrong)}",
                                 hint="a stable rebuild takes only the security and -updates suites' versions")
    return changes


def apt_preferences(pins: Mapping[str, str]) -> str:
    """apt_preferences(5) holding each package at its version (priority 1001: even a downgrade is taken)."""
    return "".join(f"Package: {name}\nPin: version {version}\nPin-Priority: 1001\n\n"
                   for name, version in sorted(pins.items()))


#: The versions the package layer being built is held at (a stable rebuild), read by base_image's mmdebstrap call
#: and base key: set for the duration of one build by `pinned`, so that the bake's own signatures stay as they are.
_PINS: ContextVar[Mapping[str, str] | None] = ContextVar("golden_stable_pins", default=None)
PREFERENCES = "/etc/apt/preferences.d/golden-stable"
MAX_PREFERENCES = 100 * 1024  # one argument of the mmdebstrap call (Linux takes 128 KiB per argument)


@contextmanager
def pinned(pins: Mapping[str, str]) -> Iterator[None]:
    token = _PINS.set(dict(pins))
    try:
        yield
    finally:
        _PINS.reset(token)


def current() -> Mapping[str, str]:
    """The pins of the build under way (empty outside a stable rebuild)."""
    return _PINS.get() or {}


def mmdebstrap_hooks(pins: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(setup hooks, last customize hooks): apt preferences holding every package at its pin while mmdebstrap
    installs, removed before the layer is saved (the image's apt takes updates as usual)."""
    if not pins:
        return [], []
    text = apt_preferences(pins)
    if len(text) > MAX_PREFERENCES:
        raise StableChannelError(f"{len(pins)} pinned packages make apt preferences over {MAX_PREFERENCES} bytes")
    return ([f'--setup-hook=mkdir -p "$1/etc/apt/preferences.d" && printf %s {shlex.quote(text)} > "$1{PREFERENCES}"'],
            [f'--customize-hook=rm -f "$1{PREFERENCES}"'])
