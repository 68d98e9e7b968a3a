"""Boot an artifact under QEMU on a throw-away copy-on-write overlay, reach it over SSH on 127.0.0.1."""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from ..bake import kernel_watch
from ..bake.accel import detect_accelerator, fall_back_to_tcg
from ..bake.kernel_watch import KernelWatch, process_cpu_seconds
from ..core.errors import CommandError, GoldenError
from ..core.log import info, log
from ..core.run import kill, require, run, spawn, stop
from ..core.ssh_keys import SSHKey

SSH_OPTIONS = (
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR",
    "-o", "BatchMode=yes",
    "-o", "IdentitiesOnly=yes",
    # A starved TCG guest can take more than 10 s to send its banner; a dead one is found by the keepalives.
    "-o", "ConnectTimeout=30",
    "-o", "ServerAliveInterval=10",
    "-o", "ServerAliveCountMax=6",
)  # fmt: skip
#: one SSH connection per guest, shared by every command (a handshake costs seconds in a starved TCG guest)
CONTROL_PERSIST = 60
SSH_POLL_INTERVAL = 3.0
PORT_ATTEMPTS = 3
SERIAL_TAIL_LINES = 40
OVMF_DIR = Path("/usr/share/OVMF")
#: The firmware a guest boots with: OVMF's code (read-only) and the template of its variable store (copied
#: per guest, since the firmware writes it). Secure Boot enforced: the secboot build (SMM, q35) with
#: Microsoft's keys enrolled, which sign Debian's shim.
OVMF = {
    "uefi": ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
    "uefi-secureboot": ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd"),
}
FIRMWARES = ("bios", *OVMF)
#: The virtual hardware a guest boots on: `virt`, virtio disk and NIC on QEMU's default machine; the layouts
#: that `golden publish --to proxmox` gives its templates (render/proxmox_hardware.py): the disk and the
#: cloud-init drive on virtio-scsi, i440fx with SeaBIOS or q35 with OVMF; `metal`, a dedicated server as the
#: generic kernel meets it: q35, the disk and the config drive on its AHCI controller, an Intel e1000e NIC.
HARDWARE = ("virt", "proxmox-bios", "proxmox-uefi", "metal")
#: The firmware each layout boots with, where it decides one (Proxmox's UEFI template: efitype=4m with
#: pre-enrolled keys, which qemu-server boots with OVMF_CODE_4M.secboot.fd and OVMF_VARS_4M.ms.fd).
HARDWARE_FIRMWARE = {"proxmox-bios": "bios", "proxmox-uefi": "uefi-secureboot", "metal": "uefi"}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (QEMU binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VM:
    """A QEMU guest booted from `image` through an overlay, so the artifact itself is never written.

    Use as a context manager: the guest is killed and the overlay removed on exit, even on errors.
    The network is QEMU user mode with only SSH forwarded from 127.0.0.1; `restrict` (default) also
    cuts the guest off from everything outside QEMU, so a test cannot reach the internet by accident.
    """

    def __init__(
        self,
        image: Path,
        *,
        seed: Path | None = None,
        key: SSHKey | Path | None = None,
        user: str = "debian",
        status_wait_ok: Sequence[int] = (0,),
        disk_size: str | None = None,
        memory_mib: int = 1024,
        cpus: int = 2,
        workdir: Path | None = None,
        name: str = "golden-vm",
        restrict: bool = True,
        extra_args: Sequence[str] = (),
        mac: str | None = None,
        firmware: str = "bios",
        netdev_options: Sequence[str] = (),
        hardware: str = "virt",
    ) -> None:
        if firmware not in FIRMWARES:
            raise GoldenError(f"unknown firmware {firmware!r} for a VM", hint=f"one of: {', '.join(FIRMWARES)}")
        if hardware not in HARDWARE:
            raise GoldenError(f"unknown hardware {hardware!r} for a VM", hint=f"one of: {', '.join(HARDWARE)}")
        self.hardware = hardware
        self.firmware = firmware
        self.image = Path(image).resolve()
        self.seed = Path(seed).resolve() if seed else None
        self.key = key.private if isinstance(key, SSHKey) else key
        self.user = user
        self.status_wait_ok = tuple(status_wait_ok)
        self.disk_size = disk_size
        self.memory_mib = memory_mib
        self.cpus = cpus
        self.name = name
        self.restrict = restrict
        self.extra_args = tuple(extra_args)
        self.mac = mac  # of the user-mode NIC: network-config may match it
        #: more options of the user-mode netdev (a guestfwd to the mirror relay); commas are QEMU's separators
        if any("," in option for option in netdev_options):
            raise GoldenError("a user-mode netdev option cannot contain a comma")
        self.netdev_options = tuple(netdev_options)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self.overlay = self.workdir / f"{name}-overlay.qcow2"
        self.serial_log = self.workdir / f"{name}-serial.log"
        self.qemu_log = self.workdir / f"{name}-qemu.log"
        self.efi_vars = self.workdir / f"{name}-efivars.fd"
        # Short (a socket path has ~100 bytes at most), private, removed by stop(); %p: a guest booted again
        # forwards another port, so its old connection is never reused.
        # (made at the first ssh: a VM that never connects leaves nothing behind)
        self._control: Path | None = None
        self.ssh_port = 0
        self.accel = ""
        self.started_at = 0.0
        self.ssh_up_after = 0.0  # seconds from QEMU's (last) start to SSH answering
        self._proc: subprocess.Popen[str] | None = None
        self._stopped = False
        self._watch = KernelWatch(self.serial_log, self.cpu_seconds)  # a KVM guest that hangs before its kernel

    # --- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> VM:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> VM:
        """Create the overlay and start QEMU in the background."""
        require("qemu-system-x86_64", "qemu-img", purpose="to boot a VM")
        self._stopped = False
        if not self.image.is_file():
            raise GoldenError(f"no image to boot at {self.image}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", self.image, "-F", "qcow2", self.overlay]
        run(argv + ([self.disk_size] if self.disk_size else []))
        if self.firmware in OVMF:
            template = OVMF_DIR / OVMF[self.firmware][1]
            if not template.is_file():
                raise GoldenError(f"no {template}: cannot boot a {self.firmware} guest", hint="apt-get install ovmf")
            shutil.copyfile(template, self.efi_vars)
        self.accel = detect_accelerator()
        return self._launch()

    def _launch(self) -> VM:
        """Start QEMU on the existing overlay, on a free SSH port."""
        for _ in range(PORT_ATTEMPTS):
            # the free port may be taken between our check and QEMU's bind: then pick another one
            self.ssh_port = free_port()
            with self.qemu_log.open("w") as out:
                self._proc = spawn(self.qemu_argv(), stdout=out.fileno(), stderr=subprocess.STDOUT)
            self.started_at = time.monotonic()
            try:
                self._proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                break  # still running: the port was ours
            if "host forwarding" not in self.qemu_log.read_text(errors="replace"):
                break  # another failure: wait_for_ssh reports it with QEMU's output
        self._watch.restart()
        info(f"{self.name}: QEMU ({self.accel}) started, SSH on 127.0.0.1:{self.ssh_port}")
        return self

    def qemu_argv(self) -> list[str]:
        """The QEMU command line for this guest."""
        netdev = f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22"
        if self.restrict:
            netdev += ",restrict=on"
        netdev += "".join("," + option for option in self.netdev_options)
        argv = [
            "qemu-system-x86_64",
            "-name", self.name,
            "-accel", self.accel,
            "-m", str(self.memory_mib),
            "-smp", str(self.cpus),
            "-display", "none", "-monitor", "none",
            "-serial", f"file:{self.serial_log}",
            "-netdev", netdev,
        ]  # fmt: skip
        if self.accel == "kvm":
            argv += ["-cpu", "host"]
        argv += self.firmware_argv()
        argv += self.hardware_argv()
        return argv + list(self.extra_args)

    def hardware_argv(self) -> list[str]:
        """The guest's disk, NIC and seed drive on the buses of its hardware layout."""
        nic = {"metal": "e1000e"}.get(self.hardware, "virtio-net-pci") + ",netdev=n0"
        nic += f",mac={self.mac}" if self.mac else ""
        disk = f"file={self.overlay},format=qcow2"
        seed = f"file={self.seed},format=raw,readonly=on" if self.seed else ""
        if self.hardware == "virt":
            # the seed a read-only virtio disk: the cloud kernel always has virtio_blk
            return ["-drive", f"file={self.overlay},if=virtio,format=qcow2", "-device", nic] + \
                (["-drive", f"file={self.seed},if=virtio,format=raw,readonly=on"] if seed else [])
        if self.hardware == "metal":
            # q35's own AHCI controller (ich9-ahci, ports ide.0 to ide.5), as a server's SATA disks and a
            # virtual media CD: the generic kernel's ahci, sd_mod and sr_mod
            argv = ["-drive", f"{disk},if=none,id=disk0", "-device", "ide-hd,bus=ide.0,drive=disk0,bootindex=1",
                    "-device", nic]
            return argv + (["-drive", f"{seed},if=none,id=cd0,media=cdrom",
                            "-device", "ide-cd,bus=ide.1,drive=cd0"] if seed else [])
        # Proxmox, as qemu-server starts a template's clone with scsihw virtio-scsi-single: one virtio-scsi-pci
        # controller per drive, the disk scsi0 a scsi-hd, the cloud-init drive scsi1 a scsi-cd
        argv = ["-device", "virtio-scsi-pci,id=virtioscsi0",
                "-drive", f"{disk},if=none,id=drive-scsi0,discard=on",
                "-device", "scsi-hd,bus=virtioscsi0.0,channel=0,scsi-id=0,lun=0,drive=drive-scsi0,id=scsi0,"
                           "bootindex=100",
                "-device", nic]  # fmt: skip
        if seed:
            argv += ["-device", "virtio-scsi-pci,id=virtioscsi1",
                     "-drive", f"{seed},if=none,id=drive-scsi1,media=cdrom",
                     "-device", "scsi-cd,bus=virtioscsi1.0,channel=0,scsi-id=0,lun=1,drive=drive-scsi1,id=scsi1"]
        return argv

    def firmware_argv(self) -> list[str]:
        """QEMU's machine and firmware for this guest: SeaBIOS on the default machine, or OVMF from pflash
        (Secure Boot: q35 with SMM, and the flash writable only from SMM, so the OS cannot turn it off)."""
        q35 = self.hardware in ("proxmox-uefi", "metal")
        if self.firmware not in OVMF:
            return ["-machine", "q35"] if q35 else []
        code = OVMF_DIR / OVMF[self.firmware][0]
        argv = []
        if self.firmware == "uefi-secureboot":
            argv += ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"]
        elif q35:
            argv += ["-machine", "q35"]
        return argv + [
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
            "-drive", f"if=pflash,format=raw,unit=1,file={self.efi_vars}",
        ]  # fmt: skip

    def stop(self) -> None:
        """Kill QEMU (its whole process group) and remove the overlay; safe to call twice, and from another
        thread while one waits for the guest (the wait then fails at its next poll)."""
        self._stopped = True
        if self._proc is not None:
            stop(self._proc, grace=5.0)
            self._proc = None
        self.overlay.unlink(missing_ok=True)
        self.efi_vars.unlink(missing_ok=True)
        self._close_connections()
        if self._control is not None:
            shutil.rmtree(self._control, ignore_errors=True)
            self._control = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def power_off(self) -> None:
        """Pull the plug: QEMU killed at once (SIGKILL, no shutdown in the guest); the disk stays for power_on()."""
        if self._proc is not None:
            kill(self._proc)
        self._proc = None
        self._close_connections()

    def _control_dir(self) -> Path:
        if self._control is None:
            self._control = Path(tempfile.mkdtemp(prefix="gi-ssh-"))
        return self._control

    def _close_connections(self) -> None:
        """End the shared SSH connections (their master processes outlive the commands by CONTROL_PERSIST)."""
        if self._control is None:
            return
        for control in self._control.glob("cm-*"):
            run(["ssh", "-o", f"ControlPath={control}", "-O", "exit", "guest"], check=False, timeout=10)
            control.unlink(missing_ok=True)

    def power_on(self) -> VM:
        """Boot the guest again from the disk it left at power_off() (its data, its first-boot state)."""
        if self.running:
            raise GoldenError(f"{self.name}: already running")
        if not self.overlay.is_file():
            raise GoldenError(f"{self.name}: no disk to boot again at {self.overlay}")
        self.accel = detect_accelerator()  # TCG if another guest hung under KVM meanwhile
        return self._launch()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # --- waiting --------------------------------------------------------------------------------

    def wait_for_ssh(self, timeout: float = 300.0) -> float:
        """Wait until SSH accepts the key; seconds since QEMU (last) started. A guest that hangs under KVM
        before its kernel prints is started again under TCG, with `timeout` anew. GoldenError with the
        console tail."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            self._check_alive()
            stalled = self.kernel_stalled()
            if stalled:
                self.restart_under_tcg(stalled)
                deadline = time.monotonic() + timeout
            probe = self.ssh("true", check=False, timeout=20)
            if probe.returncode == 0:
                elapsed = time.monotonic() - self.started_at
                info(f"{self.name}: SSH up after {elapsed:.0f}s")
                self.ssh_up_after = elapsed
                return elapsed
            said = (probe.stderr or "").strip().splitlines()
            last = said[-1] if said else ""
            if time.monotonic() + SSH_POLL_INTERVAL > deadline:
                break
            time.sleep(SSH_POLL_INTERVAL)
        # What tells a starved guest (little CPU time) from a stuck one, and a guest without sshd (connection
        # closed or reset) from one that does not answer at all (timeout).
        raise self.boot_error(f"no SSH on 127.0.0.1:{self.ssh_port} after {timeout:.0f}s (last attempt: "
                              f"{last or 'no error text'}; {self.cpu_seconds():.1f} s of CPU for QEMU so far)")

    def kernel_stalled(self) -> str | None:
        """Why this KVM guest counts as hung before its kernel (kernel_watch), or None."""
        if self.accel != "kvm" or self._proc is None:
            return None
        return self._watch.stalled(kernel_watch.STALL_SECONDS, kernel_watch.STALL_CPU_SECONDS)

    def restart_under_tcg(self, why: str) -> None:
        """Start the guest again, on the same disk, under TCG; this process's later guests use TCG too."""
        everywhere = fall_back_to_tcg(why)
        info(f"{self.name}: hung under KVM ({why}): started again under TCG"
             + ("; TCG for the rest of this run and this host boot" if everywhere else ""))
        if self._proc is not None:
            kill(self._proc)
            self._proc = None
        self.accel = "tcg"
        self._launch()

    def cpu_seconds(self) -> float:
        """CPU time (user + system) QEMU has used so far; 0 when it is not running."""
        return process_cpu_seconds(self._proc.pid) if self._proc is not None else 0.0

    def wait_cloud_init(self, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
        """Wait for cloud-init to finish; its exit code must be one the release accepts."""
        proc = self.ssh("cloud-init status --wait --long", check=False, timeout=timeout)
        if proc.returncode not in self.status_wait_ok:
            raise self.boot_error(f"cloud-init finished with status {proc.returncode}: {proc.stdout.strip()[-500:]}")
        return proc

    # --- access ---------------------------------------------------------------------------------

    def ssh(
        self,
        cmd: str | Sequence[str],
        *,
        check: bool = True,
        timeout: float = 120.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `cmd` in the guest over SSH (a string goes to the remote shell as is)."""
        remote = cmd if isinstance(cmd, str) else shlex.join(cmd)
        argv: list[str] = ["ssh", *SSH_OPTIONS, "-p", str(self.ssh_port),
                           "-o", "ControlMaster=auto", "-o", f"ControlPath={self._control_dir()}/cm-%p",
                           "-o", f"ControlPersist={CONTROL_PERSIST}"]
        if self.key:
            argv += ["-i", str(self.key)]
        argv += [f"{self.user}@127.0.0.1", remote]
        try:
            return run(argv, check=check, timeout=timeout, input=input)
        except CommandError as exc:
            if check:
                raise
            # only timeouts reach here with check=False: report them like a failed command
            log.debug("%s: ssh: %s", self.name, exc)
            return subprocess.CompletedProcess(argv, 255, "", str(exc))

    def serial_tail(self, lines: int = SERIAL_TAIL_LINES) -> str:
        """The last lines of the serial console (kernel, systemd and cloud-init output)."""
        try:
            text = self.serial_log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def boot_error(self, message: str) -> GoldenError:
        """A GoldenError for `message` carrying the serial console tail."""
        tail = self.serial_tail() or "(no output: the guest never reached the kernel)"
        return GoldenError(
            f"{self.name}: {message}\n--- serial console (last lines) ---\n{tail}",
            hint=None if self._own_workdir else f"full console log: {self.serial_log}",
        )

    def _check_alive(self) -> None:
        if self._stopped:
            raise self.boot_error("stopped while waiting for it")
        if self._proc is not None and self._proc.poll() is not None:
            try:
                qemu_out = self.qemu_log.read_text(errors="replace").strip()[-1000:]
            except OSError:
                qemu_out = ""
            raise self.boot_error(f"QEMU exited with status {self._proc.returncode}: {qemu_out}")
