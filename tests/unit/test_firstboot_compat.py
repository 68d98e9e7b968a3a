"""The in-image agent stays runnable on every supported Debian: Python 3.7 syntax, standard library only,
and (when a Python 3.7 is installed here) the fixture scenarios give the same results under 3.7."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.unit.firstboot_fake import fixture_names, load_fixture

AGENT = ROOT / "firstboot"
FAKE = ROOT / "tests" / "unit" / "firstboot_fake.py"
PY37_CANDIDATES = ["/root/.pyenv/versions/3.7.16/bin/python3.7", "python3.7"]


def _sources() -> list[Path]:
    return sorted(AGENT.rglob("*.py")) + [FAKE]


def _python37() -> str | None:
    for candidate in PY37_CANDIDATES:
        found = shutil.which(candidate) if "/" not in candidate else (candidate if Path(candidate).exists() else None)
        if found and subprocess.run([found, "-c", "import sys; assert sys.version_info[:2] == (3, 7)"],
                                    capture_output=True).returncode == 0:
            return found
    return None


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_agent_source_parses_as_python_3_7(path):
    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 7))


def test_vermin_finds_nothing_newer_than_python_3_7_in_the_agent() -> None:
    """A static minimum-version check over the whole agent (standard-library functions, modules and keyword
    arguments newer than 3.7 included, which ast's feature_version does not see); it runs in CI, where no
    Python 3.7 is installed for the fixture run below."""
    vermin = Path(sys.executable).parent / "vermin"
    proc = subprocess.run([str(vermin), "-t=3.7-", "--violations", "--no-tips", "--no-parse-comments", str(AGENT)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_vermin_would_see_a_python_3_8_call(tmp_path: Path) -> None:
    """The check above can fail: a walrus and math.prod (3.8) are found."""
    sample = tmp_path / "agent.py"
    sample.write_text("import math\n\nif (n := math.prod([2, 3])) > 1:\n    print(n)\n")
    vermin = Path(sys.executable).parent / "vermin"
    proc = subprocess.run([str(vermin), "-t=3.7-", "--violations", "--no-tips", str(sample)],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "3.8" in proc.stdout


@pytest.mark.parametrize("path", sorted(AGENT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_agent_imports_only_the_standard_library_and_itself(path):
    outside = []
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        for name in names:
            top = name.split(".")[0]
            if top not in sys.stdlib_module_names and top not in ("__future__", "golden_firstboot"):
                outside.append(name)
    assert outside == []


def test_agent_modules_stay_small():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in AGENT.rglob("*.py")}
    assert {k: v for k, v in sizes.items() if v > 400} == {}


def test_fixture_scenarios_give_the_same_results_under_python_3_7():
    python37 = _python37()
    if python37 is None:
        pytest.skip("no Python 3.7 here: the ast check above stands in for it")
    proc = subprocess.run([python37, str(FAKE)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert sorted(report) == fixture_names()
    for name, runs in report.items():
        assert runs == load_fixture(name)["expected"], name
