"""`golden verify`: boot the final artifact (never the build VM) twice on fresh overlays with fresh
first-boot seeds, one clone under BIOS and one under UEFI (Secure Boot enforced when the artifact boots it),
wait for SSH and cloud-init, and run the role's testinfra suites over SSH on both."""

from __future__ import annotations

import json
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import SOURCE_ROOT
from ..bake import store
from ..core.errors import GoldenError
from ..core.log import info, step
from ..core.run import run
from ..model.releases import matrix
from ..verify.guest import GUEST_USER, find_artifact, make_seed
from ..verify.vm import VM, SSHKey, ephemeral_keypair

INFRA_DIR = SOURCE_ROOT / "tests" / "infra"


@dataclass(frozen=True)
class Identity:
    """What must differ between two clones of one image."""

    host_keys: tuple[str, ...]
    machine_id: str


def suites_for(roles: list[str]) -> list[Path]:
    """The testinfra suites that apply: the base and hygiene suites, then one per role."""
    names = ["test_base.py", "test_hygiene.py"] + [f"test_{r.replace('-', '_')}.py" for r in roles]
    missing = [n for n in names if not (INFRA_DIR / n).is_file()]
    if missing:
        raise GoldenError(f"no testinfra suite {', '.join(missing)} in {INFRA_DIR}")
    return [INFRA_DIR / n for n in names]


def identity(vm: VM) -> Identity:
    keys = vm.ssh("cat /etc/ssh/ssh_host_*_key.pub | awk '{print $2}' | sort").stdout.split()
    machine_id = vm.ssh("cat /etc/machine-id").stdout.strip()
    return Identity(tuple(keys), machine_id)


def clone_firmwares(manifest: dict[str, Any]) -> tuple[str, str]:
    """The firmware of each clone: BIOS, then the strictest UEFI boot the artifact has (Secure Boot
    enforced first); an artifact without UEFI (older manifests, downloaded bases) boots BIOS twice."""
    firmware = manifest.get("firmware") or ["bios"]
    uefi = next((f for f in ("uefi-secureboot", "uefi") if f in firmware), None)
    return ("bios" if "bios" in firmware else uefi or "bios"), uefi or "bios"


def _boot(artifact: store.Artifact, directory: Path, name: str, key: SSHKey, roles: list[str],
          status_ok: tuple[int, ...], firmware: str = "bios") -> VM:
    seed = make_seed(directory, name, key, roles)
    vm = VM(artifact.qcow2, seed=seed, key=key, user=GUEST_USER, status_wait_ok=status_ok, name=name,
            workdir=directory / name, firmware=firmware)
    vm.start()
    try:
        vm.wait_for_ssh(timeout=600)
        vm.wait_cloud_init(timeout=900)
    except BaseException:
        vm.stop()
        raise
    return vm


def run_suites(vm: VM, suites: list[Path], env: dict[str, str], directory: Path) -> int:
    """Run testinfra over SSH against the guest; returns pytest's exit status (output shown)."""
    config = directory / "ssh_config"
    config.write_text(
        "Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
        "  IdentitiesOnly yes\n  ConnectTimeout 20\n"
    )
    argv = [sys.executable, "-m", "pytest", "-q", "-c", str(INFRA_DIR / "pytest.ini"), "--sudo",
            f"--hosts=ssh://{GUEST_USER}@127.0.0.1:{vm.ssh_port}", f"--ssh-config={config}",
            f"--ssh-identity-file={vm.key}", *[str(s) for s in suites]]
    proc = run(argv, check=False, capture=False, env=env, timeout=1800)
    return proc.returncode


def verify(target: str, debian: int | str | None = None) -> None:
    """Boot the artifact twice (BIOS and UEFI), compare identities, run the suites on both clones;
    GoldenError on failure."""
    artifact = find_artifact(target, debian)
    manifest = artifact.manifest()
    roles: list[str] = manifest["profile"]["roles"]
    release = matrix().get(manifest["release"]["number"])
    suites = suites_for(roles)
    firmwares = clone_firmwares(manifest)
    with step(f"Verifying {artifact.qcow2.name}"), tempfile.TemporaryDirectory(prefix="golden-verify-") as tmp:
        directory = Path(tmp)
        key = ephemeral_keypair(directory)
        with step(f"Booting two clones ({' and '.join(firmwares)})"), ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(_boot, artifact, directory, f"verify-{i}", key, roles, release.status_wait_ok, fw)
                       for i, fw in enumerate(firmwares, start=1)]
            vms: list[VM] = []
            errors: list[BaseException] = []
            for future in futures:
                try:
                    vms.append(future.result())
                except BaseException as exc:  # noqa: BLE001 - both VMs must be stopped, then re-raise
                    errors.append(exc)
        try:
            if errors:
                raise errors[0]
            identities = [identity(vm) for vm in vms]
            failed = []
            for vm, other in zip(vms, reversed(identities), strict=True):
                env = {
                    "GOLDEN_OTHER_IDENTITY": json.dumps({"host_keys": list(other.host_keys),
                                                         "machine_id": other.machine_id}),
                    "GOLDEN_MANIFEST": str(artifact.manifest_file),
                    "GOLDEN_FIRMWARE": vm.firmware,
                }
                with step(f"testinfra on {vm.name} ({vm.firmware}): {', '.join(s.name for s in suites)}"):
                    if run_suites(vm, suites, env, directory) != 0:
                        failed.append(f"{vm.name} ({vm.firmware})")
                vm.stop()  # done with this clone: the next one runs its suites alone
            if failed:
                raise GoldenError(f"verify failed: the testinfra suites reported failures for {artifact.qcow2.name} "
                                  f"on {', '.join(failed)}", hint="see the pytest output above")
            info(f"verified {artifact.qcow2.name} ({', '.join(firmwares)})")
        finally:
            for vm in vms:
                vm.stop()
