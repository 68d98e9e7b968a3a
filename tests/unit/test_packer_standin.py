"""The Packer stand-in of the cloud-bake tests plays a rendered template's provisioners as Packer does: the
order of the template, uploads to remote_folder, Packer's quoting of environment_vars, skip_clean, and a
failed script ending the build."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from goldenimage.bake.render_dir import render
from goldenimage.model.profiles import resolve
from goldenimage.render.packer_template import Target
from tests.e2e.packer_standin import play_provisioners


class FakeVM:
    """Runs what the stand-in sends in a shell on the host, under a fake root for the files it writes."""

    def __init__(self, root: Path, fail: str | None = None) -> None:
        self.root, self.fail, self.commands = root, fail, []  # type: ignore[var-annotated]
        self.files: dict[str, str] = {}

    def ssh(self, cmd: Any, *, check: bool = True, timeout: float = 120.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        text = cmd if isinstance(cmd, str) else shlex.join(cmd)
        self.commands.append(text)
        if text.startswith("cat > "):
            self.files[shlex.split(text)[2]] = input or ""
            return subprocess.CompletedProcess(text, 0, "", "")
        if text.startswith("cat "):
            return subprocess.CompletedProcess(text, 0, '{"packages": {}}', "")
        failed = self.fail is not None and any(self.files.get(p, "").startswith(self.fail) for p in self.files
                                               if p in text and "rm -f" not in text)
        return subprocess.CompletedProcess(text, 1 if failed else 0, "", "boom" if failed else "")


@pytest.fixture(scope="module")
def proxmox(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("render") / "r"
    rendered = render(resolve("web", 12), Target.PROXMOX, out, packer_version="1.11")
    values = json.loads(rendered.var_file.read_text())
    variables = {**values, "user_data_file": rendered.user_data, "scripts_dir": out / "scripts",
                 "manifest_dir": out}
    return json.loads(rendered.template.read_text()), variables, out


def test_the_provisioners_run_in_the_templates_order_the_build_account_last(proxmox, tmp_path: Path) -> None:
    template, variables, out = proxmox
    vm = FakeVM(tmp_path)
    steps = play_provisioners(template, variables, vm, "proxmox-clone")  # type: ignore[arg-type]
    assert steps == ["file upload " + str(out / "user-data"), "shell apply-user-data.sh",
                     "shell wait-cloud-init.sh", "shell collect-manifest.sh",
                     "file download /tmp/golden-guest-manifest.json", "shell cleanup.sh",
                     "shell remove-build-account.sh"]
    assert (out / "guest-manifest.json").read_text() == '{"packages": {}}'
    # the user-data went where apply-user-data.sh reads it, the scripts to /var/tmp (exec allowed)
    assert vm.files["/tmp/golden-user-data"] == (out / "user-data").read_text()
    scripts = [p for p in vm.files if p.startswith("/var/tmp/script_")]
    assert len(scripts) == 5
    # cleanup.sh: as root, Packer's variables first, each value single-quoted
    cleanup = next(c for c in vm.commands if "GOLDEN_SERVICES=" in c)
    assert cleanup.startswith("chmod +x /var/tmp/script_") and "; sudo env PACKER_BUILDER_TYPE='proxmox-clone' " \
        "PACKER_BUILD_NAME='web-debian12' GOLDEN_SERVICES='" in cleanup
    # remove-build-account.sh removes itself (skip_clean): nothing logs in after it
    assert not vm.commands[-1].startswith("rm -f"), vm.commands[-1]


def test_a_failing_script_ends_the_build(proxmox, tmp_path: Path) -> None:
    template, variables, out = proxmox
    vm = FakeVM(tmp_path, fail=(out / "scripts/wait-cloud-init.sh").read_text()[:80])
    with pytest.raises(AssertionError, match="wait-cloud-init.sh exited 1"):
        play_provisioners(template, variables, vm, "proxmox-clone")  # type: ignore[arg-type]
    assert not any("GOLDEN_SERVICES=" in c for c in vm.commands), "cleanup ran after a failed step"
