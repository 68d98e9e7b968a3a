"""The hardened database examples: what their images carry for MariaDB encryption at rest, and what they
must not carry (a key, or encryption settings MariaDB would read before first boot has made the key)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from goldenimage.model.profiles import ResolvedProfile, resolve
from goldenimage.render.cluster import render_cluster
from goldenimage.render.packer_template import Target, render_template
from tests.conftest import EXAMPLES, ROOT

sys.path.insert(0, str(ROOT / "firstboot"))
from golden_firstboot.roles import hardened  # noqa: E402  (stdlib-only agent, not an installed package)

BANKING = {"banking-sql-primary": "sql-primary", "banking-sql-replica": "sql-replica"}


def _profile(name: str) -> ResolvedProfile:
    return resolve(str(EXAMPLES / f"{name}.yaml"), 12)


def _baked_cnf(profile: ResolvedProfile) -> str | None:
    for entry in profile.content.files:
        if entry.path == hardened.ENCRYPTION_SRC:
            return entry.content
    return None


@pytest.mark.parametrize("name, role", BANKING.items())
def test_banking_examples_are_hardened_database_hosts(name, role):
    profile = _profile(name)
    assert profile.name == name
    assert {str(r) for r in profile.roles} == {"hardened", role}
    assert "mariadb-server" in profile.packages and "auditd" in profile.packages


@pytest.mark.parametrize("name", BANKING)
def test_encryption_settings_are_baked_aside_and_never_where_mariadb_reads_them(name):
    # MariaDB would refuse to start with them and no key: first boot installs them once the key exists.
    paths = [entry.path for entry in _profile(name).content.files]
    assert hardened.ENCRYPTION_SRC in paths
    assert not [p for p in paths if p.startswith("/etc/mysql/") and "encrypt" in p]


@pytest.mark.parametrize("name", BANKING)
def test_first_boot_checks_every_encryption_setting_the_image_bakes(name):
    settings = hardened.encryption_settings(_baked_cnf(_profile(name)) or "")
    assert settings["file_key_management_filename"] == hardened.KEY_FILE
    assert settings["innodb_encrypt_tables"] == "FORCE"
    on = {"innodb_encrypt_log", "innodb_encrypt_temporary_tables", "encrypt_binlog", "encrypt_tmp_files",
          "encrypt_tmp_disk_tables", "aria_encrypt_tables"}
    assert {k for k, v in settings.items() if v == "ON"} == on
    # Aria's log is never encrypted: no user table may be written through it
    assert settings["enforce_storage_engine"] == "InnoDB"
    assert "plugin_load_add" not in settings


@pytest.mark.parametrize("name", BANKING)
def test_bake_cleanup_removes_any_key_directory(name):
    template, _ = render_template(_profile(name), Target.QEMU)
    cleanup = next(p["shell"] for p in template["build"]["provisioner"]
                   if "shell" in p and p["shell"]["script"].endswith("cleanup.sh"))
    unique = next(v for v in cleanup["environment_vars"] if v.startswith("GOLDEN_INSTANCE_UNIQUE="))
    assert hardened.KEY_DIR in unique.partition("=")[2].split()


def test_plain_database_profiles_carry_no_encryption():
    for name in ("sql-primary", "sql-replica"):
        assert _baked_cnf(resolve(name, 12)) is None


def test_banking_cluster_example_renders_a_hardened_pair(tmp_path: Path):
    # its profiles are paths relative to the cluster file
    render_cluster(EXAMPLES / "cluster-banking-sql.yaml", tmp_path / "out", {})
    hosts = json.loads((tmp_path / "out" / "hosts.json").read_text())
    assert hosts["db1"]["roles"] == ["hardened", "sql-primary"]
    assert hosts["db2"]["roles"] == ["hardened", "sql-replica"]
