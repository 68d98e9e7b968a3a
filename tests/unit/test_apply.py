"""golden apply / golden cluster apply without a host: addresses, inventories, ssh argv, sudo, and the apply
flow against a fake transport (what is run, what is shipped, what is reported, what a failing host does)."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from goldenimage.apply.apply import STALE_CLEANUP, apply_host, host_release, parse_converge
from goldenimage.apply.cluster import apply_cluster, cluster_summary
from goldenimage.apply.inventory import InventoryErrors, load_inventory, match_cluster, parse_inventory
from goldenimage.apply.target import SSHTarget, TargetError, parse_target
from goldenimage.apply.transport import SSHOptions, SSHTransport, remote_command
from goldenimage.cli import main
from goldenimage.core.errors import GoldenError
from tests.conftest import EXAMPLES
from tests.unit import firstboot_fake  # noqa: F401  (puts the agent on sys.path)

OS_RELEASE = {
    11: 'PRETTY_NAME="Debian GNU/Linux 11 (bullseye)"\nID=debian\nVERSION_ID="11"\nVERSION_CODENAME=bullseye\n',
    12: 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n',
}


# --- addresses -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("db1.example.com", SSHTarget("db1.example.com", "root", 22)),
    ("debian@203.0.113.10", SSHTarget("203.0.113.10", "debian", 22)),
    ("admin@db2:2222", SSHTarget("db2", "admin", 2222)),
    ("[2001:db8::1]", SSHTarget("2001:db8::1", "root", 22)),
    ("ops@[2001:DB8::21]:2200", SSHTarget("2001:db8::21", "ops", 2200)),
])
def test_addresses_parse_into_user_host_and_port(text, expected):
    assert parse_target(text) == expected


@pytest.mark.parametrize(("text", "problem"), [
    ("", "empty"),
    ("-oProxyCommand=x", "not a host name"),
    ("root@host:0", "port 0"),
    ("root@host:70000", "port 70000"),
    ("Root;rm@host", "not a user name"),
    ("2001:db8::1", "brackets"),
    ("[1:2:3]:22", "not an IPv6"),
    ("host name", "not a host name"),
])
def test_bad_addresses_are_one_line_errors(text, problem):
    with pytest.raises(TargetError, match=problem) as err:
        parse_target(text)
    assert "\n" not in str(err.value)


# --- inventory -------------------------------------------------------------------------------------------

def test_inventory_maps_names_to_targets_with_a_default_user():
    inv = parse_inventory({"user": "debian", "hosts": {"db1": "10.0.0.1", "db2": "admin@10.0.0.2:2222"}}, "inv.yaml")
    assert inv.hosts == {"db1": SSHTarget("10.0.0.1", "debian", 22), "db2": SSHTarget("10.0.0.2", "admin", 2222)}


def test_inventory_reports_every_problem_at_once_one_line_each():
    data = {"hosts": {"db1": "bad host", "db2": 12, "db3": "10.0.0.3", "db4": "root@10.0.0.3"}, "port": 22,
            "user": "Bad User"}
    with pytest.raises(InventoryErrors) as err:
        parse_inventory(data, "inv.yaml")
    lines = err.value.lines
    assert any(line.startswith("inv.yaml: port: unknown key") for line in lines)
    assert any(line.startswith("inv.yaml: user:") for line in lines)
    assert any(line.startswith("inv.yaml: hosts.db1:") and "not a host name" in line for line in lines)
    assert any(line.startswith("inv.yaml: hosts.db2: must be a string") for line in lines)
    assert any(line.startswith("inv.yaml: hosts.db4: same address as db3") for line in lines)
    assert all("\n" not in line for line in lines)


@pytest.mark.parametrize(("text", "problem"), [
    ("", "hosts: missing"),
    ("hosts: []\n", "non-empty mapping"),
    ("- a\n", "expected a mapping"),
    ("hosts:\n  db1: a\n  db1: b\n", "given twice"),
])
def test_inventory_files_that_are_not_an_inventory_are_refused(tmp_path, text, problem):
    path = tmp_path / "inv.yaml"
    path.write_text(text)
    with pytest.raises(GoldenError, match=problem):
        load_inventory(path)


def test_inventory_must_name_exactly_the_cluster_hosts():
    inv = parse_inventory({"hosts": {"db1": "10.0.0.1", "web9": "10.0.0.9"}}, "inv.yaml")
    with pytest.raises(InventoryErrors) as err:
        match_cluster(inv, ["db1", "db2"])
    assert err.value.lines == [
        "inv.yaml: hosts.db2: missing: the cluster file has host db2",
        "inv.yaml: hosts.web9: not a host of the cluster file (hosts: db1, db2)",
    ]


# --- ssh argv --------------------------------------------------------------------------------------------

def _opts(argv: list[str]) -> dict[str, str]:
    return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-o")


def test_ssh_argv_is_batch_mode_with_timeouts_strict_host_keys_and_the_port_apart(tmp_path):
    options = SSHOptions(identity=tmp_path / "key", known_hosts=tmp_path / "known_hosts")
    with SSHTransport(SSHTarget("203.0.113.10", "root", 2222), options) as transport:
        argv = transport.ssh_argv(["cat", "/etc/os-release"])
    opts = _opts(argv)
    assert opts["BatchMode"] == "yes" and opts["StrictHostKeyChecking"] == "yes"
    assert int(opts["ConnectTimeout"]) > 0 and int(opts["ServerAliveInterval"]) > 0
    assert opts["UserKnownHostsFile"] == str(tmp_path / "known_hosts")
    assert opts["IdentitiesOnly"] == "yes" and argv[argv.index("-i") + 1] == str(tmp_path / "key")
    assert argv[argv.index("-p") + 1] == "2222"
    assert argv[-3:] == ["--", "root@203.0.113.10", "cat /etc/os-release"]


def test_accept_new_trusts_only_first_seen_keys():
    with SSHTransport(SSHTarget("h"), SSHOptions(accept_new=True)) as transport:
        assert _opts(transport.ssh_argv(["true"]))["StrictHostKeyChecking"] == "accept-new"


def test_commands_go_through_sudo_n_unless_the_user_is_root():
    with SSHTransport(SSHTarget("h", "debian")) as transport:
        assert transport.ssh_argv(["rm", "-rf", "--", "/tmp/x y"])[-1] == "sudo -n -- rm -rf -- '/tmp/x y'"
        assert transport.ssh_argv(["mktemp", "-d"], root=False)[-1] == "mktemp -d"
    with SSHTransport(SSHTarget("h", "root")) as transport:
        assert transport.ssh_argv(["id", "-u"])[-1] == "id -u"


def test_remote_command_quotes_every_word_for_the_remote_shell():
    words = ["sh", "-c", "echo $HOME; rm -rf /"]
    assert shlex.split(remote_command(words, sudo=False)) == words


def test_scp_puts_an_ipv6_host_in_brackets_and_the_port_in_capital_p(tmp_path):
    with SSHTransport(SSHTarget("2001:db8::1", "debian", 2200)) as transport:
        argv = transport.scp_argv([tmp_path / "a"], "/tmp/golden-apply.x")
    assert argv[0] == "scp" and argv[argv.index("-P") + 1] == "2200"
    assert argv[-1] == "debian@[2001:db8::1]:/tmp/golden-apply.x/"


# --- release detection and converge output ---------------------------------------------------------------

def test_host_release_comes_from_os_release():
    assert host_release(OS_RELEASE[11], "h") == 11
    assert host_release('ID=debian\nVERSION_CODENAME=trixie\n', "h") == 13
    with pytest.raises(GoldenError, match="not Debian"):
        host_release('ID=ubuntu\nPRETTY_NAME="Ubuntu 24.04"\n', "h")
    with pytest.raises(GoldenError, match="not a release"):
        host_release('ID=debian\nVERSION_ID="9"\nVERSION_CODENAME=stretch\n', "h")


def _converge_json(changes: list[str], changed: int, unchanged: int, failure: dict | None = None) -> str:
    """What the agent's `converge --json` prints, made by the agent's own code."""
    from golden_firstboot.converge import result
    from golden_firstboot.converge_host import Report

    report = Report(check=False)
    report.lines, report.changed, report.unchanged = list(changes), changed, unchanged
    data = result(report)
    data["failure"] = failure
    return json.dumps(data) + "\n"


def test_converge_json_gives_changes_and_counts():
    from golden_firstboot.converge import result
    from golden_firstboot.converge_host import Report
    from golden_firstboot.system import CommandError

    report = Report(check=True)
    report.change("file /etc/a")
    report.same("package x")
    assert parse_converge("noise before\n" + json.dumps(result(report)) + "\n") == (
        ["would change: file /etc/a"], 1, 1)
    failed = result(report, CommandError("systemctl enable chrony", 1, "Unit chrony.service does not exist."))
    assert failed["failure"] == {"message": "command failed (exit 1): systemctl enable chrony", "hint": "",
                                 "command": "systemctl enable chrony", "exit": 1,
                                 "stderr_tail": ["Unit chrony.service does not exist."]}
    with pytest.raises(GoldenError, match="no JSON result"):
        parse_converge("Traceback ...\n")


# --- the apply flow against a fake host ------------------------------------------------------------------

class FakeHost:
    """A transport to a pretend host: answers the commands apply runs, records them and the files shipped."""

    def __init__(self, target: SSHTarget, release: int = 12, converge: str = _converge_json([], 0, 3),
                 agent_rc: int = 0, unreachable: bool = False, converge_rc: int = 0, stale: str = "") -> None:
        self.target = target
        self.release = release
        self.converge = converge
        self.agent_rc = agent_rc
        self.unreachable = unreachable
        self.converge_rc = converge_rc
        self.stale = stale
        self.commands: list[tuple[list[str], bool]] = []
        self.shipped: dict[str, str | bytes] = {}
        self.closed = False
        self.cancelled = threading.Event()
        self.cleanups: list[list[str]] = []
        #: called with the converge's argv before it answers (a test interrupts the run there)
        self.on_converge: Callable[[FakeHost], None] | None = None

    def run(self, argv: Sequence[str], *, root: bool = True, timeout: float = 120.0, check: bool = True,
            secrets: Iterable[str] = (), cleanup: bool = False) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.commands.append((argv, root))
        if cleanup:
            self.cleanups.append(argv)
        elif self.cancelled.is_set():
            raise GoldenError(f"{self.target}: interrupted")
        if self.unreachable:
            raise GoldenError(f"{self.target}: SSH failed: Connection refused")
        out, err, rc = "", "", 0
        if argv[:2] == ["sh", "-c"] and "os-release" in argv[2]:
            out = OS_RELEASE[self.release] + "python=3.11\n"
        elif argv[:3] == ["sh", "-c", STALE_CLEANUP]:
            out = self.stale
        elif argv[0] == "mktemp":
            out = "/tmp/golden-apply.abcd1234\n"
        elif "converge" in argv:
            if self.on_converge is not None:
                self.on_converge(self)
            out, rc = self.converge, self.converge_rc
            if rc:
                err = "golden-firstboot: error: command failed (exit 1): systemctl enable chrony\n"
        elif "--rerun" in argv:
            rc = self.agent_rc
            self.settings_seen = json.loads(str(self.shipped.get(argv[-1], "null"))) if "--host-settings" in argv \
                else None
            steps: dict = {
                "web.snakeoil": {"state": "done", "changed": True, "description": "snakeoil"},
                "web.health": {"state": "done", "changed": False},
                "lb.haproxy": {"state": "skipped"}}
            if "--check" in argv:
                steps = {"web.vhosts": {"state": "planned", "changed": True,
                                        "changes": ["/etc/apache2/sites-available/golden-a.conf: differs"]},
                         "web.health": {"state": "planned", "changed": False, "changes": []},
                         "web.nfs-mount": {"state": "unplanned"}}
            data: dict = {"result": "checked" if "--check" in argv else "done", "steps": steps, "failure": None}
            if rc:
                data["result"] = "failed"
                data["steps"]["mariadb.primary"] = {"state": "failed", "error": "x"}
                data["failure"] = {"step": "mariadb.primary", "message": "password s3cr3t-pw refused", "hint": "",
                                   "command": "mysql -e 'CREATE USER'", "exit": 1,
                                   "stderr_tail": ["ERROR 1045: s3cr3t-pw denied", "the last line"]}
                err = "golden-firstboot: error: step mariadb.primary failed: password s3cr3t-pw refused\n"
            out = json.dumps(data) + "\n"
        return subprocess.CompletedProcess(argv, rc, out, err)

    def put(self, files: Sequence[Path], remote_dir: str, *, timeout: float = 120.0) -> None:
        for f in files:
            self.shipped[f"{remote_dir}/{f.name}"] = f.read_bytes() if f.suffix == ".pyz" else f.read_text()

    def cancel(self) -> None:
        self.cancelled.set()

    def close(self) -> None:
        self.closed = True

    def ran(self, word: str) -> list[list[str]]:
        return [argv for argv, _ in self.commands if word in argv]


def test_apply_renders_for_the_hosts_release_converges_then_runs_the_role_steps():
    host = FakeHost(SSHTarget("h", "debian"), release=11,
                    converge=_converge_json(["package apache2: installed", "file /etc/x: written"], 2, 30))
    report = apply_host("h", "web", host, settings={"address": "10.0.0.5"})
    assert report.ok and report.release == 11
    assert report.changes == ["package apache2: installed", "file /etc/x: written", "role step web.snakeoil: snakeoil"]
    assert (report.changed, report.unchanged) == (3, 31)
    user_data = yaml.safe_load(host.shipped["/tmp/golden-apply.abcd1234/user-data"])
    assert "php7.4-fpm" in user_data["packages"] and " bullseye " in user_data["apt"]["sources_list"]
    assert "golden-build" not in [u["name"] for u in user_data["users"]]
    assert json.loads(host.shipped["/tmp/golden-apply.abcd1234/host.json"]) == {"address": "10.0.0.5"}
    assert host.shipped["/tmp/golden-apply.abcd1234/golden-firstboot.pyz"][:2] == b"#!"
    converge, = host.ran("converge")
    assert converge[:2] == ["python3", "/tmp/golden-apply.abcd1234/golden-firstboot.pyz"] and "--check" not in converge
    run, = host.ran("run")
    assert run[-5:] == ["run", "--rerun", "--json", "--host-settings", "/tmp/golden-apply.abcd1234/host.json"]
    from golden_firstboot.__main__ import parser  # the agent reads these as a rerun with the settings file

    assert parser().parse_args(run[2:]).rerun is True
    # the probe and mktemp run as the login user; everything else as root; the temporary directory goes
    assert [root for argv, root in host.commands if argv[0] == "mktemp" or "os-release" in argv[-1]] == [False, False]
    assert host.commands[-1] == (["rm", "-rf", "--", "/tmp/golden-apply.abcd1234"], True)


def test_directories_left_by_killed_applies_are_removed_unless_a_process_still_uses_them(tmp_path):
    """The cleanup script itself, run here: a stale directory goes (with its host.json), one an agent still runs
    from stays, and so do this apply's own, a symbolic link with a matching name and what it points to."""
    import getpass
    import sys
    import time

    dirs = {name: tmp_path / f"golden-apply.{name}" for name in ("Stale123", "InUse456", "Own78901")}
    for path in dirs.values():
        path.mkdir(mode=0o700)
        (path / "host.json").write_text('{"replication_password": "pw"}')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("x")
    (tmp_path / "golden-apply.Link0000").symlink_to(elsewhere)
    # a process whose command line names the directory, as the agent's does
    agent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                              f"{dirs['InUse456']}/golden-firstboot.pyz", "converge"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and f"{dirs['InUse456']}/".encode() not in \
                Path(f"/proc/{agent.pid}/cmdline").read_bytes():
            time.sleep(0.1)
        proc = subprocess.run(["sh", "-c", STALE_CLEANUP, "sh", str(tmp_path), "golden-apply.*", getpass.getuser(),
                               str(dirs["Own78901"])], capture_output=True, text=True, timeout=60, check=True)
    finally:
        agent.kill()
        agent.wait()
    assert proc.stdout.splitlines() == [str(dirs["Stale123"])]
    assert not dirs["Stale123"].exists()
    assert dirs["InUse456"].is_dir() and dirs["Own78901"].is_dir()
    assert (tmp_path / "golden-apply.Link0000").is_symlink() and (elsewhere / "keep").exists()


def test_a_stale_directory_removed_is_a_note_not_a_change_and_runs_as_root():
    host = FakeHost(SSHTarget("h", "debian"), stale="/tmp/golden-apply.OLD00000\n")
    report = apply_host("h", "web", host)
    assert report.changes[0] == "note: removed /tmp/golden-apply.OLD00000 (left by an interrupted apply)"
    assert report.changed == apply_host("h", "web", FakeHost(SSHTarget("h", "debian"))).changed
    cleanup, = [(argv, root) for argv, root in host.commands if argv[:3] == ["sh", "-c", STALE_CLEANUP]]
    # only the login user's directories, never this apply's own
    assert cleanup == (["sh", "-c", STALE_CLEANUP, "sh", "/tmp", "golden-apply.*", "debian",
                        "/tmp/golden-apply.abcd1234"], True)


def test_never_image_only_steps_in_what_apply_converges():
    host = FakeHost(SSHTarget("h"))
    apply_host("h", "web", host)
    text = host.shipped["/tmp/golden-apply.abcd1234/user-data"]
    for image_only in ("cloud-init clean", "machine-id", "ssh_host_", "golden-build"):
        assert image_only not in text


def test_check_plans_the_role_steps_too_and_installs_no_settings():
    host = FakeHost(SSHTarget("h"), converge=_converge_json(["file /etc/x: differs"], 1, 9))
    report = apply_host("h", "web", host, check=True, settings={"mariadb": {"replication_password": "pw"}})
    assert report.ok and report.changes == [
        "file /etc/x: differs",
        "role step web.vhosts: would change: /etc/apache2/sites-available/golden-a.conf: differs",
        "note: role step web.nfs-mount: not checked (it has no plan yet; a run converges it)"]
    assert (report.changed, report.unchanged) == (2, 10)
    assert report.summary(check=True) == "h: would change: 2, unchanged: 10"
    assert "--check" in host.ran("converge")[0]
    run, = host.ran("run")
    assert "--check" in run and "--json" in run
    from golden_firstboot.__main__ import parser  # the agent reads --check as a check (it installs no host.json)

    assert parser().parse_args(run[2:]).check is True


def test_a_converge_that_stops_reports_what_it_changed_and_why_and_runs_no_role_steps():
    failure = {"message": "command failed (exit 1): systemctl enable chrony", "hint": "",
               "command": "systemctl enable chrony", "exit": 1,
               "stderr_tail": ["Failed to enable unit: Unit file chrony.service does not exist."]}
    host = FakeHost(SSHTarget("h"), converge=_converge_json(["changed: file /etc/apt/sources.list (content)"], 1, 0,
                                                            failure), converge_rc=1)
    report = apply_host("h", "web", host)
    assert report.changes == ["changed: file /etc/apt/sources.list (content)"]
    assert report.error.startswith("converge failed (exit 1): command failed")
    assert report.detail == ["command (exit 1): systemctl enable chrony",
                             "| Failed to enable unit: Unit file chrony.service does not exist."]
    assert not host.ran("run") and host.commands[-1][0][:2] == ["rm", "-rf"]


def test_failed_role_steps_reach_the_summary_with_command_and_stderr_tail_without_secrets():
    host = FakeHost(SSHTarget("h"), agent_rc=1)
    report = apply_host("h", "sql-primary", host, settings={"mariadb": {"replication_password": "s3cr3t-pw"}})
    assert not report.ok and report.error.startswith("role steps failed (exit 1): step mariadb.primary: ")
    assert "s3cr3t-pw" not in report.error and "***" in report.error
    assert report.summary_lines() == [
        "h: FAILED: role steps failed (exit 1): step mariadb.primary: password *** refused",
        "  command (exit 1): mysql -e 'CREATE USER'", "  | ERROR 1045: *** denied", "  | the last line"]
    assert host.commands[-1][0][:2] == ["rm", "-rf"]
    lines, status = cluster_summary([report])
    assert status == 1 and lines[1:4] == report.summary_lines()[1:]


def test_host_settings_that_break_the_agents_contract_are_refused_before_anything_is_sent():
    host = FakeHost(SSHTarget("h"))
    report = apply_host("h", "web", host, settings={"address": "10.0.0.5", "web": {"vhost": []}})
    assert not report.ok and "web.vhost: unknown key" in report.error
    assert host.commands == [] and host.shipped == {}


def test_apply_cli_refuses_a_host_settings_file_the_agent_would_refuse(tmp_path, capsys):
    path = tmp_path / "host.json"
    path.write_text(json.dumps({"mariadb": {"server_id": "two", "replication_password": "s3cr3t"}}))
    assert main(["apply", "web", "--host", "root@203.0.113.10", "--host-settings", str(path)]) == 2
    err = capsys.readouterr().err
    assert "mariadb.server_id: expected an integer, got 'two'" in err and "s3cr3t" not in err


def _cluster(tmp_path: Path) -> Path:
    spec = yaml.safe_load((EXAMPLES / "cluster-sql.yaml").read_text())
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_one_unreachable_host_fails_alone_and_is_named_in_the_summary(tmp_path):
    cluster = _cluster(tmp_path)
    (tmp_path / "inv.yaml").write_text("user: debian\nhosts: {db1: 127.0.0.1:2201, db2: 127.0.0.1:2202}\n")
    made: dict[str, FakeHost] = {}

    def factory(target: SSHTarget, options: SSHOptions) -> FakeHost:
        host = FakeHost(target, unreachable=target.port == 2201)
        made[str(target.port)] = host
        return host

    reports = apply_cluster(cluster, tmp_path / "inv.yaml", out_dir=tmp_path / "out", options=SSHOptions(),
                            factory=factory, console=Console(file=open("/dev/null", "w")))
    assert [r.name for r in reports] == ["db1", "db2"]
    assert not reports[0].ok and "Connection refused" in reports[0].error
    assert reports[1].ok and made["2202"].ran("run") and all(h.closed for h in made.values())
    # each host got its own settings from the cluster: the replica follows db1's cluster address
    shipped = json.loads(made["2202"].shipped["/tmp/golden-apply.abcd1234/host.json"])
    assert shipped["mariadb"]["primary"] == "10.10.0.11" and shipped["address"] == "10.10.0.12"
    lines, status = cluster_summary(reports)
    assert status == 1 and lines[-1].endswith("failed: db1") and lines[0].startswith("db1: FAILED:")
    # the secrets are kept beside the rendering: the next apply gives the hosts the same ones
    first = json.loads((tmp_path / "out" / "secrets.json").read_text())
    apply_cluster(cluster, tmp_path / "inv.yaml", out_dir=tmp_path / "out", options=SSHOptions(), factory=factory,
                  console=Console(file=open("/dev/null", "w")))
    assert json.loads((tmp_path / "out" / "secrets.json").read_text()) == first


def test_an_interrupted_cluster_apply_stops_its_hosts_which_remove_their_directories(tmp_path):
    """Ctrl-C (or SIGTERM, which the CLI turns into the same) while a host converges: that host's commands are
    cancelled and it removes its temporary directory; a host not started yet never starts; then the interrupt
    goes on up."""
    cluster = _cluster(tmp_path)
    (tmp_path / "inv.yaml").write_text("user: debian\nhosts: {db1: 127.0.0.1:2201, db2: 127.0.0.1:2202}\n")
    made: dict[str, FakeHost] = {}

    def interrupt_then_wait(host: FakeHost) -> None:
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        if host.cancelled.wait(timeout=20):
            raise GoldenError(f"{host.target}: interrupted")  # what the real transport raises once cancelled

    def factory(target: SSHTarget, options: SSHOptions) -> FakeHost:
        host = FakeHost(target)
        if target.port == 2201:
            host.on_converge = interrupt_then_wait
        made[str(target.port)] = host
        return host

    # SIGINT's own handler: a test run started in a shell's background inherits SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            apply_cluster(cluster, tmp_path / "inv.yaml", out_dir=tmp_path / "out", options=SSHOptions(),
                          factory=factory, parallel=1, console=Console(file=open("/dev/null", "w")))
    finally:
        signal.signal(signal.SIGINT, previous)
    db1 = made["2201"]
    assert db1.cancelled.is_set() and not db1.ran("run")
    assert db1.cleanups == [["rm", "-rf", "--", "/tmp/golden-apply.abcd1234"]] and db1.closed
    assert "2202" not in made  # queued behind db1 (--parallel 1): never started


def test_a_cancelled_transport_refuses_commands_but_cleanups_and_stops_its_connection_only_when_busy(
        tmp_path, monkeypatch):
    calls: list[list[str]] = []

    def fake_run(argv, **kwargs):
        calls.append([str(a) for a in argv])
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr("goldenimage.apply.transport.run", fake_run)
    with SSHTransport(SSHTarget("h", "debian"), SSHOptions()) as transport:
        transport._control.touch()  # as if a shared connection were up
        transport.cancel()
        assert not any("-O" in argv for argv in calls)  # nothing was running: nothing to stop
        with pytest.raises(GoldenError, match="interrupted"):
            transport.run(["python3", "agent.pyz", "converge"])
        with pytest.raises(GoldenError, match="interrupted"):
            transport.put([tmp_path / "x"], "/tmp/d")
        assert calls == []
        transport.run(["rm", "-rf", "--", "/tmp/golden-apply.x"], cleanup=True)
        assert calls[-1][-1] == "sudo -n -- rm -rf -- /tmp/golden-apply.x"
        # a command under way when cancel() comes: the shared connection is stopped (which ends it)
        transport.cancelled = False
        with transport._busy_unless(False):
            transport.cancel()
        assert calls[-1][calls[-1].index("-O") + 1] == "exit"


def test_cluster_apply_with_a_bad_inventory_is_exit_2_before_any_host(tmp_path, capsys):
    cluster = _cluster(tmp_path)
    (tmp_path / "inv.yaml").write_text("hosts: {db1: 'bad host'}\n")
    assert main(["cluster", "apply", str(cluster), "--inventory", str(tmp_path / "inv.yaml"),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "hosts.db1" in err and "not a host name" in err
    assert not (tmp_path / "out").exists()


def test_apply_with_a_bad_host_is_exit_2(capsys):
    assert main(["apply", "web", "--host", "root@-oProxyCommand=x"]) == 2
    assert "--host" in capsys.readouterr().err


def test_agent_takes_host_settings_from_a_file_and_keeps_a_root_only_copy(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "firstboot"))
    from golden_firstboot.__main__ import context

    root = tmp_path / "root"
    (root / "etc/golden").mkdir(parents=True)
    (root / "etc/golden/image.json").write_text(json.dumps({"profile": "web", "roles": ["web"]}))
    source = tmp_path / "host.json"
    source.write_text(json.dumps({"address": "10.0.0.5", "mariadb": {"replication_password": "pw"}}))
    ctx = context(str(root), str(source))
    assert ctx.settings["address"] == "10.0.0.5" and ctx.secrets == ["pw"]
    copy = root / "etc/golden/host.json"
    assert json.loads(copy.read_text()) == json.loads(source.read_text())
    assert copy.stat().st_mode & 0o777 == 0o600
