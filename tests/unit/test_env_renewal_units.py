"""The systemd units that run `golden env apply` every day (examples/systemd/): systemd accepts them, and the
command they run, with the settings file's values put in as systemd does, is an `env apply` that orders
certificates (the renewal runs only with --acme-directory)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from goldenimage.cli import build_parser

UNITS = Path(__file__).resolve().parents[2] / "examples" / "systemd"
GOLDEN = "/opt/goldenimage/.venv/bin/golden"


def settings() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (UNITS / "env-apply.conf").read_text().splitlines()
             if line.strip() and not line.startswith("#"))
    return {key: value for key, value in pairs}


def exec_start() -> list[str]:
    """ExecStart as systemd expands it: ${VAR} as one word, $VAR split on whitespace."""
    (line,) = [line for line in (UNITS / "golden-env-apply.service").read_text().splitlines()
               if line.startswith("ExecStart=")]
    values = settings()
    words: list[str] = []
    for word in shlex.split(line.removeprefix("ExecStart=")):
        if re.fullmatch(r"\$\w+", word):
            words += values[word[1:]].split()
        else:
            words.append(re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], word))
    return words


def test_the_service_runs_env_apply_with_certificates_and_every_setting_filled() -> None:
    argv = exec_start()
    assert argv[0] == GOLDEN
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.env_command) == ("env", "apply")
    assert args.acme_directory == "https://acme-v02.api.letsencrypt.org/directory"
    assert args.acme_account_key is not None and not args.prune and not args.check
    assert [str(p) for p in args.envs] == [settings()["ENVS"]]
    assert not [w for w in argv if "$" in w]


def test_systemd_accepts_the_service_and_the_timer(tmp_path: Path) -> None:
    golden = Path(sys.executable).with_name("golden")  # the executable must exist for verify: this venv's
    service = (UNITS / "golden-env-apply.service").read_text().replace(GOLDEN, str(golden))
    conf = UNITS / "env-apply.conf"
    service = service.replace("EnvironmentFile=/etc/golden/env-apply.conf", f"EnvironmentFile={conf}")
    (tmp_path / "golden-env-apply.service").write_text(service)
    shutil.copy(UNITS / "golden-env-apply.timer", tmp_path)
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "golden-env-apply.service"),
                           str(tmp_path / "golden-env-apply.timer")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    timer = (UNITS / "golden-env-apply.timer").read_text()
    assert "OnCalendar=daily" in timer and "Persistent=true" in timer
