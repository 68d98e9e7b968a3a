"""Lint as tests: ruff and mypy are clean (the first-boot agent too), and only run.py starts processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import ROOT


def test_ruff_is_clean():
    # firstboot/ is checked as Python 3.7 (pyproject's per-file-target-version): the oldest it runs on
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "goldenimage", "tests", "firstboot", "setup.py"],
                          cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_is_clean():
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_is_clean_on_the_first_boot_agent():
    # mypy's oldest supported target; Python 3.7 syntax is ruff's (above) and test_firstboot_agent's job
    proc = subprocess.run([sys.executable, "-m", "mypy", "--python-version", "3.10", "-p", "golden_firstboot"],
                          cwd=ROOT, env={**os.environ, "MYPYPATH": str(ROOT / "firstboot")},
                          capture_output=True, text=True)
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
