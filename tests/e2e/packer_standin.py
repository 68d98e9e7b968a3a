"""Packer's side of a cloud bake, played against a local guest: the provisioners of a rendered template run in
their order over SSH as Packer runs them (file uploads and downloads; shell scripts uploaded to their
remote_folder, `chmod 0755`, then the execute_command with `{{ .Path }}` and `{{ .Vars }}`, Packer's two
PACKER_* variables first; the script removed after unless skip_clean; the first failure ends the build),
and the machine stopped through QEMU's monitor as a cloud's API stops it (QMP, the drive unplugged first
when asked, an ACPI power-down, a hard stop after a grace period)."""

from __future__ import annotations

import json
import re
import secrets
import shlex
import shutil
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from goldenimage.bake import native
from goldenimage.bake.plan import get_layer_tree
from goldenimage.model.profiles import ResolvedProfile
from goldenimage.verify.vm import VM

#: packer-sdk's shell provisioner default for Unix guests.
DEFAULT_EXECUTE = "chmod +x {{ .Path }}; {{ .Vars }} {{ .Path }}"
PROVISION_TIMEOUT = 3600


def layer_disk(profile: ResolvedProfile, work: Path) -> Path:
    """The profile's package layer (the native bake's own tree, from the cache) as a never-booted, uncompressed
    qcow2 of the profile's layout and disk size: what a cloud bake starts from."""
    tree = work / "tree"
    native.copy_layer(get_layer_tree(profile), tree)
    raw = native.assemble(tree, profile, work)
    shutil.rmtree(tree)
    return native.to_qcow2(raw, work / "template.qcow2", profile, None)


def mirror_hosts(profile: ResolvedProfile) -> list[str]:
    """The hosts apt needs for the profile's release (mirror_relay lets the guest reach those only)."""
    r = profile.release
    return sorted({urlsplit(url).hostname or "" for url in (r.mirror, r.security_mirror)})


def _resolve(text: str, variables: dict[str, Any]) -> str:
    """`${var.NAME}` replaced by its value (the only interpolation the rendered templates use)."""
    def value(match: re.Match[str]) -> str:
        return str(variables[match.group(1)])
    return re.sub(r"\$\{var\.([A-Za-z0-9_]+)\}", value, text)


def _quote_var(value: str) -> str:
    """A value as packer-sdk's shell provisioner quotes it in {{ .Vars }}: single quotes, ' as '"'"'."""
    return "'" + value.replace("'", "'\"'\"'") + "'"


def play_provisioners(template: dict[str, Any], variables: dict[str, Any], vm: VM, builder_type: str) -> list[str]:
    """Run the template's provisioners against `vm` (logged in as the template's ssh_username); the names of
    the steps run. AssertionError naming the step and its output when one fails."""
    build = template["build"]
    done: list[str] = []
    for entry in build["provisioner"]:
        ((kind, options),) = entry.items()
        if kind == "file":
            source, destination = _resolve(options["source"], variables), _resolve(options["destination"], variables)
            if options.get("direction") == "download":
                Path(destination).write_text(vm.ssh(["cat", source], timeout=120).stdout)
            else:
                vm.ssh(f"cat > {shlex.quote(destination)}", input=Path(source).read_text(), timeout=120)
            done.append(f"file {options.get('direction', 'upload')} {source}")
            continue
        assert kind == "shell", f"a provisioner this stand-in does not play: {kind}"
        script = Path(_resolve(options["script"], variables))
        remote = f"{options.get('remote_folder', '/tmp')}/script_{secrets.randbelow(10000)}.sh"
        vm.ssh(f"cat > {shlex.quote(remote)} && chmod 0755 {shlex.quote(remote)}", input=script.read_text())
        env = [f"PACKER_BUILDER_TYPE={builder_type}", f"PACKER_BUILD_NAME={build['name']}",
               *options.get("environment_vars", [])]
        packer_vars = " ".join(f"{k}={_quote_var(v)}" for k, _, v in (e.partition("=") for e in env))
        command = re.sub(r"\{\{\s*\.Path\s*\}\}", remote, options.get("execute_command", DEFAULT_EXECUTE))
        command = re.sub(r"\{\{\s*\.Vars\s*\}\}", "{{.Vars}}", command).replace("{{.Vars}}", packer_vars)
        started = time.monotonic()
        proc = vm.ssh(command, check=False, timeout=PROVISION_TIMEOUT)
        print(f"[provisioner {script.name}: exit {proc.returncode} after {time.monotonic() - started:.0f} s]")
        assert proc.returncode == 0, (f"{script.name} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-3000:]}"
                                      f"\n--- stderr ---\n{proc.stderr[-3000:]}")
        if not options.get("skip_clean"):
            vm.ssh(["rm", "-f", remote])
        done.append(f"shell {script.name}")
    return done


class QMP:
    """QEMU's machine protocol on a unix socket (-qmp unix:PATH,server=on,wait=off): one command at a time."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.file = self.sock.makefile("rwb")
        self._read()  # the greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        line = self.file.readline()
        if not line:
            raise ConnectionError("QMP closed")
        return dict(json.loads(line))

    def execute(self, command: str, **arguments: Any) -> dict[str, Any]:
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self.file.write(json.dumps(message).encode() + b"\n")
        self.file.flush()
        for _ in range(1000):  # events may come before the answer
            reply = self._read()
            if "return" in reply or "error" in reply:
                return reply
        raise ConnectionError(f"QMP: no answer to {command}")

    def close(self) -> None:
        self.sock.close()


def qmp_args(path: Path) -> list[str]:
    return ["-qmp", f"unix:{path},server=on,wait=off"]


def stop_through_api(vm: VM, qmp_path: Path, *, unplug: str | None = None, grace: float = 300.0) -> str:
    """Stop `vm` as an API does: unplug device `unplug` (a cloud-init drive), ACPI power-down, and after
    `grace` seconds a hard stop. How it ended: "powered off" or "hard stop"."""
    qmp = QMP(qmp_path)
    try:
        if unplug:
            reply = qmp.execute("device_del", id=unplug)
            assert "error" not in reply, f"device_del {unplug}: {reply}"
        qmp.execute("system_powerdown")
        deadline = time.monotonic() + grace
        while vm.running and time.monotonic() < deadline:
            time.sleep(2)
        if vm.running:
            qmp.execute("quit")
            for _ in range(30):
                if not vm.running:
                    break
                time.sleep(1)
            return "hard stop"
        return "powered off"
    finally:
        qmp.close()
