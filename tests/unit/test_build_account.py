"""No target's output keeps the build account, its sudo rule or its key.

The qemu builder runs a shutdown_command over SSH and waits for the machine to stop: the account goes there.
The proxmox and openstack builders never run one: after the provisioners they stop the machine through their
API (packer-plugin-proxmox builder.go: StepProvision, StepCleanupTempKeys, stepStopVM -> ShutdownVm, then
stepConvertToTemplate; packer-plugin-openstack: StepStopServer), so their last provisioner removes it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from goldenimage.model.profiles import resolve
from goldenimage.render.packer_template import SCRIPTS, Target, render_template, script_text
from goldenimage.render.userdata import BUILD_USER

CLOUD_INIT_SUDOERS = (
    "# Created by cloud-init v. 22.4.2 on Mon, 07 Dec 2026 01:00:00 +0000\n\n"
    f"# User rules for {BUILD_USER}\n{BUILD_USER} ALL=(ALL) NOPASSWD:ALL\n"
)


def _provisioners(target: Target, required_plugins: bool) -> list[dict]:
    template, _ = render_template(resolve("web", 12), target, required_plugins=required_plugins)
    return template["build"]["provisioner"]


@pytest.mark.parametrize("required_plugins", [False, True])
@pytest.mark.parametrize("target", [Target.PROXMOX, Target.OPENSTACK])
def test_api_stopped_targets_remove_the_account_in_their_last_provisioner(target, required_plugins):
    template, _ = render_template(resolve("web", 12), target, required_plugins=required_plugins)
    ((source,),) = (s.values() for s in template["source"].values())
    assert "shutdown_command" not in source  # neither builder has one
    last = template["build"]["provisioner"][-1]["shell"]
    assert last["script"].endswith("/remove-build-account.sh")
    assert f"GOLDEN_BUILD_USER={BUILD_USER}" in last["environment_vars"]
    assert "sudo" in last["execute_command"]
    # Packer would log in again to delete the uploaded script: the account is gone by then.
    assert last["skip_clean"] is True
    assert "remove-build-account.sh" in SCRIPTS


@pytest.mark.parametrize("required_plugins", [False, True])
def test_qemu_removes_the_account_in_its_shutdown_command(required_plugins):
    template, _ = render_template(resolve("web", 12), Target.QEMU, required_plugins=required_plugins)
    command = template["source"]["qemu"]["golden"]["shutdown_command"]
    assert f"userdel -rf {BUILD_USER}" in command and command.rstrip("'").endswith("shutdown -P now")
    assert _provisioners(Target.QEMU, required_plugins)[-1]["shell"]["script"].endswith("/cleanup.sh")


def _run_removal(tmp_path: Path, sudoers: str | None) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    root = tmp_path / "root"
    (root / "etc/sudoers.d").mkdir(parents=True)
    (root / f"home/{BUILD_USER}/.ssh").mkdir(parents=True)
    (root / f"home/{BUILD_USER}/.ssh/authorized_keys").write_text("ssh-ed25519 AAAA golden-build (ephemeral)\n")
    if sudoers is not None:
        (root / "etc/sudoers.d/90-cloud-init-users").write_text(sudoers)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    (bin_dir / "getent").write_text(f'#!/bin/sh\necho "getent $*" >>{log}\necho "$2:x:1001:1001::/home/$2:/bin/bash"\n')
    (bin_dir / "userdel").write_text(f'#!/bin/sh\necho "userdel $*" >>{log}\n')
    (bin_dir / "sync").write_text("#!/bin/sh\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    script = tmp_path / "script_1234.sh"  # where Packer uploads it
    script.write_text(script_text("remove-build-account.sh"))
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "GOLDEN_ROOT": str(root),
           "GOLDEN_BUILD_USER": BUILD_USER}
    done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=30)
    return root, script, done


def test_removal_keeps_the_profiles_sudo_rules_and_drops_the_build_one(tmp_path):
    profile_rules = "\n# User rules for ops\nops ALL=(ALL) NOPASSWD:ALL\n"
    root, script, done = _run_removal(tmp_path, CLOUD_INIT_SUDOERS + profile_rules)
    assert done.returncode == 0, done.stderr
    rules = (root / "etc/sudoers.d/90-cloud-init-users").read_text()
    assert BUILD_USER not in rules and "ops ALL=(ALL) NOPASSWD:ALL" in rules
    assert (tmp_path / "calls").read_text().splitlines()[-1] == f"userdel -rf {BUILD_USER}"
    assert not (root / f"home/{BUILD_USER}").exists()  # the authorized key with it
    assert not script.exists()  # skip_clean: the script removes itself


def root_keys(user: str, key: str) -> str:
    """A line cloud-init writes into root's authorized_keys for each user's key when disable_root is set."""
    return ('no-port-forwarding,no-agent-forwarding,no-X11-forwarding,command="echo \'Please login as the user '
            f'\\"{user}\\" rather than the user \\"root\\".\';echo;sleep 10;exit 142" {key}\n')


OPS_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOpsOpsOpsOpsOpsOpsOpsOpsOpsOpsOpsOpsOps0000 ops"
BUILD_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBuildBuildBuildBuildBuildBuildBuildBuild00 golden-build"


def test_removal_takes_the_build_key_out_of_roots_authorized_keys(tmp_path):
    keys = tmp_path / "root/root/.ssh/authorized_keys"
    keys.parent.mkdir(parents=True)
    keys.write_text(root_keys("ops", OPS_KEY) + root_keys(BUILD_USER, BUILD_KEY))
    _, _, done = _run_removal(tmp_path, CLOUD_INIT_SUDOERS)
    assert done.returncode == 0, done.stderr
    assert keys.read_text() == root_keys("ops", OPS_KEY)


def test_removal_deletes_a_sudoers_file_left_with_no_rule(tmp_path):
    root, _, done = _run_removal(tmp_path, CLOUD_INIT_SUDOERS)
    assert done.returncode == 0, done.stderr
    assert not (root / "etc/sudoers.d/90-cloud-init-users").exists()


def test_qemu_shutdown_command_keeps_the_profiles_sudo_rules(tmp_path):
    """The native converge writes the profile's users' rules into cloud-init's file; the VM pass's shutdown
    must take out only the build account's."""
    template, _ = render_template(resolve("web", 12), Target.QEMU)
    command = template["source"]["qemu"]["golden"]["shutdown_command"]
    prefix = "sudo sh -c '"
    assert command.startswith(prefix) and command.endswith("'")
    rules_dir = tmp_path / "sudoers.d"
    rules_dir.mkdir()
    keys = tmp_path / "authorized_keys"
    keys.write_text(root_keys("acme-ops", OPS_KEY) + root_keys(BUILD_USER, BUILD_KEY))
    script = command[len(prefix):-1].replace("/etc/sudoers.d", str(rules_dir)).replace("shutdown -P now",
                                                                                        "echo stopped")
    script = script.replace("/root/.ssh/authorized_keys", str(keys))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "userdel").write_text("#!/bin/sh\n")
    (bin_dir / "userdel").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    rules = rules_dir / "90-cloud-init-users"
    rules.write_text(CLOUD_INIT_SUDOERS + "\n# User rules for acme-ops\nacme-ops ALL=(ALL) NOPASSWD:ALL\n")
    done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout == "stopped\n", done.stderr
    assert BUILD_USER not in rules.read_text() and "acme-ops ALL=(ALL) NOPASSWD:ALL" in rules.read_text()
    assert keys.read_text() == root_keys("acme-ops", OPS_KEY)  # the build key out of root's too
    rules.write_text(CLOUD_INIT_SUDOERS)
    subprocess.run(["sh", "-c", script], env=env, check=True, capture_output=True, timeout=30)
    assert not rules.exists()
