"""The contract between `golden` and the agent: host.json's schema (owned by the agent, checked at both ends),
the agent's JSON results (a failure with its command and stderr tail), and `run --check`, where the role steps
plan and change nothing."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from goldenimage.core import agent_contract
from goldenimage.render.cluster import plan
from tests.conftest import EXAMPLES
from tests.unit.firstboot_fake import FakeHost, fixture_names, load_fixture, make_root, run_scenario

from golden_firstboot import agent, host_schema  # isort: skip  (on sys.path through firstboot_fake)
from golden_firstboot.__main__ import main as agent_main  # isort: skip
from golden_firstboot.steps import Step  # isort: skip
from golden_firstboot.system import CommandError  # isort: skip


def test_golden_reads_the_agents_own_contract():
    assert agent_contract.secret_words() == host_schema.SECRET_WORDS
    assert agent_contract.host_errors({"address": 5}) == ["address: expected a string, got 5"]
    assert agent_contract.redact("pw=abc abcdef", ["abc", "abcdef"]) == "pw=*** ***"


@pytest.mark.parametrize("name", fixture_names())
def test_every_agent_fixture_host_json_matches_the_contract(name):
    assert host_schema.validate(load_fixture(name).get("host") or {}) == []


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("cluster*.yaml")), ids=lambda p: p.name)
def test_every_example_clusters_host_json_matches_the_contract(example, tmp_path):
    hosts, _, _ = plan(example, tmp_path / "out", environ={})
    assert hosts and all(host_schema.validate(h.settings) == [] for h in hosts)


def test_mismatches_are_named_by_dotted_key_all_at_once_and_secrets_are_never_quoted():
    errors = host_schema.validate({
        "mariadb": {"server_id": True, "users": [{"name": "a", "password": 7}], "replication_password": ["s3cr3t"]},
        "backups": {}, "web": {"vhosts": "www"}, "galera": {"tls": "s3cr3t-pem"}, "lb": {"max_servers": 1.5}})
    assert errors == [
        "mariadb.server_id: expected an integer, got True",
        "mariadb.users[0].password: expected a string, got 7",
        "mariadb.replication_password: expected a string, got a list",
        "backups: unknown key (known: address, backup, firstboot, galera, hardened, hostname, lb, mariadb, monitoring, "
        "network, nfs, plesk, web)",
        "web.vhosts: expected a list, got 'www'",
        "lb.max_servers: expected an integer, got 1.5",
    ]


def test_a_new_feature_adds_its_host_data_as_one_entry(monkeypatch):
    monkeypatch.setitem(host_schema.SECTIONS, "backups", {"repository": str, "keep_daily": int})
    assert host_schema.validate({"backups": {"repository": "s3://b", "keep_daily": 7}}) == []
    assert host_schema.validate({"backups": {"keep_daily": "7"}}) == ["backups.keep_daily: expected an integer, "
                                                                      "got '7'"]


def test_the_agent_refuses_a_host_json_that_breaks_the_contract_in_one_line(tmp_path, capsys):
    scenario = load_fixture("web")
    scenario["host"]["web"]["vhost"] = []
    make_root(str(tmp_path), scenario)
    assert agent_main(["--root", str(tmp_path), "run"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == ("golden-firstboot: error: /etc/golden/host.json: does not match the agent's host.json contract: "
                      "web.vhost: unknown key (known: document_root, health_path, lb, nfs, vhosts)")
    assert not (tmp_path / "var/lib/golden/firstboot.json").exists()


@pytest.mark.parametrize("argv", [["--rerun"], []], ids=["--rerun", "no-command"])
def test_the_agent_with_no_command_runs_as_run_does(tmp_path, capsys, argv):
    """`golden-firstboot --rerun` (README, the web suite) is `run`: the top parser has no --check or --json."""
    scenario = load_fixture("web")
    scenario["host"]["web"]["vhost"] = []
    make_root(str(tmp_path), scenario)
    assert agent_main(["--root", str(tmp_path), *argv]) == 2  # refused by the contract, as `run` is
    assert "does not match the agent's host.json contract" in capsys.readouterr().err


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() + oct(p.stat().st_mode)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_check_on_a_drifted_web_host_lists_the_role_steps_changes_and_changes_nothing(tmp_path):
    scenario = load_fixture("web")
    assert run_scenario(scenario, str(tmp_path), runs=1)["runs"][0]["exit"] == 0
    site = tmp_path / "etc/apache2/sites-available/golden-www.example.com.conf"
    site.write_text(site.read_text().replace("AllowOverride All", "AllowOverride None"))  # drift
    fake = FakeHost(str(tmp_path), dict(scenario["facts"], active=["php8.2-fpm", "golden-share-watch"],
                                                  enabled=["apache2"]))  # apache2 stopped
    (tmp_path / "proc/mounts").write_text("10.10.0.30:/srv/nfs/www /var/www/html nfs rw 0 0\n")
    before = _tree_digest(tmp_path)
    status = agent.Status(str(tmp_path), persist=False)
    assert agent.run(fake.context(scenario["image"], scenario["host"], check=True), status=status) == 0
    steps = status.data["steps"]
    assert status.data["result"] == "checked"
    assert steps["web.vhosts"]["state"] == "planned"
    assert steps["web.vhosts"]["changes"] == ["/etc/apache2/sites-available/golden-www.example.com.conf: differs"]
    assert steps["web.health"]["changes"] == ["start apache2.service (it is inactive (dead))"]
    assert steps["web.nfs-mount"]["changes"] == [] and steps["web.snakeoil"]["changes"] == []
    assert _tree_digest(tmp_path) == before  # nothing written: not the site, not the status file
    assert all(c.startswith("systemctl show ") for c in fake.commands), fake.commands


def test_a_step_with_a_plan_acts_only_when_its_plan_is_not_empty(tmp_path):
    acted = []
    item = Step("x.y", lambda ctx: acted.append(1) or True)
    item.planner(lambda ctx: [])
    fake = FakeHost(str(tmp_path), {})
    ctx = fake.context({"roles": []}, {})
    assert item.apply(ctx) is False and acted == []
    item.planner(lambda ctx: ["write /etc/x"])
    assert item.apply(ctx) is True and acted == [1]


def test_a_failed_step_reports_its_command_and_stderr_tail_in_json(tmp_path, capsys):
    scenario = load_fixture("sql-replica")
    make_root(str(tmp_path), scenario)
    image = scenario["image"]

    class Failing(FakeHost):
        def execute(self, args, input, env, stdin_path, stdout_path, timeout):
            if args and args[0] == "mysql" and stdin_path:
                return self.result(1, "", "ERROR 1062 (23000) at line 3: Duplicate entry\nthe last line")
            return super().execute(args, input, env, stdin_path, stdout_path, timeout)

        @staticmethod
        def result(code, out, err):
            from golden_firstboot.system import Result

            return Result(code, out, err)

    fake = Failing(str(tmp_path), scenario.get("facts") or {})
    status = agent.Status(str(tmp_path))
    code = agent.run(fake.context(image, scenario["host"]), status=status)
    failure = status.data["failure"]
    assert code == 1 and failure["step"] == "sql-replica.seed", status.data
    assert failure["command"].startswith("mysql") and failure["command"].endswith("/var/lib/golden/replica-seed.sql")
    assert failure["stderr_tail"] == ["ERROR 1062 (23000) at line 3: Duplicate entry", "the last line"]
    saved = json.loads((tmp_path / "var/lib/golden/firstboot.json").read_text())
    assert saved["steps"]["sql-replica.seed"]["failure"]["exit"] == 1


def test_a_retry_that_gives_up_keeps_the_commands_detail():
    from golden_firstboot.system import RetryExhausted, failure_fields

    try:
        try:
            raise CommandError("mount /var/www/html", 32, "mount.nfs: Connection refused")
        except CommandError as exc:
            raise RetryExhausted("gave up mounting") from exc
    except RetryExhausted as exc:
        fields = failure_fields(exc)
    assert fields["command"] == "mount /var/www/html" and fields["stderr_tail"] == ["mount.nfs: Connection refused"]


def test_run_json_prints_the_result_on_stdout(tmp_path, capsys):
    scenario = load_fixture("nfs")
    make_root(str(tmp_path), scenario)
    code = agent_main(["--root", str(tmp_path), "run", "--check", "--json"])
    out = capsys.readouterr().out
    data = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and data["result"] == "checked" and "nfs.exports" in data["steps"]
    assert not (tmp_path / "var/lib/golden/firstboot.json").exists()


def _orphan_after_the_agent_is_killed(tmp_path: Path, die_with_agent: bool) -> bool:
    """Run `sleep 120` through the agent's Runner in a process of its own, SIGKILL that process (as an interrupted
    `golden apply` does to the agent), then whether the sleep is still alive 10 s later."""
    import signal
    import subprocess
    import sys
    import time

    marker = tmp_path / "pid"
    code = (f"import sys, os; sys.path.insert(0, {str(Path(host_schema.__file__).parents[1])!r})\n"
            "from golden_firstboot.system import Runner\n"
            f"Runner(logger=lambda l: None, die_with_agent={die_with_agent}).run(['sh', '-c', "
            f"'echo $$ > {marker}; exec sleep 120'])\n")
    agent_proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while not (marker.exists() and marker.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.1)
        child = int(marker.read_text())
        agent_proc.kill()
        agent_proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return False
            if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
                return False
            time.sleep(0.1)
        os.kill(child, signal.SIGKILL)
        return True
    finally:
        agent_proc.kill()
        agent_proc.wait()


def test_a_role_steps_command_never_outlives_a_killed_agent(tmp_path):
    """The replica's seed import left running by a killed agent would meet the rerun's own import: two imports of
    one dump at once exit 1 (seen with two real MariaDB servers here: ERROR 1146, mysql.column_stats doesn't exist)."""
    assert _orphan_after_the_agent_is_killed(tmp_path, die_with_agent=True) is False


def test_the_converge_engines_commands_are_left_to_finish(tmp_path):
    assert _orphan_after_the_agent_is_killed(tmp_path, die_with_agent=False) is True
