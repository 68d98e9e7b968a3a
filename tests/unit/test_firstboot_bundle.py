"""The agent bundle: a deterministic zipapp that runs, and the files and unit that install it."""

from __future__ import annotations

import base64
import gzip
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from goldenimage.render import firstboot_bundle as bundle


def test_zipapp_is_byte_identical_for_the_same_sources(tmp_path):
    first = bundle.build_zipapp()
    copy = tmp_path / "golden_firstboot"
    shutil.copytree(bundle.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    later = time.time() + 86400
    for path in copy.rglob("*.py"):
        os.utime(path, (later, later))
        path.chmod(0o600)
    assert bundle.build_zipapp(copy) == first
    assert first.startswith(b"#!/usr/bin/python3\n")


def test_zipapp_runs_help_under_the_host_python(tmp_path):
    pyz = tmp_path / "golden-firstboot.pyz"
    pyz.write_bytes(bundle.build_zipapp())
    proc = subprocess.run([sys.executable, str(pyz), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "golden-firstboot" in proc.stdout and "status" in proc.stdout and "lb-add" in proc.stdout


def test_zipapp_status_works_on_a_host_where_it_never_ran(tmp_path):
    pyz = tmp_path / "golden-firstboot.pyz"
    pyz.write_bytes(bundle.build_zipapp())
    proc = subprocess.run([sys.executable, str(pyz), "status", "--root", str(tmp_path)], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and "has not run" in proc.stdout


def test_bundle_files_install_the_agent_wrapper_and_unit():
    files = {f["path"]: f for f in bundle.bundle_files()}
    assert set(files) == {bundle.ZIPAPP_PATH, bundle.WRAPPER_PATH, bundle.UNIT_PATH, bundle.EARLY_UNIT_PATH}
    assert files[bundle.ZIPAPP_PATH]["permissions"] == "0755"
    assert files[bundle.ZIPAPP_PATH]["encoding"] == "gz+b64"
    assert gzip.decompress(base64.b64decode(files[bundle.ZIPAPP_PATH]["content"])) == \
        bundle.build_zipapp(engine=False, backup=False)  # the backup modules come with a host's settings
    wrapper = base64.b64decode(files[bundle.WRAPPER_PATH]["content"]).decode()
    assert wrapper.startswith("#!/bin/sh\n") and bundle.ZIPAPP_PATH in wrapper
    unit = base64.b64decode(files[bundle.UNIT_PATH]["content"]).decode()
    for line in ("Type=oneshot", "RemainAfterExit=yes", "After=cloud-final.service network-online.target",
                 "Wants=network-online.target", "ConditionPathExists=!/var/lib/golden/firstboot.done",
                 "WantedBy=cloud-init.target", f"TimeoutStartSec={bundle.TIMEOUT_START_SEC}"):
        assert line in unit.splitlines()
    assert bundle.bundle_commands() == ["systemctl enable golden-firstboot.service golden-firstboot-early.service"]


def test_early_unit_makes_instance_keys_before_apache_and_after_the_host_name_is_set():
    files = {f["path"]: f for f in bundle.bundle_files()}
    unit = base64.b64decode(files[bundle.EARLY_UNIT_PATH]["content"]).decode().splitlines()
    assert f"ExecStart={bundle.WRAPPER_PATH} early" in unit
    assert "After=cloud-init.service" in unit and "Before=apache2.service" in unit
    assert "Type=oneshot" in unit and "WantedBy=multi-user.target" in unit
    # No run-once condition: a key removed later is made again at the next boot.
    assert not any(line.startswith("ConditionPathExists=!") for line in unit)
    sys.path.insert(0, str(Path(bundle.PACKAGE_DIR).parent))
    from golden_firstboot.roles import STEPS

    assert [s.id for s in STEPS if s.early] == ["web.snakeoil"]  # and Apache is what reads its pair


def test_unit_timeout_covers_the_agents_retry_budget():
    sys.path.insert(0, str(Path(bundle.PACKAGE_DIR).parent))
    from golden_firstboot.system import RetryPolicy

    waits = 5  # primary port, dump, replication threads, NFS mount, health endpoint
    assert bundle.TIMEOUT_START_SEC > waits * RetryPolicy().budget() + 600


def test_compacted_agent_keeps_code_and_step_lines_and_parses_under_python_3_7() -> None:
    import ast
    import gzip
    import io
    import zipfile

    pyz = bundle.build_zipapp()
    archive = zipfile.ZipFile(io.BytesIO(pyz[pyz.index(b"PK"):]))
    galera = archive.read("golden_firstboot/roles/galera.py").decode()
    for name in archive.namelist():
        compile(ast.parse(archive.read(name).decode(), feature_version=(3, 7)), name, "exec")
    assert "#" not in "".join(line for line in galera.splitlines() if line.lstrip().startswith("#"))
    # a step's first docstring line stays (status shows it); other docstrings go
    assert "'The health endpoint HAProxy checks (200 only while this node is Synced in a primary component).'" in galera
    assert "'The galera section, checked.'" not in galera
    assert "def may_bootstrap(ctx: Context, galera: dict[str, Any]) -> bool:" in galera
    source = sum(len(p.read_bytes()) for p in bundle.PACKAGE_DIR.rglob("*.py"))
    compacted = sum(info.file_size for info in archive.infolist())
    assert compacted < source * 0.95  # comments and docstring prose left out
    assert len(gzip.compress(pyz)) < source / 2  # the user-data carries it gzip-compressed (gz+b64)


def test_the_agent_in_images_leaves_the_converge_engine_out_and_says_so(tmp_path):
    import zipfile

    pyz = tmp_path / "image-agent.pyz"
    pyz.write_bytes(bundle.build_zipapp(engine=False))
    names = zipfile.ZipFile(pyz).namelist()
    assert "golden_firstboot/agent.py" in names
    assert not [n for n in names if n.rsplit("/", 1)[-1] in bundle.ENGINE_MODULES]
    assert set(bundle.ENGINE_MODULES) <= {n.rsplit("/", 1)[-1] for n in zipfile.ZipFile(
        io.BytesIO(bundle.build_zipapp())).namelist()}
    data = tmp_path / "ud.json"
    data.write_text("{}")
    proc = subprocess.run([sys.executable, str(pyz), "converge", "--user-data", str(data), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "carries no converge engine" in proc.stderr
