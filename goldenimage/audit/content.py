"""The SCAP content an audit evaluates: Debian's ssg-debian datastream for the guest's release.

ssg-debian 0.1.65 (Debian 12's package) ships content for Debian 10 and 11 only. Debian 10 and 11 guests
get their own datastream as it is. Debian 12 and later get a copy of the Debian 11 datastream with two
kinds of documented change, made with lxml on the parsed XML and cached by the source file's sha256:

* the platform: the CPE check behind `cpe:/o:debian:debian_linux:11` (an OVAL pattern on
  /etc/debian_version) also accepts the guest's release, otherwise every rule is "notapplicable";
* the codename: OVAL patterns that name "bullseye" (apt_sources_list_official's sources.list lines) are
  retargeted to the guest's codename, so the rule asks for the guest's own release's official sources;
* the NTP unit: from Debian 12 the ntp package is ntpsec, whose unit ntpsec.service carries the alias
  ntp.service; systemd reports the unit, and multi-user.target's dependency on it, by its own name, so
  service_ntp_enabled's checks also accept ntpsec.service (release variable ntp_service).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from ..core.errors import GoldenError
from ..core.fs import write_atomic
from ..core.paths import cache_dir
from ..core.run import require, run
from ..model.releases import Release, matrix

SSG_DIR = Path("/usr/share/xml/scap/ssg/content")
PROFILE_ID = "xccdf_org.ssgproject.content_profile_anssi_np_nt28_high"
PROFILE_TITLE = "ANSSI DAT-NT28 high"
#: The newest release the installed ssg-debian has content for; later releases use a widened copy of it.
NEWEST_CONTENT = 11
#: Bumped when the widening changes, so that cached copies made by older code are not reused.
WIDEN_VERSION = 2
#: What service_ntp_enabled looks for (OVAL item id -> element holding the unit name), and the pattern that
#: also accepts ntpsec's own unit name.
NTP_UNIT_ITEMS = {
    "oval:ssg-obj_service_running_ntp:obj:1": ("unit", r"^ntp(sec)?\.(socket|service)$"),
    "oval:ssg-state_systemd_ntp_on:ste:1": ("dependency", r"^ntp(sec)?\.service$"),
}

NS = {
    "ds": "http://scap.nist.gov/schema/scap/source/1.2",
    "xccdf": "http://checklists.nist.gov/xccdf/1.2",
    "cpe": "http://cpe.mitre.org/dictionary/2.0",
    "oval": "http://oval.mitre.org/XMLSchema/oval-definitions-5",
    "ind": "http://oval.mitre.org/XMLSchema/oval-definitions-5#independent",
}
_OVAL_REF_ATTRS = ("definition_ref", "test_ref", "object_ref", "state_ref")


@dataclass(frozen=True)
class Change:
    """One edit made to the datastream: the OVAL item, and its text before and after."""

    item: str
    before: str
    after: str

    def line(self) -> str:
        return f"{self.item}: {self.before!r} -> {self.after!r}"


@dataclass(frozen=True)
class Content:
    """A datastream ready to evaluate for one guest release."""

    path: Path
    source: Path
    profile_id: str
    content_release: int
    guest_release: int
    changes: tuple[Change, ...]


def source_datastream(number: int, ssg_dir: Path = SSG_DIR) -> Path:
    """The ssg-debian datastream a release is evaluated with (its own, or the newest one)."""
    path = ssg_dir / f"ssg-debian{min(number, NEWEST_CONTENT)}-ds.xml"
    if not path.is_file():
        raise GoldenError(f"no SCAP content for Debian {number}: {path} is missing",
                          hint="apt-get install ssg-debian (or: sudo make deps)")
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_for(release: Release, *, ssg_dir: Path = SSG_DIR, cache: Path | None = None) -> Content:
    """The datastream for `release`: the release's own, or a widened copy (cached) of the newest."""
    source = source_datastream(release.number, ssg_dir)
    content_release = min(release.number, NEWEST_CONTENT)
    if release.number <= NEWEST_CONTENT:
        return Content(source, source, PROFILE_ID, content_release, release.number, ())
    digest = sha256_file(source)
    directory = (cache or cache_dir()) / "audit" / "content"
    out = directory / f"{source.stem}-{digest[:16]}-w{WIDEN_VERSION}-debian{release.number}.xml"
    changes_file = out.with_suffix(".changes")
    if out.is_file() and changes_file.is_file():
        cached = tuple(_parse_change(line) for line in changes_file.read_text().splitlines() if line)
        return Content(out, source, PROFILE_ID, content_release, release.number, cached)
    require("oscap", purpose="to check the SCAP content")
    content_codename = matrix().get(content_release).codename
    tree = etree.parse(str(source))
    changes = widen(tree, content_release, content_codename, release.number, release.codename,
                    ntp_unit=release.template_vars.get("ntp_service", "ntp"))
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(out, etree.tostring(tree, xml_declaration=True, encoding="UTF-8"))
    try:
        # the guests skip the schema check, so the widened copy is checked here, once
        run(["oscap", "ds", "sds-validate", out], timeout=300)
    except GoldenError:
        out.unlink(missing_ok=True)
        raise
    write_atomic(changes_file, "".join(f"{c.item}\t{c.before}\t{c.after}\n" for c in changes).encode())
    return Content(out, source, PROFILE_ID, content_release, release.number, tuple(changes))


def _parse_change(line: str) -> Change:
    item, before, after = line.split("\t")
    return Change(item, before, after)


def widen(tree: etree._ElementTree, content_number: int, content_codename: str, guest_number: int,
          guest_codename: str, ntp_unit: str = "ntp") -> list[Change]:
    """Edit a Debian `content_number` datastream in place so it evaluates on a `guest_number` guest."""
    root = tree.getroot()
    changes = _widen_platform(root, content_number, guest_number)
    changes += _retarget_codename(root, content_codename, guest_codename)
    if ntp_unit != "ntp":
        changes += _widen_ntp_unit(root)
    return changes


def _widen_ntp_unit(root: etree._Element) -> list[Change]:
    index = _oval_index(root)
    changes = []
    for ident, (child, pattern) in NTP_UNIT_ITEMS.items():
        item = index.get(ident)
        found = [el for el in item.iter() if isinstance(el.tag, str) and etree.QName(el).localname == child] \
            if item is not None else []
        if not found or "ntp" not in (found[0].text or ""):
            raise GoldenError(f"the SCAP content has no {child} in {ident}: its layout changed",
                              hint="update goldenimage/audit/content.py for the new ssg-debian")
        before = found[0].text or ""
        found[0].text = pattern
        found[0].set("operation", "pattern match")
        changes.append(Change(ident, before, pattern))
    return changes


def _oval_index(root: etree._Element) -> dict[str, etree._Element]:
    """Every OVAL definition, test, object and state of the datastream by id."""
    index = {}
    for component in root.iterfind("ds:component", NS):
        for defs in component.iterfind("oval:oval_definitions", NS):
            for el in defs.iter():
                ident = el.get("id")
                if ident and ident.startswith("oval:"):
                    index[ident] = el
    return index


def oval_closure(index: dict[str, etree._Element], start: str) -> list[etree._Element]:
    """The OVAL items `start` depends on (itself, extended definitions, tests, objects, states)."""
    seen: dict[str, etree._Element] = {}
    todo = [start]
    while todo:
        ident = todo.pop()
        if ident in seen or ident not in index:
            continue
        seen[ident] = index[ident]
        for el in index[ident].iter():
            todo += [el.get(a) for a in _OVAL_REF_ATTRS if el.get(a)]  # type: ignore[misc]
    return list(seen.values())


def _widen_platform(root: etree._Element, content_number: int, guest_number: int) -> list[Change]:
    cpe = f"cpe:/o:debian:debian_linux:{content_number}"
    checks = root.xpath(f"//cpe:cpe-item[@name='{cpe}']/cpe:check/text()", namespaces=NS)
    if not checks:
        raise GoldenError(f"the SCAP content has no CPE item {cpe}: its layout changed, the audit cannot widen it")
    index = _oval_index(root)
    version = re.compile(rf"^\^{content_number}\\?\.")
    changes = []
    for item in oval_closure(index, str(checks[0]).strip()):
        if item.findtext("ind:filepath", namespaces=NS) != "/etc/debian_version":
            continue
        pattern = item.find("ind:pattern", NS)
        if pattern is None or not version.match(pattern.text or ""):
            continue
        before = pattern.text or ""
        pattern.text = rf"^({content_number}|{guest_number})\.[0-9]+$"
        item.set("comment", f"Check Debian version (goldenimage: widened to {content_number} and {guest_number})")
        changes.append(Change(item.get("id", ""), before, pattern.text))
    if not changes:
        raise GoldenError(f"the CPE check of {cpe} has no /etc/debian_version pattern: the content changed",
                          hint="update goldenimage/audit/content.py for the new ssg-debian")
    return changes


def _retarget_codename(root: etree._Element, content_codename: str, guest_codename: str) -> list[Change]:
    """Replace the content's codename by the guest's in every OVAL value (metadata left as it is)."""
    word = re.compile(rf"\b{re.escape(content_codename)}\b")
    changes = []
    for component in root.iterfind("ds:component", NS):
        for defs in component.iterfind("oval:oval_definitions", NS):
            for el in defs.iter():
                if not isinstance(el.tag, str) or el.text is None or not word.search(el.text):
                    continue
                if any(a.tag == f"{{{NS['oval']}}}metadata" for a in el.iterancestors()):
                    continue
                owner = next((a for a in el.iterancestors() if (a.get("id") or "").startswith("oval:")), el)
                before = el.text
                el.text = word.sub(guest_codename, el.text)
                changes.append(Change(owner.get("id", ""), before, el.text))
    return changes


def selected_rules(root: etree._Element, profile_id: str = PROFILE_ID) -> list[str]:
    """The rule ids a profile selects, in document order."""
    profile = root.xpath(f"//xccdf:Profile[@id='{profile_id}']", namespaces=NS)
    if not profile:
        raise GoldenError(f"the SCAP content has no profile {profile_id}")
    return [str(s.get("idref")) for s in profile[0].iterfind("xccdf:select", NS) if s.get("selected") == "true"]

