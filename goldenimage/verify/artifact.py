"""`golden verify`: boot the final artifact (never the build VM) twice on fresh overlays with fresh
first-boot seeds, one clone under BIOS and one under UEFI (Secure Boot enforced when the artifact boots it),
or once per firmware it boots (`--all-firmwares`: BIOS, UEFI, UEFI with Secure Boot), wait for SSH and
cloud-init, and run the role's testinfra suites over SSH on every clone."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bake import store
from ..bake.manifest import StoredManifest
from ..core.errors import GoldenError, InputError
from ..core.fs import scratch, write_atomic
from ..core.log import info, step
from ..core.run import run
from ..core.ssh_keys import SSHKey, ephemeral_keypair
from ..model.releases import matrix
from .datasources import DATASOURCES, CloneData, clone_data
from .guest import GUEST_USER, boot_clone, standalone_settings, wait_for_first_boot
from .vm import FIRMWARES, HARDWARE, HARDWARE_FIRMWARE, VM

#: The testinfra suites, shipped in the package (package data, not a Python package).
SUITES_DIR = Path(__file__).resolve().parent / "suites"


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


def clone_firmwares(manifest: StoredManifest, every: bool = False, only: Sequence[str] = ()) -> tuple[str, ...]:
    """The firmware of each clone: BIOS, then the strictest UEFI boot the artifact has (Secure Boot
    enforced first); an artifact without UEFI (older manifests, downloaded bases) boots BIOS twice.
    With `every`, one clone per firmware the artifact boots, in the order bios, uefi, uefi-secureboot
    (still two clones at least: the hygiene suite compares two). With `only`, one clone per firmware named
    there (two of it when one is named), each of which the artifact must boot (InputError otherwise)."""
    firmware = manifest.firmware
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


def _names(items: tuple[str, ...]) -> str:
    return " and ".join(items) if len(items) <= 2 else f"{', '.join(items[:-1])} and {items[-1]}"


#: clones booting at once: more only share the same cores
BOOTS_AT_ONCE = 2


def clone_cpus(boots_at_once: int = BOOTS_AT_ONCE) -> int:
    """vCPUs per clone: the host's cores shared by the clones that boot at once, no more. Under TCG every vCPU
    is a host thread: two 2-vCPU clones on two cores spent their time switching (GOLDEN_VERIFY_CPUS overrides)."""
    forced = os.environ.get("GOLDEN_VERIFY_CPUS", "").strip()
    if forced.isdigit() and int(forced) > 0:
        return int(forced)
    return max(1, (os.cpu_count() or 2) // max(1, boots_at_once))


@dataclass
class CloneResult:
    """One clone's figures (seconds from its QEMU's start) and its suites' outcome, for the log and bench/verify."""

    name: str
    firmware: str
    ssh: float = 0.0  # SSH answered
    settled: float = 0.0  # cloud-init and the first-boot agent done
    suites: float = 0.0  # the testinfra suites' own time
    first_boot: str = ""
    passed: bool = False
    output: str = ""


@dataclass
class VerifyReport:
    artifact: str
    accelerator: str
    clones: list[CloneResult]
    seconds: float = 0.0


class _Clone:
    """One clone's whole run (boot, settle, identity, suites), in its own thread: each clone's suites start as
    soon as it is up; only the two tests that compare identities wait for the other clone's file."""

    def __init__(self, name: str, firmware: str, directory: Path, other: str, data: CloneData | None = None) -> None:
        self.result = CloneResult(name, firmware)
        self.data = data  # the datasource's data for this clone (None: the project's own seed)
        self.identity_file = directory / f"identity-{name}.json"
        self.other_file = directory / f"identity-{other}.json"

    def tell_others(self, data: dict[str, Any]) -> None:
        write_atomic(self.identity_file, json.dumps(data))


def _boot(artifact: store.Artifact, directory: Path, clone: _Clone, key: SSHKey, roles: list[str],
          status_ok: tuple[int, ...], started: list[VM], hardware: str = "virt", boots_at_once: int = BOOTS_AT_ONCE
          ) -> VM:
    name, firmware = clone.result.name, clone.result.firmware
    # 20 minutes for SSH: two or three TCG guests booting at once on a loaded 2-core host took 7-10 minutes here
    vm = boot_clone(artifact.qcow2, directory, name, key, roles, status_ok, firmware=firmware,
                    ssh_timeout=1200, started=started, cpus=clone_cpus(boots_at_once), data=clone.data,
                    hardware=hardware)
    try:
        clone.result.ssh = vm.ssh_up_after
        # the suites check a settled clone: the first-boot agent starts once cloud-init is done, and on a
        # loaded host its steps (banking-hardened's update-grub: minutes under TCG) were still running
        clone.result.first_boot = wait_for_first_boot(vm)
        clone.result.settled = time.monotonic() - vm.started_at
    except BaseException:
        vm.stop()
        raise
    info(f"{name}: first boot {clone.result.first_boot} after {clone.result.settled:.0f}s")
    return vm


def _run_clone(artifact: store.Artifact, directory: Path, clone: _Clone, key: SSHKey, roles: list[str],
               status_ok: tuple[int, ...], suites: list[Path], started: list[VM], boots: threading.Semaphore,
               hardware: str = "virt", boots_at_once: int = BOOTS_AT_ONCE) -> None:
    try:
        with boots:  # two boots at a time on this kind of machine: a third boots once one of them is up
            vm = _boot(artifact, directory, clone, key, roles, status_ok, started, hardware, boots_at_once)
    except BaseException as exc:
        # the other clones' hygiene tests wait for this identity: tell them at once that none will come
        clone.tell_others({"error": f"{clone.result.name} did not boot: {str(exc).splitlines()[0][:200]}"})
        raise
    try:
        mine = identity(vm)
        clone.tell_others({"host_keys": list(mine.host_keys), "machine_id": mine.machine_id})
        env = {"GOLDEN_OTHER_IDENTITY_FILE": str(clone.other_file), "GOLDEN_MANIFEST": str(artifact.manifest_file),
               "GOLDEN_FIRMWARE": vm.firmware}
        if clone.data is not None:
            env["GOLDEN_DATASOURCE"] = json.dumps({**clone.data.expectations(), "hardware": hardware})
        began = time.monotonic()
        info(f"{clone.result.name} ({vm.firmware}): testinfra {', '.join(s.name for s in suites)}")
        code, clone.result.output = run_suites(vm, suites, env, directory)
        clone.result.suites = time.monotonic() - began
        clone.result.passed = code == 0
    finally:
        vm.stop()  # done with this clone: the others run on
    summary = (clone.result.output.strip().splitlines() or ["no output"])[-1]
    info(f"{clone.result.name} ({vm.firmware}): testinfra {summary} ({clone.result.suites:.0f}s)")
    with _stdout:  # each clone's pytest output whole, on stdout as before, never interleaved with another's
        print(f"--- testinfra on {clone.result.name} ({vm.firmware}) ---\n{clone.result.output.rstrip()}", flush=True)


#: the clones' threads print their suites' output one at a time
_stdout = threading.Lock()


def collect(futures: list[Future[None]], started: list[VM]) -> list[BaseException]:
    """Every clone's run waited for; their errors. Ctrl-C or SIGTERM while waiting stops the guests already
    started (their threads then fail at once instead of waiting out their SSH and cloud-init timeouts) and
    propagates."""
    errors: list[BaseException] = []
    try:
        for future in futures:
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - every clone must be waited for, then re-raise
                errors.append(exc)
    except BaseException:
        for future in futures:
            future.cancel()
        for vm in started:
            vm.stop()
        raise
    return errors


def run_suites(vm: VM, suites: list[Path], env: dict[str, str], directory: Path) -> tuple[int, str]:
    """Run testinfra over SSH against the guest: pytest's exit status and its output."""
    config = directory / f"ssh_config-{vm.name}"
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
    proc = run(argv, check=False, env=env, timeout=1800)
    return proc.returncode, (proc.stdout or "") + (proc.stderr or "")


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


def check_hardware(manifest: StoredManifest, hardware: str) -> None:
    """A metal layout needs an image for metal (the generic kernel has AHCI and the server NICs' drivers; the
    cloud kernel finds no disk there): InputError in one line otherwise."""
    kind = manifest.kind
    if hardware == "metal" and kind != "metal":
        raise InputError(f"--hardware metal: the artifact is a {kind} image, whose kernel has no AHCI or server "
                         "NIC drivers", hint="bake one for metal: golden build PROFILE --kind metal")


def _record_verify(artifact: store.Artifact, passed: bool, detail: str) -> None:
    """Keep the outcome in the artifact's channel record (promotion to candidate needs a pass)."""
    from ..bake import channels, shared_store

    try:
        channels.record_verify(artifact, passed, detail)
        shared = shared_store.configured()
        if shared:
            shared.push_record(artifact)
    except (OSError, GoldenError) as exc:  # a read-only folder, an unreachable shared store: the verify stands
        info(f"verify outcome not recorded in the channel record: {exc}")


def verify(target: str, debian: int | str | None = None, all_firmwares: bool = False,
           firmwares_only: Sequence[str] = (), datasource: str | None = None, hardware: str = "virt",
           parallel: int = BOOTS_AT_ONCE) -> VerifyReport:
    """Boot the artifact twice (BIOS and UEFI), or once per firmware it boots with `all_firmwares`, or once per
    firmware of `firmwares_only` (twice when one is named), compare identities, run the suites on every clone,
    each clone's as soon as it is up; GoldenError on failure, else each clone's figures. `datasource` hands the
    clones their data as that cloud does (and adds the datasource suite); `hardware` boots them on a target's
    layout (twice, with the firmware it has); `parallel` clones boot at a time."""
    if hardware not in HARDWARE:
        raise InputError(f"--hardware {hardware}: no such layout", hint=f"one of: {', '.join(HARDWARE)}")
    if datasource is not None and datasource not in DATASOURCES:
        raise InputError(f"--datasource {datasource}: no such datasource", hint=f"one of: {', '.join(DATASOURCES)}")
    # metal hardware takes the newest image for metal (the generic kernel), the others the newest cloud image
    artifact = store.resolve(target, debian, kind="metal" if hardware == "metal" else "cloud")
    manifest = artifact.manifest()
    check_hardware(manifest, hardware)
    roles = list(manifest.roles)
    release = matrix().get(manifest.debian)
    suites = suites_for(roles, datasource=datasource is not None or hardware != "virt")
    if hardware in HARDWARE_FIRMWARE:
        firmwares = clone_firmwares(manifest, only=(HARDWARE_FIRMWARE[hardware],))
    else:
        firmwares = clone_firmwares(manifest, every=all_firmwares, only=firmwares_only)
    began = time.monotonic()
    with step(f"Verifying {artifact.qcow2.name}"), scratch("golden-verify") as tmp:
        directory = Path(tmp)
        key = ephemeral_keypair(directory)
        started: list[VM] = []  # every clone whose QEMU was (or is being) started: all stopped at the end
        names = [f"verify-{i}" for i in range(1, len(firmwares) + 1)]
        # each clone's hygiene suite compares it with the next one, the last with the first
        clones = [_Clone(name, fw, directory, other,
                         clone_data(datasource or "nocloud", directory, name, key, standalone_settings(roles)))
                  for name, fw, other in zip(names, firmwares, names[1:] + names[:1], strict=True)]
        boots = threading.Semaphore(max(1, parallel))
        try:
            layout = "" if hardware == "virt" and datasource is None else \
                f" on {hardware} hardware with {datasource or 'nocloud'} data"
            with step(f"Booting {len(firmwares)} clones ({_names(firmwares)}){layout}, each tested once it is up"), \
                    ThreadPoolExecutor(max_workers=len(clones)) as pool:
                futures = [pool.submit(_run_clone, artifact, directory, clone, key, roles, release.status_wait_ok,
                                       suites, started, boots, hardware, parallel) for clone in clones]
                errors = collect(futures, started)
            if errors:
                raise errors[0]
            failed = [f"{c.result.name} ({c.result.firmware})" for c in clones if not c.result.passed]
            if failed:
                _record_verify(artifact, False, f"failed on {', '.join(failed)}")
                raise GoldenError(f"verify failed: the testinfra suites reported failures for {artifact.qcow2.name} "
                                  f"on {', '.join(failed)}", hint="see the pytest output above")
            info(f"verified {artifact.qcow2.name} ({_names(firmwares)}) in {time.monotonic() - began:.0f}s")
            _record_verify(artifact, True, f"{_names(firmwares)}; hardware {hardware}; "
                                           f"datasource {datasource or 'nocloud'}")
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
    accel = sorted({vm.accel for vm in started})
    return VerifyReport(artifact.qcow2.name, "/".join(accel), [c.result for c in clones],
                        time.monotonic() - began)
