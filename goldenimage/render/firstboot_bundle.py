"""Install the first-boot agent into an image: cloud-init write_files entries (the agent as one zipapp, its
wrapper and systemd unit) and the bake commands that enable it."""

from __future__ import annotations

import ast
import base64
import gzip
import io
import threading
import tokenize
import zipapp
import zipfile
from pathlib import Path
from typing import Any

from ..core.paths import shipped

PACKAGE_DIR = shipped("firstboot") / "golden_firstboot"
ZIPAPP_PATH = "/usr/local/lib/golden/golden-firstboot.pyz"
WRAPPER_PATH = "/usr/local/sbin/golden-firstboot"
UNIT_NAME = "golden-firstboot.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
EARLY_UNIT_NAME = "golden-firstboot-early.service"
EARLY_UNIT_PATH = f"/etc/systemd/system/{EARLY_UNIT_NAME}"
#: The services that read what the agent's early steps make (web.snakeoil: Apache's default TLS site).
EARLY_BEFORE = ("apache2.service",)
INTERPRETER = "/usr/bin/python3"
#: Zip entries carry this date whatever the files' mtimes and the builder's time zone: same sources, same bytes.
FIXED_DATE = (2020, 1, 1, 0, 0, 0)
#: The agent's worst case: five peer waits (primary port, dump, replication threads, NFS mount, health
#: endpoint) of its default budget, 510 s each, plus the work itself. A clear failure beats a systemd kill.
TIMEOUT_START_SEC = 3600

_ENTRY = "import sys\nfrom golden_firstboot.__main__ import main\n\nsys.exit(main())\n"


#: CPython 3.11's AST constructor is not safe in parallel threads (`golden validate --jobs`): one parse at a time.
_PARSE_LOCK = threading.Lock()


def _is_step(node: ast.AST) -> bool:
    """A function made a Step by `@step(...)`: its docstring's first line is the step's description."""
    return isinstance(node, ast.FunctionDef) and any(
        isinstance(d, ast.Call) and isinstance(d.func, ast.Name) and d.func.id == "step" for d in node.decorator_list)


def compact_source(text: str) -> str:
    """The module without its comments and docstrings, but for the first line of each step's.

    Every image's user-data carries the agent, and OpenStack takes 64 KiB of it: the prose stays in the source
    tree, the code and each step's one-line description (`Step.doc`, shown by `status`) go into images."""
    with _PARSE_LOCK:
        tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    edits: list[tuple[int, int, int, int, str]] = []
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            edits.append((*token.start, *token.end, ""))
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                doc = first.value.value.strip().splitlines()
                keep = doc[0] if doc and _is_step(node) else ""
                edits.append((first.lineno, first.col_offset, first.end_lineno or first.lineno,
                              first.end_col_offset or 0, repr(keep)))
    for row, col, end_row, end_col, replacement in sorted(edits, reverse=True):
        lines[row - 1:end_row] = [lines[row - 1][:col] + replacement + lines[end_row - 1][end_col:]]
    return "".join(line if line.strip() else "\n" for line in (ln.rstrip() + "\n" for ln in lines))


#: The converge engine's modules: `golden apply` and the native bake run the engine from a zipapp they ship
#: themselves, so the agent an image carries leaves them out (banking-hardened's OpenStack user-data, which
#: carries the agent, must stay under Nova's 64 KiB).
ENGINE_MODULES = ("converge.py", "converge_apt.py", "converge_files.py", "converge_host.py", "converge_restart.py",
                  "converge_system.py",
                  # hosting environments: `golden env apply` ships the agent with them; no first boot runs them
                  "env_command.py", "env_schema.py", "env.py", "env_batch.py", "env_render.py", "env_sql.py",
                  # `golden cluster status` ships the agent with it (apply/remote_agent.py)
                  "host_summary.py")
#: The backup jobs and restores (README: Backups and restores): not in the images' agent (every role's OpenStack
#: bake user-data must stay under Nova's 64 KiB; the agent runs without them). A host whose cluster settings
#: back something up gets them in its own user-data (backup_zip_file), and the agent loads them from there.
BACKUP_MODULES = ("backup_jobs.py", "backup_keyfile.py", "backup_keys.py", "backup_restore.py", "backup_restore_env.py",
                  "backup_restore_files.py", "backup_command.py", "roles/backup.py")
BACKUP_ZIP_PATH = "/usr/local/lib/golden/golden-firstboot-backup.zip"


def build_zipapp(package_dir: Path = PACKAGE_DIR, engine: bool = True, backup: bool = True) -> bytes:
    """The agent as a zipapp (shebang + zip): sorted entries, fixed dates and modes, no bytecode; each module
    compacted (compact_source); without the converge engine's modules when `engine` is false (the agent
    installed into images), and without the backup modules when `backup` is false.

    Entries are stored, not deflated: the user-data carries the whole zipapp gzip-compressed (`gz+b64`), one
    solid stream that is a fifth smaller than per-file deflate (banking-hardened's OpenStack user-data must
    stay under Nova's 64 KiB)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        entries = [("__main__.py", _ENTRY.encode())]
        for path in sorted(package_dir.rglob("*.py")):
            relative = path.relative_to(package_dir).as_posix()
            if "__pycache__" not in path.parts and (engine or path.name not in ENGINE_MODULES) \
                    and (backup or relative not in BACKUP_MODULES):
                name = f"{package_dir.name}/{relative}"
                entries.append((name, compact_source(path.read_text()).encode()))
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    buffer.seek(0)
    out = io.BytesIO()
    # zipapp adds the interpreter line to an existing archive; building the zip ourselves fixes its dates.
    zipapp.create_archive(buffer, out, interpreter=INTERPRETER)
    return out.getvalue()


def wrapper_script() -> str:
    return f'#!/bin/sh\n# goldenimage first-boot agent\nexec {INTERPRETER} {ZIPAPP_PATH} "$@"\n'


def unit_file() -> str:
    """The run-once unit: after cloud-init's final stage, which wrote /etc/golden/host.json."""
    # WantedBy=cloud-init.target, not multi-user.target: cloud-final runs after multi-user.target, and a target
    # is ordered after what it wants, so multi-user.target would make an ordering cycle.
    return "\n".join([
        "[Unit]",
        "Description=goldenimage first boot: finish this host's role and join its cluster",
        "After=cloud-final.service network-online.target",
        "Wants=network-online.target",
        "ConditionPathExists=/etc/golden/image.json",
        "ConditionPathExists=!/var/lib/golden/firstboot.done",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        f"ExecStart={WRAPPER_PATH} run",
        f"TimeoutStartSec={TIMEOUT_START_SEC}",
        "StandardOutput=journal+console",
        "StandardError=journal+console",
        "",
        "[Install]",
        "WantedBy=cloud-init.target",
        "",
    ])


def early_unit_file() -> str:
    """Every boot, after cloud-init has set the host name and before the services that need them: the agent's
    early steps make this instance's keys and certificates (a no-op once they exist). A oneshot unit ordered
    before Apache, so Apache never makes a key under its own start timeout."""
    return "\n".join([
        "[Unit]",
        "Description=goldenimage: this instance's keys and certificates, before the services that use them",
        "After=cloud-init.service",
        "Before=" + " ".join(EARLY_BEFORE),
        "ConditionPathExists=/etc/golden/image.json",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        f"ExecStart={WRAPPER_PATH} early",
        "TimeoutStartSec=900",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def _entry(path: str, content: bytes, permissions: str, compress: bool = False) -> dict[str, Any]:
    if compress:
        packed = gzip.compress(content, compresslevel=9, mtime=0)
        return {"path": path, "owner": "root:root", "permissions": permissions, "encoding": "gz+b64",
                "content": base64.b64encode(packed).decode()}
    return {"path": path, "owner": "root:root", "permissions": permissions, "encoding": "b64",
            "content": base64.b64encode(content).decode()}


def backup_zip(package_dir: Path = PACKAGE_DIR) -> bytes:
    """The backup modules, compacted, as a zip whose golden_firstboot/ the agent adds to its package path."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for relative in sorted(BACKUP_MODULES):
            info = zipfile.ZipInfo(f"{package_dir.name}/{relative}", date_time=FIXED_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            archive.writestr(info, compact_source((package_dir / relative).read_text()).encode())
    return buffer.getvalue()


def backup_zip_file() -> dict[str, Any]:
    """The write_files entry of the backup modules, for a host whose settings have a `backup` section."""
    return _entry(BACKUP_ZIP_PATH, backup_zip(), "0644", compress=True)


def bundle_files(backup: bool = False) -> list[dict[str, Any]]:
    """cloud-init write_files entries that install the agent (with the backup modules when `backup`: `golden
    apply`, which has no size limit)."""
    extra = [backup_zip_file()] if backup else []
    return [
        _entry(ZIPAPP_PATH, build_zipapp(engine=False, backup=False), "0755", compress=True), *extra,
        _entry(WRAPPER_PATH, wrapper_script().encode(), "0755"),
        _entry(UNIT_PATH, unit_file().encode(), "0644"),
        _entry(EARLY_UNIT_PATH, early_unit_file().encode(), "0644"),
    ]


def bundle_commands() -> list[str]:
    """Bake commands: enable the unit (it runs on the clones' first boot, never during the bake)."""
    return [f"systemctl enable {UNIT_NAME} {EARLY_UNIT_NAME}"]
