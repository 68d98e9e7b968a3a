"""The agent's converge engine: every key the renderer emits is one it handles; applied to a tree it writes
what cloud-init would, a second run changes nothing, and check mode changes nothing."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from goldenimage.bake.render_dir import bake_user_data
from goldenimage.model.profiles import list_profiles, resolve, supported_releases
from goldenimage.render.firstboot_bundle import ZIPAPP_PATH, build_zipapp
from goldenimage.render.userdata import cloud_config_json
from tests.conftest import ROOT
from tests.unit import firstboot_fake  # noqa: F401  (puts the agent on sys.path)

from golden_firstboot import converge  # isort: skip
from golden_firstboot.system import Result, Runner  # isort: skip

ACME = ROOT / "examples" / "customers" / "acme.yaml"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGoldenTestKeyGoldenTestKeyGoldenTestKey00 golden-test"
# As root the tree's accounts get their own ids; otherwise every account is the test user (chown works).
UID = 0 if os.geteuid() == 0 else os.getuid()
GID = 0 if os.geteuid() == 0 else os.getgid()
NEXT_UID = 1000 if os.geteuid() == 0 else os.getuid()


def _all_user_data() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name in list_profiles():
        for number in supported_releases(name):
            profile = resolve(name, number, ())
            for key in (None, KEY):
                out.append((f"{name}-{number}", yaml.safe_load(bake_user_data(profile, key))))
    out.append(("web-acme", yaml.safe_load(bake_user_data(resolve("web", 12, (ACME,)), None))))
    return out


def _keys(data: dict[str, Any]) -> set[str]:
    """Every key and sub-key of a cloud-config as dotted paths (apt.sources.NAME.x as apt.sources.*.x)."""
    found = set()
    for key, value in data.items():
        found.add(key)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                for sub, inner in item.items():
                    found.add(f"{key}.{sub}")
                    if key == "apt" and sub == "sources":
                        found.update(f"apt.sources.*.{k}" for src in inner.values() for k in src)
    return found


def _handled() -> set[str]:
    out = set(converge.HANDLED)
    for key, subs in converge.HANDLED.items():
        out.update(f"{key}.{s}" for s in subs or ())
    out.update(f"apt.sources.*.{k}" for k in converge.APT_SOURCE_KEYS)
    return out


def test_every_key_the_renderer_emits_is_handled_by_the_engine():
    emitted = set()
    for name, data in _all_user_data():
        emitted |= _keys(data)
        converge.check_keys(data, name)  # raises on anything it does not handle
    assert emitted - _handled() == set()
    # the renderer really emits these (the walk above is not empty-handed)
    assert {"write_files.encoding", "users.sudo", "apt.sources_list", "ntp.servers", "runcmd"} <= emitted


def test_cloud_config_json_is_the_same_document():
    user_data = bake_user_data(resolve("web", 12, (ACME,)), None)
    text = cloud_config_json(user_data)
    assert text.startswith("#cloud-config\n")
    assert json.loads(text.split("\n", 1)[1]) == yaml.safe_load(user_data)
    assert yaml.safe_load(text) == yaml.safe_load(user_data)  # and still cloud-config (YAML reads JSON)


def test_unknown_keys_are_refused_all_at_once():
    with pytest.raises(converge.ConvergeError) as err:
        converge.check_keys({"snap": {}, "users": [{"name": "a", "passwd": "x"}], "packages": []}, "f")
    assert "'snap'" in err.value.message and "users.passwd" in err.value.message


class FakeTree(Runner):
    """Answers the engine's chrooted commands by editing the tree's files; records every command."""

    def __init__(self, root: Path) -> None:
        super().__init__(logger=lambda line: None)
        self.root = root
        self.commands: list[list[str]] = []

    def _lines(self, rel: str) -> list[str]:
        path = self.root / rel
        return path.read_text().splitlines() if path.exists() else []

    def _write(self, rel: str, lines: list[str]) -> None:
        (self.root / rel).write_text("".join(line + "\n" for line in lines))

    def execute(self, args, input, env, stdin_path, stdout_path, timeout):  # noqa: ANN001, C901
        if args[0] == "chroot":
            assert args[1] == str(self.root) and args[2:4] == ["/usr/bin/env", "-i"]
            args = args[4:]
            while "=" in args[0]:  # the clean environment: PATH=..., HOME=..., LANG=...
                args = args[1:]
        elif args[:3] == ["systemctl", "--root", str(self.root)]:
            args = ["systemctl", *args[3:]]
        self.commands.append(args)
        cmd, rest = args[0], args[1:]
        if cmd == "useradd":
            opts, i = {}, 0
            while i < len(rest) - 1:
                if rest[i] in ("-c", "-s", "-G"):
                    opts[rest[i]] = rest[i + 1]
                    i += 2
                else:
                    i += 1
            name = rest[-1]
            uid = NEXT_UID + len(self._lines("etc/passwd"))
            gecos, shell = opts.get("-c", ""), opts.get("-s", "/bin/sh")
            row = f"{name}:x:{uid}:{uid}:{gecos}:/home/{name}:{shell}"
            self._write("etc/passwd", [*self._lines("etc/passwd"), row])
            self._write("etc/group", [*self._lines("etc/group"), f"{name}:x:{uid}:"])
            self._write("etc/shadow", [*self._lines("etc/shadow"), f"{name}:!:19000:0:99999:7:::"])
            for group in opts.get("-G", "").split(","):
                if group:
                    self._add_member(name, group)
            if "-m" in rest:
                (self.root / "home" / name).mkdir(parents=True)
                os.chown(self.root / "home" / name, uid, uid)
        elif cmd == "groupadd":
            gid = 2000 + len(self._lines("etc/group"))
            self._write("etc/group", [*self._lines("etc/group"), f"{rest[0]}:x:{gid}:"])
        elif cmd == "usermod" and rest[:2] == ["-a", "-G"]:
            self._add_member(rest[3], rest[2])
        elif cmd == "localedef":
            return Result(0, "\n".join(self._lines("usr/lib/locale/built")) + "\n")
        elif cmd == "locale-gen":
            built = [line.split()[0] for line in self._lines("etc/locale.gen") if line and not line.startswith("#")]
            self._write("usr/lib/locale/built", [b.replace("UTF-8", "utf8") for b in built])
        elif cmd == "update-locale":
            self._write(rest[0].split("=", 1)[1].lstrip("/"), [rest[1]])
        elif cmd == "systemctl" and rest[0] == "is-enabled":
            on = (self.root / "etc/systemd/system/multi-user.target.wants" / rest[1]).exists()
            return Result(0 if on else 1, "enabled\n" if on else "disabled\n")
        elif cmd == "systemctl" and rest[0] == "enable":
            for unit in rest[1:]:
                (self.root / "etc/systemd/system/multi-user.target.wants" / unit).touch()
        elif cmd == "/bin/sh" and "locale.gen" in rest[1]:
            # the renderer's bootcmd: its locale line added to /etc/locale.gen when missing
            line = shlex.split(rest[1].split("echo ", 1)[1].split(" >>")[0])[0]
            if line not in self._lines("etc/locale.gen"):
                self._write("etc/locale.gen", [*self._lines("etc/locale.gen"), line])
        return Result(0, "")

    def _add_member(self, user: str, group: str) -> None:
        lines = []
        for line in self._lines("etc/group"):
            fields = line.split(":")
            if fields[0] == group:
                members = [m for m in fields[3].split(",") if m]
                fields[3] = ",".join([*members, user])
            lines.append(":".join(fields))
        self._write("etc/group", lines)

    def shell_commands(self) -> list[str]:
        return [c[2] for c in self.commands if c[:2] == ["/bin/sh", "-c"]]


def make_tree(root: Path, packages: list[str]) -> Path:
    """A small Debian-like tree: accounts, dpkg's status, time zones, sshd_config, chrony, locale.gen."""
    files = {
        "etc/passwd": f"root:x:{UID}:{GID}:root:/root:/bin/bash\n",
        "etc/group": f"root:x:{GID}:\nadm:x:4:\nsudo:x:27:\n",
        "etc/shadow": "root:*:19000:0:99999:7:::\n",
        "etc/os-release": 'VERSION_CODENAME=bookworm\n',
        "etc/ssh/sshd_config": "Include /etc/ssh/sshd_config.d/*.conf\n#PasswordAuthentication yes\nUsePAM yes\n",
        "etc/chrony/chrony.conf": "pool 2.debian.pool.ntp.org iburst\n",
        "etc/locale.gen": "# en_US.UTF-8 UTF-8\n",
        "usr/share/zoneinfo/Etc/UTC": "TZif",
        "usr/share/zoneinfo/Europe/Paris": "TZif",
        "var/lib/dpkg/status": "".join(f"Package: {p}\nStatus: install ok installed\n\n" for p in packages),
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for rel in ("usr/sbin", "etc/systemd/system/multi-user.target.wants", "usr/lib/locale", "root", "etc/default"):
        (root / rel).mkdir(parents=True, exist_ok=True)
    return root


def _snapshot(root: Path) -> dict[str, Any]:
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        body = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else None
        out[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, body,
                                            os.readlink(path) if path.is_symlink() else None)
    return out


@pytest.fixture
def acme(tmp_path):
    profile = resolve("web", 12, (ACME,))
    data = json.loads(cloud_config_json(bake_user_data(profile, None, content_key="k")).split("\n", 1)[1])
    tree = make_tree(tmp_path / "tree", list(profile.packages))
    return data, tree


def _apply(data, tree, check=False):
    runner = FakeTree(tree)
    report = converge.converge(data, converge.Host(str(tree), runner), converge.Report(check))
    return report, runner


def test_apply_to_a_tree_writes_what_cloud_init_would(acme):
    data, tree = acme
    report, runner = _apply(data, tree)
    assert report.changed > 10 and report.commands > 5
    # write_files: decoded content, permissions
    assert (tree / ZIPAPP_PATH.lstrip("/")).read_bytes() == build_zipapp(engine=False, backup=False)
    assert oct((tree / ZIPAPP_PATH.lstrip("/")).stat().st_mode & 0o777) == "0o755"
    assert "vm.swappiness = 10" in (tree / "etc/sysctl.d/60-golden.conf").read_text()
    assert json.loads((tree / "etc/golden/image.json").read_text())["content_key"] == "k"
    assert (tree / "etc/motd").read_text().startswith("ACME managed server")
    # users: created with the overlay's group, sudo rule, keys 0600, no build account
    passwd = (tree / "etc/passwd").read_text()
    assert "acme-ops:" in passwd and "golden-build" not in passwd
    assert "acme-ops" in next(line for line in (tree / "etc/group").read_text().splitlines() if line.startswith("adm:"))
    sudoers = tree / "etc/sudoers.d/90-cloud-init-users"
    assert "acme-ops ALL=(ALL) NOPASSWD:ALL" in sudoers.read_text() and sudoers.stat().st_mode & 0o777 == 0o440
    keys = tree / "home/acme-ops/.ssh/authorized_keys"
    assert "acme-ops" in keys.read_text() and keys.stat().st_mode & 0o777 == 0o600
    # system settings
    assert (tree / "etc/timezone").read_text() == "Europe/Paris\n"
    assert os.readlink(tree / "etc/localtime") == "/usr/share/zoneinfo/Europe/Paris"
    assert (tree / "etc/default/locale").read_text() == "LANG=en_US.UTF-8\n"
    assert "en_US.utf8" in (tree / "usr/lib/locale/built").read_text()
    chrony = (tree / "etc/chrony/chrony.conf").read_text()
    assert "server 0.debian.pool.ntp.org iburst" in chrony and "pool 2.debian" not in chrony
    assert "\nPasswordAuthentication no\n" in (tree / "etc/ssh/sshd_config").read_text()
    assert "deb http://mirror.acme.example/debian bookworm main" in (tree / "etc/apt/sources.list").read_text()
    # runcmd ran in the chroot, the services item enabled every unit; no service start helper is left behind
    shell = runner.shell_commands()
    assert any(c.startswith("a2enmod") for c in shell) and any(c.startswith("sysctl") for c in shell)
    wants = {p.name for p in (tree / "etc/systemd/system/multi-user.target.wants").iterdir()}
    assert {"apache2", "golden-firstboot.service", "chrony"} <= wants
    assert not (tree / "usr/sbin/policy-rc.d").exists() and not (tree / "run/golden-converge").exists()
    assert not any(c[0] in ("systemctl",) and c[1] == "start" for c in runner.commands)


def test_second_apply_changes_nothing_and_runs_no_command(acme):
    data, tree = acme
    _apply(data, tree)
    before = _snapshot(tree)
    report, runner = _apply(data, tree)
    assert (report.changed, report.commands) == (0, 0), report.lines
    assert report.unchanged > 20
    assert runner.shell_commands() == [c for c in runner.shell_commands() if "locale.gen" in c]  # bootcmd only
    assert _snapshot(tree) == before


def test_check_mode_changes_nothing_and_reports_what_would_change(acme):
    data, tree = acme
    before = _snapshot(tree)
    report, runner = _apply(data, tree, check=True)
    assert _snapshot(tree) == before
    assert report.changed > 10 and all(line.startswith(("would ", "note:")) for line in report.lines)
    assert "would change: file /etc/golden/image.json (created)" in report.lines
    assert not [c for c in runner.commands if c[0] not in ("localedef", "systemctl") or c[1:2] == ["enable"]]


def test_drift_is_reported_by_check_and_restored_by_apply(acme):
    data, tree = acme
    _apply(data, tree)
    conf = tree / "etc/apache2/conf-available/zz-golden-security.conf"
    good = conf.read_bytes()
    conf.write_text("ServerTokens Full\n")
    os.chmod(tree / "etc/golden/image.json", 0o600)
    report, _ = _apply(data, tree, check=True)
    assert report.lines[:2] == ["would change: file /etc/apache2/conf-available/zz-golden-security.conf (content)",
                                "would change: file /etc/golden/image.json (mode 0600 -> 0644)"]
    assert conf.read_text() == "ServerTokens Full\n"
    report, runner = _apply(data, tree)
    assert report.changed == 2 and conf.read_bytes() == good
    assert runner.shell_commands()  # something changed: the commands run again (they are idempotent)
    assert _apply(data, tree)[0].changed == 0


def test_a_package_missing_from_the_tree_is_an_error(acme):
    data, tree = acme
    data["packages"] = [*data["packages"], "not-in-layer"]
    with pytest.raises(converge.ConvergeError, match="not-in-layer"):
        _apply(data, tree)


def test_absolute_symlinks_in_the_tree_stay_in_the_tree(tmp_path):
    tree = make_tree(tmp_path / "tree", [])
    outside = tmp_path / "outside"
    outside.mkdir()
    (tree / "etc/evil").symlink_to(outside)
    data = {"write_files": [{"path": "/etc/evil/x.conf", "content": "hi\n"}]}
    _apply(data, tree)
    assert not (outside / "x.conf").exists()
    assert (tree / str(outside).lstrip("/") / "x.conf").read_text() == "hi\n"


def test_write_files_encodings_append_and_defer(tmp_path):
    import gzip

    tree = make_tree(tmp_path / "tree", [])
    (tree / "etc/log.conf").write_text("a\n")
    data = {
        "users": [{"name": "svc", "system": True, "shell": "/usr/sbin/nologin"}],
        "write_files": [
            {"path": "/etc/b.bin", "encoding": "gz+b64",
             "content": base64.b64encode(gzip.compress(b"zipped\n")).decode(), "permissions": "0600"},
            {"path": "/etc/log.conf", "content": "b\n", "append": True},
            {"path": "/etc/svc.conf", "content": "x\n", "owner": "svc:svc", "defer": True},
        ],
    }
    _apply(data, tree)
    assert (tree / "etc/b.bin").read_bytes() == b"zipped\n" and (tree / "etc/b.bin").stat().st_mode & 0o777 == 0o600
    assert (tree / "etc/log.conf").read_text() == "a\nb\n"
    svc = next(line for line in (tree / "etc/passwd").read_text().splitlines() if line.startswith("svc:"))
    uid = int(svc.split(":")[2])
    assert (tree / "etc/svc.conf").stat().st_uid == uid
    assert not (tree / "home/svc").exists()  # a system account gets no home
    assert _apply(data, tree)[0].changed == 0  # an append already there is not appended again


def test_cli_in_the_zipapp_checks_a_tree_without_changing_it(acme, tmp_path):
    data, tree = acme
    app = tmp_path / "golden-firstboot.pyz"
    app.write_bytes(build_zipapp())
    user_data = tmp_path / "user-data.json"
    user_data.write_text("#cloud-config\n" + json.dumps(data))
    before = _snapshot(tree)
    proc = subprocess.run([sys.executable, str(app), "converge", "--user-data", str(user_data), "--root", str(tree),
                           "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "would change: file /etc/golden/image.json (created)" in proc.stdout
    assert proc.stdout.splitlines()[-1].startswith("would change: ")
    assert _snapshot(tree) == before
    bad = tmp_path / "bad.json"
    bad.write_text("#cloud-config\nsnap: {}\n")
    proc = subprocess.run([sys.executable, str(app), "converge", "--user-data", str(bad), "--root", str(tree)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "not cloud-config in JSON form" in proc.stderr


@pytest.mark.parametrize("argv", [["daemon-reload"], ["--quiet", "restart", "apache2"], ["start", "x.service"]])
def test_systemctl_in_a_tree_ignores_what_needs_a_running_manager(tmp_path, argv):
    shim = tmp_path / "systemctl"
    shim.write_text(converge.SYSTEMCTL_SHIM)
    proc = subprocess.run(["sh", str(shim), *argv], capture_output=True, text=True)
    assert proc.returncode == 0 and "ignored in a tree" in proc.stderr


def test_commands_in_a_tree_run_offline_with_the_shim_first_on_path(tmp_path):
    tree = make_tree(tmp_path / "tree", [])
    (tree / "run").mkdir()
    runner = FakeTree(tree)
    seen = []
    runner.execute = lambda args, *rest: seen.append(args) or Result(0, "")  # type: ignore[method-assign]
    converge.converge({"runcmd": ["systemctl daemon-reload"]}, converge.Host(str(tree), runner),
                      converge.Report(False))
    env = dict(a.split("=", 1) for a in seen[0][4:] if "=" in a and not a.startswith("/"))
    assert env["SYSTEMD_OFFLINE"] == "1" and env["PATH"].startswith(converge.SHIM_DIR + ":")
    assert not (tree / "run/golden-converge").exists()
