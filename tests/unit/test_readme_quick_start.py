"""The README's quick start says what `make test` leaves out: every marker the Makefile's `test` target
excludes is named there with the target that runs it."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def quick_start() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index("## Quick start"):text.index("\n## ", text.index("## Quick start") + 3)]


def excluded_markers() -> list[str]:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\ntest: "):]
    expression = re.search(r"-m '([^']+)'", recipe)
    assert expression is not None
    return re.findall(r"not (\w+)", expression.group(1))


def test_the_quick_start_names_every_marker_make_test_leaves_out_with_its_target():
    section = " ".join(quick_start().split())
    markers = excluded_markers()
    assert "apply" in markers and "ha" in markers
    for marker in markers:
        target = f"make test-{marker.replace('_', '-')}"
        assert f"`{marker}` (`{target}`" in section, f"README quick start: {marker} ({target}) is not named"
