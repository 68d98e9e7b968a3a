"""The banking variant's restore, in the parts that need no server: which path of a full snapshot is the key,
the copy's backup-my.cnf pointed at this host's key file, and an encrypted backup refused onto a host whose
MariaDB is not encrypted before anything is stopped or moved. (tests/integration/test_backup_restore_mariadb.py
runs the whole restore against real mariadbd, restic and nanio.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit import firstboot_fake  # noqa: F401  (puts firstboot/ on sys.path)

from golden_firstboot import backup_keys, backup_restore  # isort: skip
from golden_firstboot.steps import Context  # isort: skip
from golden_firstboot.system import FirstbootError, Result, Runner  # isort: skip

FULL = {"id": "f" * 64, "short_id": "ffffffff", "time": "2026-12-07T10:00:00Z",
        "paths": ["/etc/mysql/encryption/keyfile", "/var/lib/golden/backup/spool/full"]}


def test_the_spool_is_the_data_and_the_other_path_the_key() -> None:
    assert backup_keys.data_path(FULL) == "/var/lib/golden/backup/spool/full"
    assert backup_keys.key_path(FULL) == "/etc/mysql/encryption/keyfile"
    plain = dict(FULL, paths=["/var/lib/golden/backup/spool/full"])
    assert backup_keys.key_path(plain) is None and backup_keys.data_path(plain) == plain["paths"][0]


def test_the_copy_is_prepared_with_this_hosts_key_file(tmp_path: Path) -> None:
    (tmp_path / "backup-my.cnf").write_text(
        "[mysqld]\nplugin_dir=\"/usr/lib/mysql/plugin/\"\nplugin_load=file_key_management=file_key_management\n"
        "file_key_management_encryption_algorithm=aes_ctr\nfile_key_management_filekey=\n"
        "file_key_management_filename=/gone/keyfile\ninnodb_encrypt_log=1\n")
    backup_keys.point_copy_at_key(str(tmp_path), "/etc/mysql/encryption/keyfile")
    text = (tmp_path / "backup-my.cnf").read_text()
    assert "file_key_management_filename=/etc/mysql/encryption/keyfile\n" in text and "/gone/" not in text
    assert backup_keys.key_settings(str(tmp_path)) == {
        "plugin_dir": "/usr/lib/mysql/plugin/", "plugin_load": "file_key_management=file_key_management",
        "file_key_management_encryption_algorithm": "aes_ctr", "file_key_management_filekey": "",
        "file_key_management_filename": "/etc/mysql/encryption/keyfile"}
    (tmp_path / "backup-my.cnf").write_text("[mysqld]\ninnodb_page_size=16384\n")
    with pytest.raises(FirstbootError, match="has no file_key_management_filename"):
        backup_keys.point_copy_at_key(str(tmp_path), "/etc/mysql/encryption/keyfile")


class Recorder(Runner):
    def __init__(self) -> None:
        super().__init__(logger=lambda line: None)
        self.argv: list[list[str]] = []

    def execute(self, args, input, env, stdin_path, stdout_path, timeout) -> Result:  # type: ignore[override]
        self.argv.append(args)
        return Result(0, "", "")


def test_an_encrypted_backup_is_refused_onto_a_host_without_encryption_before_the_server_is_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = Recorder()
    host: dict[str, Any] = {"hostname": "db9", "backup": {"repository": "s3:http://127.0.0.1:9/b", "password": "p",
                                                         "access_key_id": "a", "secret_access_key": "s"}}
    (tmp_path / "var/lib/mysql").mkdir(parents=True)
    ctx = Context({"roles": ["sql-primary"]}, host, root=str(tmp_path), runner=runner)
    monkeypatch.setattr(backup_restore, "plan", lambda ctx, at, source=None: backup_restore.Plan(at, FULL, []))
    with pytest.raises(FirstbootError, match="encrypted at rest, and this host's MariaDB is not"):
        backup_restore.restore_here(ctx, 1796637600.0, source="db1")
    assert not [a for a in runner.argv if a[0] == "systemctl"], runner.argv
    assert sorted(p.name for p in (tmp_path / "var/lib").iterdir()) == ["mysql"]  # nothing set aside
