"""Hostile input, round two: every reader is bounded (regular files only, a size limit, an alias-expansion
limit), every message is inert (control characters, line breaks and markup escaped: one line per problem),
and every value is checked for what it is. One test per symptom of the issue, then a property test over
every reader: hostile keys, values and structures are refused with exit 2, one line, nothing written and
nothing started."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from goldenimage.cli import main
from goldenimage.core.inert import CONTROL, excerpt, inert
from goldenimage.core.paths import shipped
from tests.conftest import EXAMPLES, TEST_KEY

#: Nine lines, about 400 bytes: 9**9 (387 million) strings once the aliases are expanded.
BOMB_LINES = ["&l0 [x, x, x, x, x, x, x, x, x]"] + [
    f"&l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, 9)]
#: Seconds a refusal may take: a bomb or a FIFO must be refused at once, not after eating the machine (a
#: refusal takes about a second; the margin is for a loaded CI machine).
AT_ONCE = 60.0


def bomb_yaml(key: str, value_indent: str = "") -> str:
    """A document whose `key` (a dotted path of mappings) holds the bomb; the anchors sit in a list before it."""
    lines = ["anchors:"] + [f"  - {line}" for line in BOMB_LINES[:-1]]
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        lines.append("  " * depth + f"{part}:")
    lines.append("  " * (len(parts) - 1) + f"{parts[-1]}: {BOMB_LINES[-1]}")
    return "\n".join(lines) + "\n"


def golden(*argv: str) -> tuple[int, str]:
    """Run the CLI in this process: (exit status, stderr). An exception escaping main() fails the test."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(list(argv))
    return status, err.getvalue()


class TooSlow(BaseException):
    """Raised by the alarm in golden_at_once: not an Exception, so that no handler inside golden catches it."""


def golden_at_once(*argv: str, within: float = AT_ONCE) -> tuple[int, str]:
    """golden(), failing the test (instead of hanging it) when it does not answer within `within` seconds."""

    def alarm(signum: int, frame: object) -> None:
        raise TooSlow

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, within)
    try:
        return golden(*argv)
    except TooSlow:
        pytest.fail(f"golden {' '.join(argv)[:200]} did not answer within {within:.0f}s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def assert_one_line_refusal(status: int, err: str, out: Path | None, *needles: str) -> None:
    """Exit 2; every line an error line or a hint, none holding a control character; nothing under out."""
    assert status == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert lines and lines[0].startswith("golden: error: "), err
    for line in lines:
        assert not CONTROL.search(line), repr(line)
    for needle in needles:
        assert needle in lines[0], err
    if out is not None:
        assert not out.exists()


def cluster_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((EXAMPLES / "cluster.yaml").read_text())
    data["ssh_authorized_keys"] = [TEST_KEY]
    return data


def write_cluster(directory: Path, data: dict[str, Any] | None = None) -> Path:
    path = directory / "cluster.yaml"
    path.write_text(yaml.safe_dump(data or cluster_data(), width=10**6))
    return path


def inventory_for(cluster: dict[str, Any]) -> dict[str, Any]:
    return {"hosts": {h["name"]: f"127.0.0.1:{2200 + i}" for i, h in enumerate(cluster["hosts"])}}


@contextlib.contextmanager
def user_profiles() -> Iterator[None]:
    """--profiles-dir sets the environment of this process and the matrix is read once: both restored after."""
    from goldenimage.core.paths import PROFILES_ENV
    from goldenimage.model.releases import matrix

    saved = os.environ.get(PROFILES_ENV)
    matrix.cache_clear()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(PROFILES_ENV, None)
        else:
            os.environ[PROFILES_ENV] = saved
        matrix.cache_clear()


@contextlib.contextmanager
def nothing_started() -> Iterator[list[Any]]:
    """No process is started and no connection is opened inside: each attempt is recorded and refused."""
    started: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        started.append(args[:1])
        raise AssertionError(f"started: {args[:1]}")

    with mock.patch.object(subprocess, "Popen", refuse), mock.patch("socket.create_connection", refuse):
        yield started


# --- readers: regular files only, bounded, aliases bounded -------------------------------------------------

def test_an_alias_bomb_under_a_setting_is_refused_at_once(tmp_path: Path) -> None:
    overlay = tmp_path / "bomb.yaml"
    overlay.write_text(bomb_yaml("settings.firstboot.retry_attempts").replace("anchors:", "packages:"))
    status, err = golden_at_once("render", "web", "--overlay", str(overlay), "--out", str(tmp_path / "out"))
    assert_one_line_refusal(status, err, tmp_path / "out", "bomb.yaml", "expands to more than")


def test_an_alias_bomb_as_a_cluster_files_network_is_refused_at_once(tmp_path: Path) -> None:
    text = yaml.safe_dump({k: v for k, v in cluster_data().items() if k != "network"}, width=10**6)
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(text + "x-anchors:\n" + "\n".join(f"  - {ln}" for ln in BOMB_LINES[:-1])
                       + f"\nnetwork: {BOMB_LINES[-1]}\n")
    status, err = golden_at_once("cluster", "render", str(cluster), "--out", str(tmp_path / "out"))
    assert_one_line_refusal(status, err, tmp_path / "out", "cluster.yaml", "expands to more than")


def test_an_alias_bomb_as_an_inventorys_user_is_refused_at_once(tmp_path: Path) -> None:
    data = cluster_data()
    cluster = write_cluster(tmp_path, data)
    inventory = tmp_path / "inv.yaml"
    inventory.write_text(yaml.safe_dump(inventory_for(data)) + "x:\n"
                         + "\n".join(f"  - {ln}" for ln in BOMB_LINES[:-1]) + f"\nuser: {BOMB_LINES[-1]}\n")
    status, err = golden_at_once("cluster", "apply", str(cluster), "--inventory", str(inventory), "--check",
                                 "--out", str(tmp_path / "out"))
    assert_one_line_refusal(status, err, tmp_path / "out", "inv.yaml", "expands to more than")


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    overlay = tmp_path / "loop.yaml"
    overlay.write_text("packages: &a [htop, *a]\n")
    status, err = golden_at_once("render", "web", "--overlay", str(overlay), "--out", str(tmp_path / "out"))
    assert_one_line_refusal(status, err, tmp_path / "out", "loop.yaml", "recursive")


def test_anchors_and_merge_keys_within_the_limit_still_read(tmp_path: Path) -> None:
    overlay = tmp_path / "ok.yaml"
    overlay.write_text('files:\n  - {path: /etc/a, content: &c "x\\n", owner: &o "root:root"}\n'
                       "  - {path: /etc/b, content: *c, owner: *o}\n")
    status, err = golden("render", "web", "--overlay", str(overlay), "--out", str(tmp_path / "out"))
    assert status == 0, err


@pytest.mark.parametrize("command", ["cluster-render", "cluster-apply-inventory"])
def test_a_fifo_is_refused_at_once_not_read(tmp_path: Path, command: str) -> None:
    fifo = tmp_path / "in.yaml"
    os.mkfifo(fifo)
    try:
        if command == "cluster-render":
            argv: tuple[str, ...] = ("cluster", "render", str(fifo), "--out", str(tmp_path / "out"))
        else:
            argv = ("cluster", "apply", str(write_cluster(tmp_path)), "--inventory", str(fifo), "--check",
                    "--out", str(tmp_path / "out"))
        status, err = golden_at_once(*argv)
    finally:  # had the reader blocked in open(), a writer releases it
        with contextlib.suppress(OSError):
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
    assert_one_line_refusal(status, err, tmp_path / "out", "in.yaml", "not a regular file")


def test_a_secret_file_that_is_a_device_is_refused_not_read(tmp_path: Path) -> None:
    data = cluster_data()
    data.setdefault("secrets", {})["replication_password"] = {"file": "/dev/zero"}
    status, err = golden_at_once("cluster", "render", str(write_cluster(tmp_path, data)), "--out",
                                 str(tmp_path / "out"))
    assert_one_line_refusal(status, err, tmp_path / "out", "secrets.replication_password.file", "/dev/zero",
                            "not a regular file")


@pytest.mark.parametrize("source", ["/dev/zero", "dir", "big"])
def test_host_settings_that_are_not_a_small_regular_file_are_refused_before_ssh(tmp_path: Path,
                                                                                 source: str) -> None:
    path = Path(source)
    if source == "dir":
        path = tmp_path / "dir"
        path.mkdir()
    elif source == "big":
        path = tmp_path / "big.json"
        path.write_text('{"x": "' + "a" * (5 * 1024 * 1024) + '"}')
    with nothing_started() as started:
        status, err = golden_at_once("apply", "web", "--host", "root@127.0.0.1", "--host-settings", str(path))
    assert_one_line_refusal(status, err, None, "--host-settings")
    assert not started


@pytest.mark.parametrize("text", ['{"retry": NaN}', '{"a\\u001b[2Jb": 1}', '{"a\\nchanged: 0": 1}', "[1]",
                                  "[" * 100_000])
def test_host_settings_that_are_not_a_plain_json_object_are_refused_before_ssh(tmp_path: Path, text: str) -> None:
    path = tmp_path / "host.json"
    path.write_text(text)
    with nothing_started() as started:
        status, err = golden_at_once("apply", "web", "--host", "root@127.0.0.1", "--host-settings", str(path))
    assert_one_line_refusal(status, err, None, "--host-settings")
    assert not started


# --- messages: inert, one line per problem -----------------------------------------------------------------

def test_an_unknown_key_with_terminal_escapes_is_printed_escaped(tmp_path: Path) -> None:
    overlay = tmp_path / "esc.yaml"
    overlay.write_text(json.dumps({"settings": {"web": {"\x1b]0;pwned\x07\x1b[2Jx": 1}}}))
    status, err = golden("render", "web", "--overlay", str(overlay), "--out", str(tmp_path / "out"))
    assert_one_line_refusal(status, err, tmp_path / "out", "esc.yaml", "\\x1b]0;pwned\\x07\\x1b[2Jx")
    assert "\x1b" not in err and "\x07" not in err


def test_a_key_with_a_newline_cannot_add_a_line_to_the_error(tmp_path: Path) -> None:
    overlay = tmp_path / "nl.yaml"
    overlay.write_text(json.dumps({"x\nchanged: 0, unchanged: 59": 1}))
    status, err = golden("render", "web", "--overlay", str(overlay), "--out", str(tmp_path / "out"))
    assert_one_line_refusal(status, err, tmp_path / "out", "nl.yaml", "x\\nchanged: 0, unchanged: 59")
    assert not any(line.startswith("changed") for line in err.splitlines())


def test_square_brackets_are_text_not_markup(tmp_path: Path) -> None:
    overlay = tmp_path / "mk.yaml"
    overlay.write_text('packages: ["[/x]"]\n"[link=http://evil.example/]sysctls[/link]": {}\n')
    status, err = golden("render", "web", "--overlay", str(overlay), "--out", str(tmp_path / "out"))
    assert_one_line_refusal(status, err, tmp_path / "out", "'[/x]'")
    assert "[link=http://evil.example/]sysctls[/link]: unknown key" in err


def test_a_host_argument_with_markup_is_one_line() -> None:
    with nothing_started() as started:
        status, err = golden("apply", "web", "--host", "[/bold]@host")
    assert_one_line_refusal(status, err, None, "--host", "[/bold]")
    assert not started


def test_inert_escapes_controls_and_unicode_line_breaks_and_redacts_url_credentials() -> None:
    assert inert("a\nb\x1b[2J\x85c\u2028d\x7f") == "a\\nb\\x1b[2J\\x85c\\u2028d\\x7f"
    assert inert("see http://user:PW@host/x and https://tok@h") == "see http://***@host/x and https://***@h"
    assert excerpt("x" * 500).endswith("...") and len(excerpt("x" * 500)) < 100
    assert excerpt(list(range(10**6))) == "<list of 1000000>"


def test_a_log_line_is_inert(capsys: pytest.CaptureFixture[str]) -> None:
    from goldenimage.core.log import log, setup_logging

    setup_logging(debug=True)
    try:
        log.debug("from http://u:PW@h/ a\x1b[2J")
    finally:
        setup_logging(debug=False)
    err = capsys.readouterr().err
    assert "PW" not in err and "\x1b" not in err and "\\x1b[2J" in err


# --- values: checked for what they are ---------------------------------------------------------------------

@pytest.mark.parametrize(("text", "key"), [
    ('bake_commands: ["true\\x85reboot"]', "bake_commands[0]"),
    ('bake_commands: ["true\\u2028reboot"]', "bake_commands[0]"),
    ('bake_commands: ["true\\u2029reboot"]', "bake_commands[0]"),
    ('bake_commands: ["true\\vreboot"]', "bake_commands[0]"),
    ('bake_commands: ["true\\freboot"]', "bake_commands[0]"),
    ('bake_commands: ["true\\rreboot"]', "bake_commands[0]"),
    ("settings: {firstboot: {retry_delay: .nan}}", "settings.firstboot"),
    ("settings: {firstboot: {retry_delay: .inf}}", "settings.firstboot"),
    ("settings: {firstboot: {retry_delay: -.inf}}", "settings.firstboot"),
    ("settings: {mariadb: {port: true}}", "settings.mariadb.port"),
    ("settings: {galera: {health_port: false}}", "settings.galera.health_port"),
    ("settings: {lb: {max_servers: true}}", "settings.lb.max_servers"),
])
def test_a_value_that_is_not_what_its_key_holds_is_refused(tmp_path: Path, text: str, key: str) -> None:
    overlay = tmp_path / "cust.yaml"
    overlay.write_text(text + "\n")
    status, err = golden("render", "web", "--overlay", str(overlay), "--out", str(tmp_path / "out"))
    assert_one_line_refusal(status, err, tmp_path / "out", "cust.yaml", key)


def _user_matrix(tmp_path: Path, change: Any) -> Path:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    data = yaml.safe_load((shipped("profiles") / "releases.yaml").read_text())
    change(data["releases"][12])
    (profiles / "releases.yaml").write_text(yaml.safe_dump(data, width=10**6))
    return profiles


@pytest.mark.parametrize(("field", "value"), [
    ("mirror", "http://deb.debian.org/debian\ndeb [trusted=yes] http://evil.example/ x main"),
    ("mirror", "http://deb.debian.org/debian [trusted=yes]"),
    ("security_mirror", "ftp://x"),
    ("suites", ["bookworm\ndeb [trusted=yes] http://evil.example/ x main"]),
    ("suites", ["bookworm [trusted=yes]"]),
    ("security_suite", "bookworm-security main\ndeb http://evil.example/ x"),
    ("components", ["main contrib\u2028deb http://evil.example/ x"]),
    ("codename", "bookworm\n"),
    ("base_packages", ["ifupdown; reboot"]),
    ("vars", {"php": "8.2\nx"}),
])
def test_a_user_release_matrix_cannot_inject_an_apt_line(tmp_path: Path, field: str, value: Any) -> None:
    profiles = _user_matrix(tmp_path, lambda release: release.__setitem__(field, value))
    with user_profiles():
        status, err = golden("--profiles-dir", str(profiles), "render", "web", "--out", str(tmp_path / "out"))
    assert_one_line_refusal(status, err, tmp_path / "out", "releases.yaml", f"releases[12].{field}")


def test_the_shipped_release_matrix_passes_the_same_rules(tmp_path: Path) -> None:
    profiles = _user_matrix(tmp_path, lambda release: None)
    with user_profiles():
        status, err = golden("--profiles-dir", str(profiles), "render", "web", "--out", str(tmp_path / "out"))
    assert status == 0, err


# --- cluster apply: the inventory is checked before anything is written ------------------------------------

def test_cluster_apply_with_an_inventory_missing_a_host_writes_nothing(tmp_path: Path) -> None:
    data = cluster_data()
    inventory = inventory_for(data)
    inventory["hosts"].pop(data["hosts"][-1]["name"])
    (tmp_path / "inv.yaml").write_text(yaml.safe_dump(inventory))
    out = tmp_path / "out"
    with nothing_started() as started:
        status, err = golden("cluster", "apply", str(write_cluster(tmp_path, data)), "--inventory",
                             str(tmp_path / "inv.yaml"), "--out", str(out))
    assert_one_line_refusal(status, err, out, "inv.yaml", f"hosts.{data['hosts'][-1]['name']}: missing")
    assert not started
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.yaml", "inv.yaml"]


# --- property: every reader, hostile keys, values and structures -------------------------------------------

#: Each holds at least one character no single-line value or key may hold: the kind of text a hostile file
#: carries (terminal escapes, forged lines, Unicode line breaks), with markup around it.
HOSTILE_TEXT = st.builds(
    lambda head, bad, tail: head + bad + tail,
    st.sampled_from(["", "x", "[/x]", "[link=http://evil.example/]", "[bold]", "changed: 0", "vm.swappiness",
                     "http://u:PW@h/"]),
    st.sampled_from(["\n", "\r", "\x1b[2J", "\x1b]0;t\x07", "\x00", "\x7f", "\x85", "\x9b", "\u2028", "\u2029",
                     "\v", "\f", "\ndeb [trusted=yes] http://evil.example/ x main"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8),
)
#: YAML fragments for a value: an alias bomb, recursive aliases, a deep nest.
HOSTILE_STRUCTURES = st.sampled_from([
    "[" + ", ".join(f"&b{n} [{', '.join([f'*b{n - 1}'] * 10) if n else ', '.join(['x'] * 10)}]"
                    for n in range(7)) + "]",
    "&r [x, *r]",
    "&m {a: *m}",
    "[" * 5000 + "]" * 5000,
])
#: Places whose value is free data by design: a file's content (multi-line text), a role fragment's
#: example_settings (host data the agent checks, shown in the documentation).
FREE_TEXT = ("content", "example_settings")
PLACEHOLDER = "__golden_hostile__"


def _places(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    places = [path] if path else []
    if isinstance(data, dict):
        for key, value in data.items():
            places += _places(value, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            places += _places(value, (*path, i))
    return places


@st.composite
def hostile_document(draw: st.DrawFn, base: dict[str, Any]) -> str:
    """`base` as YAML with one hostile key, value or structure put at a random place."""
    import copy

    data = copy.deepcopy(base)
    places = [p for p in _places(data) if not any(part in FREE_TEXT for part in p if isinstance(part, str))]
    place = draw(st.sampled_from(places))
    parent: Any = data
    for part in place[:-1]:
        parent = parent[part]
    kind = draw(st.sampled_from(["key", "value", "structure"]))
    if kind == "key" and isinstance(parent, dict):
        parent[PLACEHOLDER] = parent.pop(place[-1])
        fragment = json.dumps(draw(HOSTILE_TEXT))
    else:
        parent[place[-1]] = PLACEHOLDER
        fragment = json.dumps(draw(HOSTILE_TEXT)) if kind != "structure" else draw(HOSTILE_STRUCTURES)
    text = yaml.safe_dump(data, width=10**6, sort_keys=False)
    assert text.count(PLACEHOLDER) == 1
    return text.replace(PLACEHOLDER, fragment)


PROFILE = {
    "extends": "base", "roles": ["web"], "description": "a web server", "packages": ["htop"],
    "services": ["cron"], "sysctls": {"vm.swappiness": 10},
    "files": [{"path": "/etc/golden-test", "content": "x\n", "owner": "root:root", "permissions": "0640"}],
    "users": [{"name": "ops", "groups": ["adm"], "shell": "/bin/bash", "ssh_authorized_keys": [TEST_KEY]}],
    "apt": {"mirror": "http://deb.debian.org/debian"},
    "system": {"timezone": "Etc/UTC", "locale": "en_US.UTF-8", "ntp_servers": ["ntp.example.org"]},
    "settings": {"web": {"health_path": "/h"}, "firstboot": {"retry_attempts": 3, "retry_delay": 1.5}},
    "bake_commands": ["true"], "disk_size": "8G",
}
OVERLAY = {k: v for k, v in PROFILE.items() if k not in ("extends", "roles", "disk_size", "description")}
FRAGMENT = yaml.safe_load((shipped("profiles") / "roles" / "web.yaml").read_text())
MATRIX = yaml.safe_load((shipped("profiles") / "releases.yaml").read_text())
CLUSTER = cluster_data()
INVENTORY = {"user": "debian", **inventory_for(CLUSTER)}
HOST_SETTINGS = {"mariadb": {"server_id": 1, "users": [{"name": "app", "host": "10.0.0.2"}]}, "web": {"x": "y"}}


def _run_reader(reader: str, tmp: Path, text: str) -> tuple[int, str, Path]:
    out = tmp / "out"
    if reader == "profile":
        path = tmp / "prof.yaml"
        path.write_text(text)
        return (*golden_at_once("render", str(path), "--out", str(out)), out)
    if reader == "overlay":
        path = tmp / "cust.yaml"
        path.write_text(text)
        return (*golden_at_once("render", "web", "--overlay", str(path), "--out", str(out)), out)
    if reader in ("fragment", "matrix"):
        profiles = tmp / "profiles"
        (profiles / "roles").mkdir(parents=True)
        name = "roles/web.yaml" if reader == "fragment" else "releases.yaml"
        (profiles / name).write_text(text)
        with user_profiles():
            return (*golden_at_once("--profiles-dir", str(profiles), "render", "web", "--out", str(out)), out)
    if reader == "cluster":
        path = tmp / "cluster.yaml"
        path.write_text(text)
        return (*golden_at_once("cluster", "render", str(path), "--out", str(out)), out)
    if reader == "inventory":
        path = tmp / "inv.yaml"
        path.write_text(text)
        return (*golden_at_once("cluster", "apply", str(write_cluster(tmp, CLUSTER)), "--inventory", str(path),
                                "--out", str(out)), out)
    if reader == "secret":
        data = json.loads(json.dumps(CLUSTER))
        data.setdefault("secrets", {})["replication_password"] = {"file": "secret.txt"}
        (tmp / "secret.txt").write_text(text)
        return (*golden_at_once("cluster", "render", str(write_cluster(tmp, data)), "--out", str(out)), out)
    assert reader == "host-settings"
    path = tmp / "host.json"
    path.write_text(text)
    return (*golden_at_once("apply", "web", "--host", "root@127.0.0.1", "--host-settings", str(path)), out)


@st.composite
def hostile_host_settings(draw: st.DrawFn) -> str:
    """host.json with a hostile key at a random mapping, or JSON that is no plain object (NaN, a deep nest)."""
    kind = draw(st.sampled_from(["key", "key", "nan", "deep"]))
    if kind == "nan":
        return '{"firstboot": {"retry_delay": NaN}}'
    if kind == "deep":
        return "[" * 100_000 + "]" * 100_000
    data = json.loads(json.dumps(HOST_SETTINGS))
    mappings = [data, data["mariadb"], data["mariadb"]["users"][0], data["web"]]
    draw(st.sampled_from(mappings))[draw(HOSTILE_TEXT)] = draw(st.sampled_from([1, "x", [], {}]))
    return json.dumps(data)


# 4 examples per reader keep the fast suite fast; GOLDEN_FUZZ_EXAMPLES=1000 searches harder.
# No explain phase: its tracing slows each replay tenfold, past the time bound.
PROPERTY = settings(max_examples=int(os.environ.get("GOLDEN_FUZZ_EXAMPLES", "4")), deadline=None,
                    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
BASES = {"profile": PROFILE, "overlay": OVERLAY, "fragment": FRAGMENT, "matrix": MATRIX, "cluster": CLUSTER,
         "inventory": INVENTORY}


@pytest.mark.parametrize("reader", [*BASES, "secret", "host-settings"])
@PROPERTY
@given(data=st.data())
def test_every_reader_refuses_hostile_input_in_one_line_writing_and_starting_nothing(reader: str,
                                                                                      data: st.DataObject) -> None:
    if reader in BASES:
        text = data.draw(hostile_document(BASES[reader]))
    elif reader == "secret":
        text = data.draw(st.builds(lambda t: t.strip() + "\x1bpw", HOSTILE_TEXT))
    else:
        text = data.draw(hostile_host_settings())
    with tempfile.TemporaryDirectory() as tmp, nothing_started() as started:
        status, err, out = _run_reader(reader, Path(tmp), text)
        assert_one_line_refusal(status, err, out)
        assert not started
