"""The SCAP content: Debian 12+ get a widened copy of Debian 11's datastream, every change listed."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from lxml import etree

from goldenimage.audit import content as content_mod
from goldenimage.audit.content import NS, PROFILE_ID, _oval_index, content_for, oval_closure, selected_rules
from goldenimage.model.releases import matrix
from tests.conftest import ROOT

README = ROOT / "README.md"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("audit-cache")


@pytest.fixture(scope="module")
def widened12(cache):
    return content_for(matrix().get(12), cache=cache)


def _platform_patterns(path: Path, cpe: str) -> list[str]:
    root = etree.parse(str(path)).getroot()
    check = root.xpath(f"//cpe:cpe-item[@name='{cpe}']/cpe:check/text()", namespaces=NS)[0].strip()
    index = _oval_index(root)
    return [item.findtext("ind:pattern", namespaces=NS) for item in oval_closure(index, check)
            if item.findtext("ind:filepath", namespaces=NS) == "/etc/debian_version"
            and item.find("ind:pattern", NS) is not None]


def _rule_oval_text(path: Path) -> dict[str, str]:
    """For every rule the ANSSI profile selects: the text of the OVAL items it depends on, metadata left out."""
    root = etree.parse(str(path)).getroot()
    index = _oval_index(root)
    texts = {}
    for rule_id in selected_rules(root):
        rule = root.xpath(f"//xccdf:Rule[@id='{rule_id}']", namespaces=NS)[0]
        parts = []
        for ref in rule.xpath(".//xccdf:check[@system='http://oval.mitre.org/XMLSchema/oval-definitions-5']"
                              "/xccdf:check-content-ref/@name", namespaces=NS):
            for item in oval_closure(index, ref):
                for el in item.iter():
                    if isinstance(el.tag, str) and not any(a.tag.endswith("}metadata") for a in el.iterancestors()) \
                            and not el.tag.endswith("}metadata"):
                        parts.append(el.text or "")
        texts[rule_id.removeprefix("xccdf_org.ssgproject.content_rule_")] = "\n".join(parts)
    return texts


def test_debian_12_gets_a_copy_of_the_debian_11_content(widened12, cache):
    assert widened12.source.name == "ssg-debian11-ds.xml"
    assert widened12.content_release == 11 and widened12.guest_release == 12
    assert widened12.path.is_relative_to(cache) and widened12.path != widened12.source
    assert content_mod.sha256_file(widened12.source)[:16] in widened12.path.name


def test_the_platform_check_accepts_the_guest_release_and_still_11(widened12):
    [original] = _platform_patterns(widened12.source, "cpe:/o:debian:debian_linux:11")
    [widened] = _platform_patterns(widened12.path, "cpe:/o:debian:debian_linux:11")
    # /etc/debian_version of a Debian 12 point release, as the OVAL pattern match reads it
    assert not re.search(original, "12.11")
    assert re.search(widened, "12.11") and re.search(widened, "12.0")
    assert re.search(widened, "11.7")
    assert not re.search(widened, "13.1") and not re.search(widened, "10.13") and not re.search(widened, "112.1")


def test_no_rule_of_the_profile_names_bullseye_once_widened(widened12):
    before = _rule_oval_text(widened12.source)
    after = _rule_oval_text(widened12.path)
    assert len(after) == 50
    named = sorted(rule for rule, text in before.items() if "bullseye" in text)
    assert named, "the Debian 11 content no longer names its codename: drop the retargeting"
    assert all("bullseye" not in text for text in after.values())
    for rule in named:
        assert "bookworm" in after[rule] and after[rule] == before[rule].replace("bullseye", "bookworm")


def test_debian_13_is_retargeted_to_trixie(cache):
    c = content_for(matrix().get(13), cache=cache)
    [widened] = _platform_patterns(c.path, "cpe:/o:debian:debian_linux:11")
    assert re.search(widened, "13.1") and not re.search(widened, "12.11")
    assert any("trixie" in ch.after for ch in c.changes)


@pytest.mark.parametrize("number", [10, 11])
def test_debian_10_and_11_use_their_own_content_unchanged(number, cache):
    c = content_for(matrix().get(number), cache=cache)
    assert c.path == c.source and c.path.name == f"ssg-debian{number}-ds.xml"
    assert c.changes == ()
    assert len(selected_rules(etree.parse(str(c.path)).getroot(), PROFILE_ID)) > 0


def test_every_change_is_listed_in_the_readme(widened12):
    readme = README.read_text()
    section = readme[readme.index("## Audit"):]
    section = section[: section.index("\n## ", 1)]
    rows = [line for line in section.splitlines() if line.startswith(("| `obj_", "| `state_"))]
    listed = {re.match(r"\| `([^`]+)`", row).group(1) for row in rows}
    changed = {re.fullmatch(r"oval:ssg-(.+):(obj|ste):\d+", c.item).group(1) for c in widened12.changes}
    assert listed == changed, "README's Audit section must list every change the audit makes, and only those"


def test_the_widened_copy_is_reused_and_follows_the_source(tmp_path, widened12):
    ssg = tmp_path / "ssg"
    ssg.mkdir()
    shutil.copy(widened12.source, ssg / widened12.source.name)
    first = content_for(matrix().get(12), ssg_dir=ssg, cache=tmp_path / "cache")
    mtime = first.path.stat().st_mtime_ns
    again = content_for(matrix().get(12), ssg_dir=ssg, cache=tmp_path / "cache")
    assert again.path == first.path and again.path.stat().st_mtime_ns == mtime and again.changes == first.changes
    # another source file (an updated ssg-debian) makes another copy
    (ssg / widened12.source.name).write_bytes((ssg / widened12.source.name).read_bytes() + b"\n<!-- next -->\n")
    updated = content_for(matrix().get(12), ssg_dir=ssg, cache=tmp_path / "cache")
    assert updated.path != first.path and updated.changes == first.changes


def test_missing_content_says_which_package(tmp_path):
    from goldenimage.core.errors import GoldenError

    with pytest.raises(GoldenError) as err:
        content_for(matrix().get(12), ssg_dir=tmp_path, cache=tmp_path)
    assert "ssg-debian11-ds.xml" in err.value.message and "ssg-debian" in (err.value.hint or "")
