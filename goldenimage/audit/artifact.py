"""Audit one artifact: boot a throw-away clone as `golden verify` does, give it the tools disk, run OpenSCAP
(ANSSI DAT-NT28 high) and Lynis in it at once, and bring the results back to the host."""

from __future__ import annotations

import json
import shlex
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bake import store
from ..core.errors import GoldenError
from ..core.fs import scratch
from ..core.log import info, step
from ..core.run import run
from ..core.ssh_keys import ephemeral_keypair
from ..model.releases import matrix
from ..verify.guest import GUEST_USER, boot_clone, wait_for_first_boot
from ..verify.vm import SSH_OPTIONS, VM
from . import lynis as lynis_mod
from . import oscap as oscap_mod
from .content import PROFILE_TITLE, Content, content_for
from .guest_tools import ToolsDisk, mount_command, tools_disk

GUEST_OUT = "/run/golden-audit/out"
OSCAP_RESULTS = "oscap-results.xml"
LYNIS_REPORT = "lynis-report.dat"
LYNIS_LOG = "lynis.log"
#: Generous: under TCG with other guests busy, Lynis alone takes a quarter of an hour.
OSCAP_TIMEOUT = 1800.0
LYNIS_TIMEOUT = 3600.0


@dataclass(frozen=True)
class AuditReport:
    """The figures of one audit: every ANSSI rule's result, the Lynis report, and how long it took."""

    artifact: str
    profile: str
    debian: int
    content: Content
    scan: oscap_mod.ScanResult | None
    lynis: lynis_mod.LynisReport | None
    firstboot: str
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def anssi_passed(self) -> int | None:
        return self.scan.passed if self.scan else None

    @property
    def anssi_total(self) -> int | None:
        return self.scan.total if self.scan else None

    @property
    def lynis_index(self) -> int | None:
        return self.lynis.hardening_index if self.lynis else None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "artifact": self.artifact,
            "profile": self.profile,
            "debian": self.debian,
            "firstboot": self.firstboot,
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
            "content": {
                "datastream": self.content.source.name,
                "content_release": self.content.content_release,
                "profile": self.content.profile_id,
                "changes": [{"item": c.item, "before": c.before, "after": c.after} for c in self.content.changes],
            },
            "anssi": None,
            "lynis": None,
        }
        if self.scan:
            data["anssi"] = {
                "title": PROFILE_TITLE,
                "scanner": self.scan.scanner,
                "passed": self.scan.passed,
                "total": self.scan.total,
                "counts": self.scan.counts(),
                "rules": [{"id": r.name, "title": r.title, "severity": r.severity, "result": str(r.result)}
                          for r in self.scan.rules],
            }
        if self.lynis:
            data["lynis"] = {
                "version": self.lynis.version,
                "hardening_index": self.lynis.hardening_index,
                "tests_done": self.lynis.tests_done,
                "warnings": [{"test": f.test, "text": f.text, "details": f.details} for f in self.lynis.warnings],
                "suggestions": [{"test": f.test, "text": f.text, "details": f.details}
                                for f in self.lynis.suggestions],
            }
        return data

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def _as_artifact(target: store.Artifact | Path | str, debian: int | str | None) -> store.Artifact:
    if isinstance(target, store.Artifact):
        return target
    if isinstance(target, Path):
        target = str(target) if "/" in str(target) else f"./{target}"
    return store.resolve(target, debian)


def _copy_back(vm: VM, names: list[str], directory: Path) -> None:
    """Copy files of the guest's output directory to `directory` on the host (scp over the SSH forward)."""
    argv: list[object] = ["scp", *SSH_OPTIONS, "-P", vm.ssh_port]
    if vm.key:
        argv += ["-i", vm.key]
    argv += [f"{vm.user}@127.0.0.1:{GUEST_OUT}/{name}" for name in names]
    run([*argv, f"{directory}/"], timeout=600)


def _run_oscap(vm: VM, disk: ToolsDisk, content: Content) -> None:
    # validated on the host when the content was made: the guest skips the schema check (slow under TCG)
    argv = oscap_mod.eval_argv(disk.datastream, content.profile_id, f"{GUEST_OUT}/{OSCAP_RESULTS}",
                               oscap=disk.oscap_argv, validate=False)
    proc = vm.ssh(["sudo", "-n", *argv], check=False, timeout=OSCAP_TIMEOUT)
    if proc.returncode not in oscap_mod.EVAL_OK:
        tail = (proc.stderr or proc.stdout).strip()[-800:]
        raise GoldenError(f"oscap failed in the guest (exit {proc.returncode}): {tail}")


def _run_lynis(vm: VM, disk: ToolsDisk) -> None:
    argv = lynis_mod.audit_argv(f"{GUEST_OUT}/{LYNIS_REPORT}", f"{GUEST_OUT}/{LYNIS_LOG}")
    proc = vm.ssh(["sudo", "-n", "sh", "-c", f"cd {shlex.quote(disk.lynis_dir)} && {shlex.join(argv)}"],
                  check=False, timeout=LYNIS_TIMEOUT)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-800:]
        raise GoldenError(f"lynis failed in the guest (exit {proc.returncode}): {tail}")


def audit_artifact(
    target: store.Artifact | Path | str,
    *,
    debian: int | str | None = None,
    out: Path | None = None,
    oscap: bool = True,
    lynis: bool = True,
) -> AuditReport:
    """Boot a clone of the artifact (a store Artifact, a qcow2 path, or a profile's newest for `debian`),
    run OpenSCAP and Lynis in it, and return the figures. The artifact itself is never written."""
    started = time.monotonic()
    artifact = _as_artifact(target, debian)
    manifest = artifact.manifest()
    roles = list(manifest.roles)
    profile_name = manifest.profile or artifact.name.split("-debian")[0]
    release = matrix().get(manifest.debian)
    seconds: dict[str, float] = {}
    scan: oscap_mod.ScanResult | None = None
    lynis_report: lynis_mod.LynisReport | None = None
    with step(f"Auditing {artifact.qcow2.name}"), scratch("golden-audit") as tmp:
        directory = Path(tmp)
        with step("Preparing the content and the tools disk"):
            content = content_for(release)
            disk = tools_disk(content)
            for change in content.changes:
                info(f"content: {change.line()}")
        key = ephemeral_keypair(directory)
        name = f"audit-{uuid.uuid4().hex[:6]}"
        with ExitStack() as running:
            t = time.monotonic()
            with step("Booting a throw-away clone"):
                vm = boot_clone(artifact.qcow2, directory, name, key, roles, release.status_wait_ok,
                                workdir=directory / "vm", ssh_timeout=900,
                                extra_args=["-drive", f"file={disk.iso},if=virtio,format=raw,readonly=on"])
                running.callback(vm.stop)
                firstboot = wait_for_first_boot(vm)
                info(f"first boot: {firstboot}")
            seconds["boot"] = time.monotonic() - t
            proc = vm.ssh(["sudo", "-n", "sh", "-c", mount_command(GUEST_USER)], check=False)
            if proc.returncode != 0:
                raise GoldenError(f"{name}: cannot mount the tools disk or use sudo: {proc.stderr.strip()[-400:]}",
                                  hint=f"the audit logs in as {GUEST_USER} with a key and needs passwordless sudo")
            jobs = {}
            with step("OpenSCAP and Lynis in the guest"), ThreadPoolExecutor(max_workers=2) as pool:
                if oscap:
                    jobs["oscap"] = pool.submit(_timed, _run_oscap, vm, disk, content)
                if lynis:
                    jobs["lynis"] = pool.submit(_timed, _run_lynis, vm, disk)
                for job, future in jobs.items():
                    seconds[job] = future.result()
                    info(f"{job} done in {seconds[job]:.0f}s")
            vm.ssh(["sudo", "-n", "chown", "-R", GUEST_USER, GUEST_OUT])
            names = ([OSCAP_RESULTS] if oscap else []) + ([LYNIS_REPORT, LYNIS_LOG] if lynis else [])
            if names:
                _copy_back(vm, names, directory)
        if oscap:
            scan = oscap_mod.parse_results(directory / OSCAP_RESULTS, content.profile_id)
        if lynis:
            lynis_report = lynis_mod.parse_report((directory / LYNIS_REPORT).read_text(errors="replace"))
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            for n in names:
                shutil.copy2(directory / n, out / n)
    seconds["total"] = time.monotonic() - started
    return AuditReport(artifact.qcow2.name, profile_name, release.number, content, scan, lynis_report, firstboot,
                       seconds)


def check_targets(report: AuditReport, min_rules: int | None, min_lynis: int | None) -> None:
    """GoldenError (exit 1) naming every target the figures miss."""
    missed = []
    if min_rules is not None and (report.anssi_passed is None or report.anssi_passed < min_rules):
        missed.append(f"ANSSI {report.anssi_passed}/{report.anssi_total} pass, target {min_rules}")
    if min_lynis is not None and (report.lynis_index is None or report.lynis_index < min_lynis):
        missed.append(f"Lynis index {report.lynis_index}, target {min_lynis}")
    if missed:
        raise GoldenError(f"{report.artifact} is below target: {'; '.join(missed)}",
                          hint="the failing rules and the Lynis warnings are listed above")


def _timed(fn: Any, *args: Any) -> float:
    start = time.monotonic()
    fn(*args)
    return time.monotonic() - start
