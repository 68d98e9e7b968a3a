"""The package layer: a profile's packages are installed natively into its mirror-built base, keyed only by
what changes the installed packages, so that a change to a file, a setting or the agent reuses it."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from goldenimage.bake import render_dir as render
from goldenimage.bake.base_image import BaseImage, mmdebstrap_argv, prepare_rootfs
from goldenimage.bake.plan import layer_key, layer_packages, profile_key
from goldenimage.model.profiles import resolve


def test_layer_has_every_profile_package_and_nothing_removed():
    web = resolve("web", 12)
    packages = layer_packages(web)
    assert {"apache2", "php8.2-fpm", "php8.2-mysql", "ssl-cert", "nfs-common", "chrony"} <= set(packages)
    hardened = resolve("banking-hardened", 12)
    # remove_packages never reach the layer; base_packages go by --include, the rest by the hook
    assert "chrony" not in layer_packages(hardened)
    assert not set(hardened.base_packages) & set(layer_packages(hardened))


def test_changing_files_settings_and_services_keeps_the_layer_key(write_yaml):
    web = resolve("web", 12)
    overlay = write_yaml("o.yaml", "\n".join([
        "files:",
        "  - path: /etc/motd",
        "    content: changed",
        "settings: {web: {health_path: /alive}}",
        "sysctls: {vm.swappiness: 5}",
        "bake_commands: ['true']",
        "",
    ]))
    changed = resolve("web", 12, [overlay])
    assert changed.content != web.content
    assert layer_key(changed) == layer_key(web)


def test_adding_a_package_or_changing_the_mirror_changes_the_layer_key(write_yaml):
    web = resolve("web", 12)
    more = resolve("web", 12, [write_yaml("o.yaml", "packages: [htop]\n")])
    assert layer_key(more) != layer_key(web)
    assert layer_key(web, mirror="http://127.0.0.1:3142/debian") != layer_key(web)
    assert layer_key(resolve("lb", 12)) != layer_key(web)


def test_a_new_agent_changes_the_bake_key_but_not_the_layer(monkeypatch: pytest.MonkeyPatch):
    web = resolve("web", 12)
    base = BaseImage(path=Path("/nonexistent/base.qcow2"), sha256="0" * 64, key=layer_key(web), release=12,
                     source="mmdebstrap")
    before = (layer_key(web), profile_key(web, base))
    agent = render.bundle_files()
    changed = [{**agent[0], "content": agent[0]["content"] + "# changed\n"}, *agent[1:]]
    monkeypatch.setattr(render, "bundle_files", lambda: changed)
    assert layer_key(web) == before[0]
    assert profile_key(web, base) != before[1]


def test_profiles_with_their_own_apt_sources_install_in_the_vm(write_yaml):
    overlay = write_yaml("o.yaml", "\n".join([
        "apt:",
        "  sources:",
        "    vendor:",
        "      source: deb http://vendor.example/debian bookworm main",
        "",
    ]))
    assert layer_packages(resolve("web", 12, [overlay])) == ()


def test_mmdebstrap_installs_the_layer_natively_with_recommends_from_every_suite(tmp_path: Path):
    web = resolve("web", 12)
    argv = [str(a) for a in mmdebstrap_argv(web.release, "http://deb.debian.org/debian", "cloud", tmp_path,
                                            web.base_packages, layer_packages(web))]
    (hook,) = [a.split("=", 1)[1] for a in argv if a.startswith("--customize-hook=")]
    words = shlex.split(hook)
    assert words[:2] == ["chroot", "$1"] and "--install-recommends" in words
    assert set(layer_packages(web)) <= set(words)
    sources = [a for a in argv if a.startswith("deb ")]
    suites = {s.split()[2] for s in sources}
    assert {"bookworm", "bookworm-updates", "bookworm-security"} <= suites
    # without a layer, no hook: the plain base stays what it was
    plain = mmdebstrap_argv(web.release, "http://deb.debian.org/debian", "cloud", tmp_path)
    assert not any(str(a).startswith("--customize-hook") for a in plain)


def test_the_native_install_leaves_dpkg_and_apt_logs_empty(tmp_path: Path):
    from goldenimage.model.releases import matrix

    root = tmp_path / "rootfs"
    for d in ("etc/cloud/cloud.cfg.d", "etc/ssh", "etc/default", "etc/apt", "var/lib/dbus", "var/log/apt"):
        (root / d).mkdir(parents=True)
    (root / "etc/default/grub").write_text('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
    (root / "var/log/dpkg.log").write_text("2026-11-30 05:00:00 install apache2:amd64 <none> 2.4.62-1\n")
    (root / "var/log/apt/history.log").write_text("Install: apache2:amd64 (2.4.62-1)\n")
    prepare_rootfs(root, matrix().get(12), "other")
    assert (root / "var/log/dpkg.log").read_text() == ""
    assert (root / "var/log/apt/history.log").read_text() == ""


def test_guest_manifest_reports_what_dpkg_installed_during_the_vm_pass(tmp_path: Path):
    """collect-manifest.sh, run with stand-ins for dpkg-query and cloud-init: installs and upgrades in dpkg's
    log are reported, other actions are not."""
    import json
    import os

    from goldenimage.core.run import run
    from goldenimage.render.packer_template import script_text

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    rows = "apache2\\t2.4.62-1\\tii \\nlinux-image-6.1\\t6.1\\tii \\n"
    (bin_dir / "dpkg-query").write_text(f"#!/bin/sh\nprintf '{rows}'\n")
    (bin_dir / "cloud-init").write_text("#!/bin/sh\necho '/usr/bin/cloud-init 22.4.2'\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    log = tmp_path / "dpkg.log"
    log.write_text("\n".join([
        "2026-11-30 05:00:00 startup packages configure",
        "2026-11-30 05:00:01 install htop:amd64 <none> 3.2.2-2",
        "2026-11-30 05:00:02 status installed htop:amd64 3.2.2-2",
        "2026-11-30 05:00:03 upgrade curl:amd64 7.88.1-10 7.88.1-10+deb12u8",
        "2026-11-30 05:00:04 purge chrony:amd64 4.3-2 <none>",
        "",
    ]))
    script = tmp_path / "collect-manifest.sh"
    script.write_text(script_text("collect-manifest.sh"))
    out = tmp_path / "guest.json"
    runcmd = tmp_path / "runcmd"
    runcmd.write_text("#!/bin/sh\nset -e\nupdate-grub\n\nchmod 0600 /boot/grub/grub.cfg\n")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GOLDEN_DPKG_LOG": str(log),
           "GOLDEN_GUEST_MANIFEST": str(out), "GOLDEN_RUNCMD": str(runcmd)}
    run(["sh", script], env=env)
    guest = json.loads(out.read_text())
    assert guest["vm_pass_dpkg"] == ["install htop:amd64 <none> 3.2.2-2",
                                     "upgrade curl:amd64 7.88.1-10 7.88.1-10+deb12u8"]
    assert guest["packages"] == {"apache2": "2.4.62-1", "linux-image-6.1": "6.1"}
    assert guest["runcmd"] == ["set -e", "update-grub", "chmod 0600 /boot/grub/grub.cfg"]
    log.write_text("")
    runcmd.unlink()
    run(["sh", script], env=env)
    guest = json.loads(out.read_text())
    assert guest["vm_pass_dpkg"] == [] and guest["runcmd"] == []


def _vm_pass_runcmd_script(user_data: str) -> str:
    """The runcmd script cloud-init writes from `user_data` (its shellify: a shebang, then each string line
    as it is)."""
    import yaml

    return "#!/bin/sh\n" + "".join(f"{line}\n" for line in yaml.safe_load(user_data)["runcmd"])


def test_a_failing_vm_bake_command_fails_the_vm_pass_script(write_yaml, tmp_path: Path):
    """cloud-init's runcmd script returns its last command's status: the VM pass's starts with `set -e`, so
    a failing update-grub is not hidden by the chmod after it."""
    from goldenimage.core.errors import CommandError
    from goldenimage.core.run import run
    from goldenimage.render.userdata import render_vm_pass_user_data

    after = tmp_path / "ran-after-the-failure"
    overlay = write_yaml("o.yaml", f"vm_bake_commands: ['false', 'touch {after}']\n")
    script = tmp_path / "runcmd"
    script.write_text(_vm_pass_runcmd_script(render_vm_pass_user_data(resolve("web", 12, [overlay]), "ssh-ed25519 K")))
    with pytest.raises(CommandError):
        run(["sh", script])
    assert not after.exists()
    overlay.write_text(f"vm_bake_commands: ['true', 'touch {after}']\n")
    script.write_text(_vm_pass_runcmd_script(render_vm_pass_user_data(resolve("web", 12, [overlay]), "ssh-ed25519 K")))
    run(["sh", script])
    assert after.exists()


def test_the_manifest_records_the_vm_pass_runcmd_and_refuses_another(write_yaml):
    """The native bake takes the guest's runcmd as proof that the VM pass ran the profile's vm_bake_commands."""
    from goldenimage.bake.manifest import Guest
    from goldenimage.bake.vm_pass import check_vm_pass_ran
    from goldenimage.core.errors import GoldenError
    from goldenimage.render.userdata import render_vm_pass_user_data

    hardened = resolve("banking-hardened", 12)
    commands = list(hardened.content.vm_bake_commands)
    assert "update-grub" in commands
    ran = _vm_pass_runcmd_script(render_vm_pass_user_data(hardened, "ssh-ed25519 K")).splitlines()[1:]
    assert check_vm_pass_ran(commands, Guest.from_json({"runcmd": ran})) == tuple(ran)
    for other in ([], ran[1:], [*ran, "true"], [ran[0], *reversed(ran[1:])]):
        with pytest.raises(GoldenError, match="did not run the profile's vm_bake_commands"):
            check_vm_pass_ran(commands, Guest.from_json({"runcmd": other}))
    with pytest.raises(GoldenError):
        check_vm_pass_ran(commands, Guest.from_json({}))


def test_the_bake_builds_its_base_under_the_layer_key(monkeypatch: pytest.MonkeyPatch):
    import goldenimage.bake.plan as bake_module
    from goldenimage.bake.base_image import base_key, resolve_mirror

    def fake_build_base(release, *, mirror=None, flavour="cloud", layout, extra_packages, packages, compression):
        key = base_key(release, resolve_mirror(release, mirror), flavour, layout, extra_packages, packages,
                       compression)
        return BaseImage(path=Path("/nonexistent"), sha256="0" * 64, key=key, release=release.number,
                         source="mmdebstrap")

    monkeypatch.setattr(bake_module, "build_base", fake_build_base)
    for name in ("web", "banking-hardened", "lb"):
        profile = resolve(name, 12)
        base = bake_module.get_base(profile)
        assert base.key == layer_key(profile)
    assert bake_module.LAYER_COMPRESSION == "zstd"


def test_an_image_for_metal_has_the_generic_kernel_firmware_and_mdadm_in_its_own_layer():
    from goldenimage.bake.base_image import base_key, resolve_mirror
    from goldenimage.bake.plan import LAYER_COMPRESSION, kind_packages
    from goldenimage.bake.store import artifact_name

    web = resolve("web", 12)
    cloud = base_key(web.release, resolve_mirror(web.release), "cloud", web.disk_layout, web.base_packages,
                     layer_packages(web), LAYER_COMPRESSION)
    assert layer_key(web) == layer_key(web, kind="cloud") == cloud  # a cloud image's keys are as they were
    assert layer_key(web, kind="metal") != cloud
    argv = " ".join(str(a) for a in mmdebstrap_argv(web.release, "http://127.0.0.1/debian", "generic",
                                                     Path("/nonexistent"), kind_packages(web, "metal")))
    include = next(a for a in argv.split() if a.startswith("--include="))
    names = set(include.removeprefix("--include=").split(","))
    assert {"linux-image-amd64", "mdadm", "firmware-bnx2", "firmware-bnx2x", "firmware-misc-nonfree"} <= names
    assert "linux-image-cloud-amd64" not in names
    assert "non-free-firmware" in " ".join(web.release.components)
    assert artifact_name(web, "k" * 16, 0, "metal") == f"web-debian12-metal-19700101-{'k' * 16}"
    assert artifact_name(web, "k" * 16, 0) == f"web-debian12-19700101-{'k' * 16}"
