"""`golden verify`: boot the final artifact (never the build VM) twice on fresh overlays with fresh
first-boot seeds, one clone under BIOS and one under UEFI (Secure Boot enforced when the artifact boots it),
or once per firmware it boots (`--all-firmwares`: BIOS, UEFI, UEFI with Secure Boot), wait for SSH and
cloud-init, and run the role's testinfra suites over SSH on every clone."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bake import store
from ..core.errors import GoldenError, InputError
from ..core.fs import scratch
from ..core.log import info, step
from ..core.run import run
from ..core.ssh_keys import SSHKey, ephemeral_keypair
from ..model.releases import matrix
from ..verify.datasources import DATASOURCES, CloneData, clone_data
from ..verify.guest import GUEST_USER, boot_clone, standalone_settings, wait_for_first_boot
from ..verify.vm import FIRMWARES, HARDWARE, HARDWARE_FIRMWARE, VM

#: The testinfra suites, shipped in the package (package data, not a Python package).
SUITES_DIR = Path(__file__).resolve().parent.parent / "verify" / "suites"


@dataclass(frozen=True)
class Identity:
    """What must differ between two clones of one image."""

    host_keys: tuple[str, ...]
    machine_id: str


def suites_for(roles: list[str], datasource: bool = False) -> list[Path]:
    """The testinfra suites that apply: the base and hygiene suites, the datasource suite when the clones
    were given a datasource's data, then one per role."""
    names = ["test_base.py", "test_hygiene.py"] + (["test_datasource.py"] if datasource else []) + \
        [f"test_{r.replace('-', '_')}.py" for r in roles]
    missing = [n for n in names if not (SUITES_DIR / n).is_file()]
    if missing:
        raise GoldenError(f"no testinfra suite {', '.join(missing)} in {SUITES_DIR}")
    return [SUITES_DIR / n for n in names]


def identity(vm: VM) -> Identity:
    keys = vm.ssh("cat /etc/ssh/ssh_host_*_key.pub | awk '{print $2}' | sort").stdout.split()
    machine_id = vm.ssh("cat /etc/machine-id").stdout.strip()
    return Identity(tuple(keys), machine_id)


def clone_firmwares(manifest: dict[str, Any], every: bool = False, only: Sequence[str] = ()) -> tuple[str, ...]:
    """The firmware of each clone: BIOS, then the strictest UEFI boot the artifact has (Secure Boot
    enforced first); an artifact without UEFI (older manifests, downloaded bases) boots BIOS twice.
    With `every`, one clone per firmware the artifact boots, in the order bios, uefi, uefi-secureboot
    (still two clones at least: the hygiene suite compares two). With `only`, one clone per firmware named
    there (two of it when one is named), each of which the artifact must boot (InputError otherwise)."""
    firmware = manifest.get("firmware") or ["bios"]
    if only:
        unknown = [f for f in only if f not in firmware]
        if unknown:
            raise InputError(f"--firmware {', '.join(unknown)}: the artifact does not boot it "
                             f"(its manifest says: {', '.join(firmware)})",
                             hint=f"choose among {', '.join(f for f in FIRMWARES if f in firmware)}")
        clones = tuple(f for f in FIRMWARES if f in only)
        return clones if len(clones) > 1 else clones * 2
    if every:
        clones = tuple(f for f in FIRMWARES if f in firmware)
        return clones if len(clones) > 1 else (clones or ("bios",)) * 2
    uefi = next((f for f in ("uefi-secureboot", "uefi") if f in firmware), None)
    return ("bios" if "bios" in firmware else uefi or "bios"), uefi or "bios"


def others(identities: list[Identity]) -> list[Identity]:
    """The clone each clone's hygiene suite is compared with: the next one, the last with the first."""
    return identities[1:] + identities[:1]


def _names(items: tuple[str, ...]) -> str:
    return " and ".join(items) if len(items) <= 2 else f"{', '.join(items[:-1])} and {items[-1]}"


def _boot(artifact: store.Artifact, directory: Path, name: str, key: SSHKey, roles: list[str],
          status_ok: tuple[int, ...], firmware: str = "bios", started: list[VM] | None = None,
          data: CloneData | None = None, hardware: str = "virt") -> VM:
    # 20 minutes for SSH: two or three TCG guests booting at once on a loaded 2-core host took 7-10 minutes here
    vm = boot_clone(artifact.qcow2, directory, name, key, roles, status_ok, firmware=firmware,
                    ssh_timeout=1200, started=started, data=data, hardware=hardware)
    try:
        # the suites check a settled clone: the first-boot agent starts once cloud-init is done, and on a
        # loaded host its steps (banking-hardened's update-grub: minutes under TCG) were still running
        result = wait_for_first_boot(vm)
    except BaseException:
        vm.stop()
        raise
    info(f"{name}: first boot {result} after {time.monotonic() - vm.started_at:.0f}s")
    return vm


def collect_boots(futures: list[Future[VM]], started: list[VM]) -> tuple[list[VM], list[BaseException]]:
    """The booted clones and the boot errors, every boot begun waited for (a failed boot cancels those not
    begun yet). Ctrl-C or SIGTERM while waiting
    cancels the boots not begun and stops the guests already started (their boot threads then fail at
    once instead of waiting out their SSH and cloud-init timeouts), then propagates."""
    vms: list[VM] = []
    errors: list[BaseException] = []
    try:
        for future in futures:
            try:
                vms.append(future.result())
            except Exception as exc:  # noqa: BLE001 - every clone must be stopped, then re-raise
                errors.append(exc)
                for queued in futures:  # verify fails now: no clone that has not begun booting is worth it
                    queued.cancel()
    except BaseException:
        for future in futures:
            future.cancel()
        for vm in started:
            vm.stop()
        raise
    return vms, errors


def run_suites(vm: VM, suites: list[Path], env: dict[str, str], directory: Path) -> int:
    """Run testinfra over SSH against the guest; returns pytest's exit status (output shown)."""
    config = directory / "ssh_config"
    # testinfra runs every command over a new ssh unless a ControlPath lets its ControlMaster=auto share one
    # connection: a key exchange costs a TCG guest seconds (19 s each on a loaded 2-core host, 2 s shared)
    config.write_text(
        "Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
        "  IdentitiesOnly yes\n  ConnectTimeout 20\n"
        f"  ControlMaster auto\n  ControlPath {directory}/cm-%C\n  ControlPersist 60\n"
    )
    argv = [sys.executable, "-m", "pytest", "-q", "-c", str(SUITES_DIR / "pytest.ini"), "--sudo",
            f"--hosts=ssh://{GUEST_USER}@127.0.0.1:{vm.ssh_port}", f"--ssh-config={config}",
            f"--ssh-identity-file={vm.key}", *[str(s) for s in suites]]
    proc = run(argv, check=False, capture=False, env=env, timeout=1800)
    return proc.returncode


def keep_console_logs(vms: list[VM], dest: Path) -> list[Path]:
    """Copy each clone's serial console log (kernel, systemd, cloud-init and first-boot output, with the
    guest's uptime on each kernel line) to `dest`, named for the clone and its firmware: verify's working
    folder is removed at its end, and a failed boot (starved or stuck) is told apart only from the whole log."""
    kept: list[Path] = []
    for vm in vms:
        if not vm.serial_log.is_file():
            continue
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / f"{vm.name}-{vm.firmware}-serial.log"
        shutil.copyfile(vm.serial_log, target)
        kept.append(target)
    return kept


def console_logs_dir(artifact: store.Artifact) -> Path:
    """Where a failed verify keeps its clones' console logs: beside the artifact, one folder per run."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return artifact.qcow2.parent / "verify-logs" / f"{artifact.name}-{stamp}"


def check_hardware(manifest: dict[str, Any], hardware: str) -> None:
    """A metal layout needs an image for metal (the generic kernel has AHCI and the server NICs' drivers; the
    cloud kernel finds no disk there): InputError in one line otherwise."""
    kind = manifest.get("kind", "cloud")
    if hardware == "metal" and kind != "metal":
        raise InputError(f"--hardware metal: the artifact is a {kind} image, whose kernel has no AHCI or server "
                         "NIC drivers", hint="bake one for metal: golden build PROFILE --kind metal")


def verify(target: str, debian: int | str | None = None, all_firmwares: bool = False,
           firmwares_only: Sequence[str] = (), datasource: str | None = None, hardware: str = "virt",
           parallel: int = 2) -> None:
    """Boot the artifact twice (BIOS and UEFI), or once per firmware it boots with `all_firmwares`, or once per
    firmware of `firmwares_only` (twice when one is named), compare identities, run the suites on every clone;
    GoldenError on failure. `datasource` hands the clones their data as that cloud does (and adds the
    datasource suite); `hardware` boots them on a target's layout (twice, with the firmware it has);
    `parallel` clones boot at a time."""
    if hardware not in HARDWARE:
        raise InputError(f"--hardware {hardware}: no such layout", hint=f"one of: {', '.join(HARDWARE)}")
    if datasource is not None and datasource not in DATASOURCES:
        raise InputError(f"--datasource {datasource}: no such datasource", hint=f"one of: {', '.join(DATASOURCES)}")
    # metal hardware takes the newest image for metal (the generic kernel), the others the newest cloud image
    artifact = store.resolve(target, debian, kind="metal" if hardware == "metal" else "cloud")
    manifest = artifact.manifest()
    check_hardware(manifest, hardware)
    roles: list[str] = manifest["profile"]["roles"]
    release = matrix().get(manifest["release"]["number"])
    suites = suites_for(roles, datasource=datasource is not None or hardware != "virt")
    if hardware in HARDWARE_FIRMWARE:
        firmwares = clone_firmwares(manifest, only=(HARDWARE_FIRMWARE[hardware],))
    else:
        firmwares = clone_firmwares(manifest, every=all_firmwares, only=firmwares_only)
    with step(f"Verifying {artifact.qcow2.name}"), scratch("golden-verify") as tmp:
        directory = Path(tmp)
        key = ephemeral_keypair(directory)
        started: list[VM] = []  # every clone whose QEMU was (or is being) started: all stopped at the end
        try:
            # two boots at a time on this kind of machine: a third clone boots once one of the first two is up
            names = [f"verify-{i}" for i in range(1, len(firmwares) + 1)]
            data = [clone_data(datasource or "nocloud", directory, name, key, standalone_settings(roles))
                    for name in names]
            layout = "" if hardware == "virt" and datasource is None else \
                f" on {hardware} hardware with {datasource or 'nocloud'} data"
            with step(f"Booting {len(firmwares)} clones ({_names(firmwares)}){layout}"), \
                    ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
                futures = [pool.submit(_boot, artifact, directory, name, key, roles, release.status_wait_ok,
                                       fw, started, d, hardware) for name, fw, d in zip(names, firmwares, data,
                                                                                        strict=True)]
                vms, errors = collect_boots(futures, started)
            if errors:
                raise errors[0]
            identities = [identity(vm) for vm in vms]
            failed = []
            for vm, other, clone in zip(vms, others(identities), data, strict=True):
                env = {
                    "GOLDEN_OTHER_IDENTITY": json.dumps({"host_keys": list(other.host_keys),
                                                         "machine_id": other.machine_id}),
                    "GOLDEN_MANIFEST": str(artifact.manifest_file),
                    "GOLDEN_FIRMWARE": vm.firmware,
                    "GOLDEN_DATASOURCE": json.dumps({**clone.expectations(), "hardware": hardware}),
                }
                with step(f"testinfra on {vm.name} ({vm.firmware}): {', '.join(s.name for s in suites)}"):
                    if run_suites(vm, suites, env, directory) != 0:
                        failed.append(f"{vm.name} ({vm.firmware})")
                vm.stop()  # done with this clone: the next one runs its suites alone
            if failed:
                raise GoldenError(f"verify failed: the testinfra suites reported failures for {artifact.qcow2.name} "
                                  f"on {', '.join(failed)}", hint="see the pytest output above")
            info(f"verified {artifact.qcow2.name} ({_names(firmwares)})")
        except GoldenError as exc:
            try:
                kept = keep_console_logs(started, console_logs_dir(artifact))
            except OSError as copy_error:  # an artifact in a read-only folder: the error itself matters more
                info(f"console logs not kept: {copy_error}")
                kept = []
            if kept:  # the hint of a boot error named a console log in the working folder, removed below
                exc.hint = "; ".join(filter(None, [
                    f"console logs of the clones kept in {kept[0].parent}",
                    None if exc.hint and exc.hint.startswith("full console log:") else exc.hint]))
            raise
        finally:
            for vm in started:
                vm.stop()
