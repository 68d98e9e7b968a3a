"""Lint as tests: ruff and mypy are clean, and only run.py starts processes."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT


def test_ruff_is_clean():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "goldenimage", "tests"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_is_clean():
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_only_run_py_starts_processes():
    offenders = []
    for path in (ROOT / "goldenimage").rglob("*.py"):
        if path.name == "run.py":
            continue
        text = path.read_text()
        if re.search(r"subprocess\.(run|Popen|call|check_call|check_output)\(|os\.(system|popen|exec\w*)\(", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
