"""The CLI starts fast: heavy libraries are imported where they are used, not by the parser. Every `golden`
run builds the whole parser, so what it imports is paid by `golden --help` and by a typo alike.

The figures are printed (pytest -s shows them), never asserted: time depends on the machine's load."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

#: Publish clients, XML and schema libraries, the terminal renderer: none is needed to parse arguments.
NOT_FOR_HELP = ("boto3", "botocore", "openstack", "proxmoxer", "ovh", "requests", "lxml", "pycdlib", "pydantic",
                "jinja2", "rich")
#: `golden profiles` validates profiles (pydantic) and prints a table (rich), and needs nothing else heavy.
NOT_FOR_PROFILES = ("boto3", "botocore", "openstack", "proxmoxer", "ovh", "requests", "lxml", "pycdlib", "jinja2")


def _imported(*args: str) -> tuple[set[str], float]:
    """Top-level packages imported by `golden ARGS` (python -X importtime), and the run's wall time."""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "goldenimage.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", proc.stderr, re.M)
    assert "goldenimage.core.log" in names, "importtime output not understood"
    return {n.split(".")[0] for n in names}, elapsed


@pytest.mark.parametrize(("args", "forbidden"), [(("--help",), NOT_FOR_HELP), (("profiles",), NOT_FOR_PROFILES)])
def test_the_parser_imports_no_heavy_library(args: tuple[str, ...], forbidden: tuple[str, ...]) -> None:
    imported, elapsed = _imported(*args)
    print(f"golden {' '.join(args)}: {elapsed:.2f} s (with -X importtime)")
    assert sorted(imported & set(forbidden)) == []
