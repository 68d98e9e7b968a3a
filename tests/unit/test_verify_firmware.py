"""golden verify boots its two clones with different firmware: BIOS, then the strictest UEFI the artifact has."""

from __future__ import annotations

import json
from concurrent.futures import CancelledError
from pathlib import Path

import pytest

from goldenimage.bake.base_image import BaseImage
from goldenimage.bake.disk import FIRMWARE
from goldenimage.bake.manifest import StoredManifest
from goldenimage.core.errors import GoldenError, InputError
from goldenimage.verify import artifact as verify_mod
from goldenimage.verify.artifact import clone_firmwares, collect
from goldenimage.verify.vm import VM


@pytest.mark.parametrize(("firmware", "expected"), [
    (["bios", "uefi", "uefi-secureboot"], ("bios", "uefi-secureboot")),
    (["bios", "uefi"], ("bios", "uefi")),
    (["bios"], ("bios", "bios")),
    (None, ("bios", "bios")),  # manifests written before the firmware was recorded
    (["uefi-secureboot"], ("uefi-secureboot", "uefi-secureboot")),
])
def test_clone_firmwares(firmware: list[str] | None, expected: tuple[str, str]) -> None:
    manifest = StoredManifest.from_json({} if firmware is None else {"firmware": firmware})
    assert clone_firmwares(manifest) == expected


@pytest.mark.parametrize(("firmware", "expected"), [
    (["bios", "uefi", "uefi-secureboot"], ("bios", "uefi", "uefi-secureboot")),
    (["uefi-secureboot", "bios"], ("bios", "uefi-secureboot")),
    (["bios"], ("bios", "bios")),
    (None, ("bios", "bios")),
])
def test_all_firmwares_boots_one_clone_per_firmware_and_two_at_least(firmware: list[str] | None,
                                                                     expected: tuple[str, ...]) -> None:
    manifest = StoredManifest.from_json({} if firmware is None else {"firmware": firmware})
    assert clone_firmwares(manifest, every=True) == expected


@pytest.mark.parametrize(("only", "expected"), [
    (["uefi"], ("uefi", "uefi")),  # one firmware named: two clones of it, the hygiene suite compares two
    (["uefi-secureboot", "bios"], ("bios", "uefi-secureboot")),
    (["uefi", "uefi", "bios"], ("bios", "uefi")),
])
def test_firmware_option_boots_the_named_firmwares_only(only: list[str], expected: tuple[str, ...]) -> None:
    manifest = StoredManifest.from_json({"firmware": ["bios", "uefi", "uefi-secureboot"]})
    assert clone_firmwares(manifest, only=only) == expected


def test_firmware_option_refuses_a_firmware_the_artifact_does_not_boot() -> None:
    with pytest.raises(InputError, match="--firmware uefi: the artifact does not boot it"):
        clone_firmwares(StoredManifest.from_json({"firmware": ["bios"]}), only=["uefi"])
    with pytest.raises(InputError, match="uefi-secureboot"):
        clone_firmwares(StoredManifest.from_json({}), only=["bios", "uefi-secureboot"])  # older manifests: BIOS only


def test_cli_firmware_option_reaches_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    import goldenimage.verify.artifact as verify_mod
    from goldenimage.cli import build_parser

    seen: dict[str, object] = {}
    monkeypatch.setattr(verify_mod, "verify", lambda target, debian, **kw: seen.update(target=target, **kw))
    args = build_parser().parse_args(["verify", "banking-hardened", "--firmware", "uefi"])
    assert args.func(args) == 0
    assert seen == {"target": "banking-hardened", "all_firmwares": False, "firmwares_only": ["uefi"],
                    "datasource": None, "hardware": "virt", "parallel": 2}
    with pytest.raises(SystemExit):  # one or the other
        build_parser().parse_args(["verify", "web", "--firmware", "uefi", "--all-firmwares"])


def test_a_clone_that_fails_to_boot_tells_the_others_at_once(tmp_path: Path, monkeypatch) -> None:
    """The other clones' hygiene suites wait for this clone's identity file: a failed boot writes an error
    there, so they fail at once instead of waiting out their bound."""
    import threading

    clone = verify_mod._Clone("verify-1", "bios", tmp_path, "verify-2")
    assert clone.other_file == tmp_path / "identity-verify-2.json"

    def no_boot(*args: object, **kwargs: object) -> None:
        raise GoldenError("verify-1: no SSH on 127.0.0.1:1 after 1200s\n--- serial console ---\nGRUB")

    monkeypatch.setattr(verify_mod, "_boot", no_boot)
    with pytest.raises(GoldenError):
        verify_mod._run_clone(None, tmp_path, clone, None, ["web"], (0,), [], [], threading.Semaphore(2))  # type: ignore[arg-type]
    told = json.loads(clone.identity_file.read_text())
    assert told == {"error": "verify-1 did not boot: verify-1: no SSH on 127.0.0.1:1 after 1200s"}


def test_the_suites_wait_for_the_other_identity_and_fail_on_its_error(tmp_path: Path, monkeypatch) -> None:
    import importlib.util
    import threading

    spec = importlib.util.spec_from_file_location("suites_conftest", verify_mod.SUITES_DIR / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(conftest)  # type: ignore[union-attr]
    fixture = conftest.other_identity.__wrapped__
    path = tmp_path / "identity-verify-2.json"
    monkeypatch.delenv("GOLDEN_OTHER_IDENTITY", raising=False)
    monkeypatch.setenv("GOLDEN_OTHER_IDENTITY_FILE", str(path))
    later = threading.Timer(1.5, lambda: path.write_text('{"host_keys": ["k"], "machine_id": "m"}'))
    later.start()
    assert fixture() == {"host_keys": ["k"], "machine_id": "m"}  # waited for the file
    path.write_text('{"error": "verify-2 did not boot"}')
    with pytest.raises(pytest.fail.Exception, match="verify-2 did not boot"):
        fixture()


def test_built_bases_boot_everything_and_downloaded_ones_bios_only(tmp_path: object) -> None:
    built = BaseImage(path=tmp_path, sha256="0" * 64, key="k", release=12, source="mmdebstrap")  # type: ignore[arg-type]
    fetched = BaseImage(path=tmp_path, sha256="0" * 64, key="k", release=12,  # type: ignore[arg-type]
                        source="https://cloud.debian.org/images/x.qcow2")
    assert built.firmware == FIRMWARE == ("bios", "uefi", "uefi-secureboot")
    assert fetched.firmware == ("bios",)


class _FakeVM:
    def __init__(self) -> None:
        self.stopped = 0

    def stop(self) -> None:
        self.stopped += 1


class _FakeFuture:
    def __init__(self, outcome: object) -> None:
        self.outcome, self.cancelled = outcome, False

    def result(self) -> object:
        if self.cancelled:
            raise CancelledError()
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def cancel(self) -> bool:
        self.cancelled = True
        return True


def test_a_failed_clone_is_collected_and_the_others_waited_for() -> None:
    vm = _FakeVM()
    running = _FakeFuture(None)
    running.cancel = lambda: False  # type: ignore[method-assign]  # already running: cannot be cancelled
    errors = collect([_FakeFuture(GoldenError("no SSH")), running], [vm])  # type: ignore[list-item]
    assert vm.stopped == 0  # stopped later, with every started clone
    assert [str(e) for e in errors] == ["no SSH"] and not running.cancelled


def test_an_interrupt_while_clones_boot_stops_every_started_guest_at_once() -> None:
    # Ctrl-C or SIGTERM (which golden turns into KeyboardInterrupt) in the main thread: the boots must not
    # be waited out (up to 25 minutes of SSH and cloud-init timeouts) with their guests running
    booting, queued = _FakeVM(), _FakeFuture(None)
    futures = [_FakeFuture(KeyboardInterrupt()), _FakeFuture(booting), queued]
    with pytest.raises(KeyboardInterrupt):
        collect(futures, [booting])  # type: ignore[arg-type]
    assert booting.stopped == 1 and queued.cancelled


def test_a_guest_stopped_from_another_thread_ends_its_wait_at_once(tmp_path: Path) -> None:
    image = tmp_path / "disk.qcow2"
    image.write_bytes(b"")
    vm = VM(image, workdir=tmp_path / "vm", name="stopped")
    vm.stop()  # what collect does to a clone still booting when verify is interrupted
    with pytest.raises(GoldenError, match="stopped while waiting"):
        vm.wait_for_ssh(timeout=600)


def test_no_ssh_names_the_last_ssh_error_and_the_guests_cpu_time(tmp_path: Path, monkeypatch) -> None:
    # a guest without sshd (connection closed) and one that does not answer at all (timeout) need different
    # fixes; so do a starved guest (little CPU time) and a stuck one
    import subprocess
    import time

    from goldenimage.verify import vm as vm_module

    image = tmp_path / "disk.qcow2"
    image.write_bytes(b"")
    vm = VM(image, workdir=tmp_path / "vm", name="silent")
    spinner = subprocess.Popen(["sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; sleep 30"])
    try:
        vm._proc = spinner  # stands in for QEMU: a process that used some CPU
        monkeypatch.setattr(vm_module, "SSH_POLL_INTERVAL", 0.01)
        said = iter(["ssh: connect to host 127.0.0.1 port 2222: Connection refused",
                     "kex_exchange_identification: read: Connection reset by peer\n"
                     "Connection reset by 127.0.0.1 port 2222"])
        monkeypatch.setattr(vm, "ssh", lambda *a, **k: subprocess.CompletedProcess([], 255, "", next(said)))
        for _ in range(200):  # let the spinner use some CPU (bounded: 10 s at most)
            if vm.cpu_seconds() >= 0.1:
                break
            time.sleep(0.05)
        with pytest.raises(GoldenError) as caught:
            vm.wait_for_ssh(timeout=0.015)
    finally:
        spinner.kill()
        spinner.wait()
        vm._proc = None
    message = str(caught.value)
    assert "last attempt: Connection reset by 127.0.0.1 port 2222;" in message
    assert vm.cpu_seconds() == 0.0  # no QEMU, no figure
    assert float(message.split("; ")[1].split(" s of CPU")[0]) >= 0.1
