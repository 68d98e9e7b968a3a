"""The golden command line as a user meets it: exit statuses, one-line errors, nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def golden(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "goldenimage.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=300)


def test_unknown_profile_exits_2_with_one_line(tmp_path):
    proc = golden("render", "nope", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == "golden: error: profile 'nope': no file profiles/nope.yaml"
    assert not (tmp_path / "out").exists()


def test_misspelt_key_exits_2_naming_file_and_key_and_writes_nothing(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("extends: base\nroles: [web]\npackges: [htop]\n")
    proc = golden("render", str(bad), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    first = proc.stderr.splitlines()[0]
    assert first.startswith("golden: error: ")
    assert first.endswith("typo.yaml: packges: unknown key: did you mean 'packages'?")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["typo.yaml"]  # no staging leftovers


def test_bad_overlay_exits_2(tmp_path):
    overlay = tmp_path / "o.yaml"
    overlay.write_text("packages: ['Not A Package']\n")
    proc = golden("render", "web", "--overlay", str(overlay), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "o.yaml: packages[0]: 'Not A Package' is not a valid Debian package name" in proc.stderr


def test_unsupported_release_exits_2(tmp_path):
    proc = golden("render", "web", "--debian", "9", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "unsupported Debian release '9'" in proc.stderr


def test_render_writes_every_file_a_bake_needs(tmp_path):
    out = tmp_path / "r"
    proc = golden("render", "sql-replica", "--debian", "10", "--target", "proxmox", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([
        ".golden-output", "build_key", "build_key.pub", "firstboot-user-data.example", "meta-data", "scripts",
        "seed.iso", "sql-replica-debian10-proxmox.pkr.json", "sql-replica-debian10-proxmox.pkrvars.json", "user-data",
    ])
    assert (out / "build_key").stat().st_mode & 0o077 == 0
    template = json.loads((out / "sql-replica-debian10-proxmox.pkr.json").read_text())
    assert "proxmox-clone" in template["source"]
    assert "archive.debian.org" in (out / "user-data").read_text()


def test_profiles_lists_every_profile_with_roles():
    proc = golden("profiles")
    assert proc.returncode == 0
    for name in ("web", "sql-primary", "sql-replica", "lb", "nfs", "plesk", "banking-hardened"):
        assert name in proc.stdout
    assert "base" not in proc.stdout.split()


def test_sigterm_unwinds_like_ctrl_c_so_guests_and_staging_are_cleaned_up(tmp_path):
    # A command that holds a resource (as bake holds Packer and verify holds QEMU) until its context exits.
    script = tmp_path / "hold.py"
    script.write_text(
        "import sys, time\n"
        "from goldenimage import cli\n"
        "def hold(args):\n"
        f"    open({str(tmp_path / 'started')!r}, 'w').close()\n"
        "    try:\n"
        "        time.sleep(60)\n"
        "    finally:\n"
        f"        open({str(tmp_path / 'cleaned')!r}, 'w').close()\n"
        "    return 0\n"
        "parser = cli.build_parser()\n"
        "parse = parser.parse_args\n"
        "def parse_hold(argv=None):\n"
        "    args = parse(argv)\n"
        "    args.func = hold\n"
        "    return args\n"
        "parser.parse_args = parse_hold\n"
        "cli.build_parser = lambda: parser\n"
        "sys.exit(cli.main(['profiles']))\n")
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, str(script)], cwd=Path(__file__).resolve().parents[2],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert (tmp_path / "cleaned").exists() and "golden: interrupted" in out
