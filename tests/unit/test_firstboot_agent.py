"""The first-boot agent against a fake host: facts in (fixtures/firstboot/*.json), commands out.

After an intended change, `GOLDEN_UPDATE_SNAPSHOTS=1 make test-fast` rewrites each fixture's `expected`."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.unit.firstboot_fake import FIXTURES, FakeHost, fixture_names, load_fixture, make_root, run_scenario

from golden_firstboot import agent  # isort: skip  (on sys.path through firstboot_fake)
from golden_firstboot.roles import hardened, lb, nfs, plesk  # isort: skip
from golden_firstboot.system import FirstbootError, RetryPolicy, RetryExhausted, SettingsError, retry  # isort: skip

SECRETS = ["Repl-S3cret-pw", "Shop-S3cret-pw", "Vrrp-S3cret-pw", "Plesk-S3cret-pw", "PLSK.12345678.0001"]


def _steps(run: dict) -> dict:
    return run["steps"]


@pytest.mark.parametrize("name", fixture_names())
def test_fixture_commands_match_and_second_run_changes_nothing(name, tmp_path):
    scenario = load_fixture(name)
    result = run_scenario(scenario, str(tmp_path))
    first, second = result["runs"]
    if os.environ.get("GOLDEN_UPDATE_SNAPSHOTS"):
        scenario["expected"] = result["runs"]
        Path(FIXTURES, name + ".json").write_text(json.dumps(scenario, indent=1) + "\n")
    assert first["exit"] == 0, result["log"]
    assert all(state == "done" for state, _ in _steps(first).values() if state != "skipped")
    assert any(changed for _, changed in _steps(first).values())
    # Idempotence: the rerun only reads, every step reports no change.
    assert second["exit"] == 0
    assert [k for k, (state, changed) in _steps(second).items() if state == "done" and changed] == []
    assert result["runs"] == scenario["expected"]


def test_status_file_records_transitions_and_status_prints_them(tmp_path, capsys):
    result = run_scenario(load_fixture("sql-primary"), str(tmp_path), runs=1)
    data = json.loads((tmp_path / "var/lib/golden/firstboot.json").read_text())
    assert data["result"] == "done" and data["finished"]
    entry = data["steps"]["sql-primary.replication-user"]
    assert entry["state"] == "done" and entry["changed"] is True and entry["started"] and entry["finished"]
    assert "sql-replica.seed" not in data["steps"]  # another role's steps are not listed
    assert (tmp_path / "var/lib/golden/firstboot.done").exists()
    assert stat.S_IMODE((tmp_path / "var/lib/golden/firstboot.json").stat().st_mode) == 0o600
    text = agent.format_status(data)
    assert "first boot: done" in text and "sql-primary.users" in text and "changed" in text
    assert result["runs"][0]["exit"] == 0


def test_completed_first_boot_does_not_run_again_without_rerun(tmp_path):
    scenario = load_fixture("nfs")
    make_root(str(tmp_path), scenario)
    fake = FakeHost(str(tmp_path), scenario["facts"])
    assert agent.run(fake.context(scenario["image"], scenario["host"])) == 0
    fake.commands = []
    assert agent.run(fake.context(scenario["image"], scenario["host"])) == 0
    assert fake.commands == []
    assert any("already completed" in line for line in fake.lines)


def test_retry_budget_exhausted_exits_75_with_a_clear_message(tmp_path):
    scenario = load_fixture("sql-replica")
    scenario["facts"]["primary_down"] = True
    scenario["host"]["firstboot"] = {"retry_attempts": 4, "retry_delay": 1, "retry_max_delay": 2}
    result = run_scenario(scenario, str(tmp_path), runs=1)
    assert result["runs"][0]["exit"] == 75
    assert result["sleeps"] == [1, 2, 2]
    assert any("gave up waiting for primary 10.10.0.11:3306 after 4 attempts" in line for line in result["log"])
    assert any(line.startswith("hint:") and "--rerun" in line for line in result["log"])
    steps = result["runs"][0]["steps"]
    assert steps["sql-replica.wait-primary"][0] == "failed"
    assert steps["sql-replica.seed"][0] == "pending"
    assert not (tmp_path / "var/lib/golden/firstboot.done").exists()


def test_replica_without_primary_is_rejected_before_any_step_runs(tmp_path):
    scenario = load_fixture("sql-replica")
    del scenario["host"]["mariadb"]["primary"]
    result = run_scenario(scenario, str(tmp_path), runs=1)
    assert result["runs"][0]["exit"] == 2
    assert result["runs"][0]["commands"] == []
    error = [line for line in result["log"] if line.startswith("error:")][0]
    assert "mariadb.primary (for sql-replica.wait-primary)" in error and "/etc/golden/host.json" in error


def test_replica_never_touches_databases_it_did_not_seed(tmp_path):
    scenario = load_fixture("sql-replica")
    scenario["facts"]["databases"] = ["precious"]
    result = run_scenario(scenario, str(tmp_path), runs=1)
    assert result["runs"][0]["exit"] == 1
    assert not any("mariadb-dump" in c or "init-command" in c for c in result["runs"][0]["commands"])
    assert any("precious" in line and "not touching" in line for line in result["log"])


def test_replica_interrupted_after_import_only_sets_up_replication(tmp_path):
    scenario = load_fixture("sql-replica")
    scenario["facts"].update({"databases": ["shop"], "probe_failures": 0, "dump_failures": 0})
    scenario["files"] = {"var/lib/golden/sql-replica.seeded": "{}\n"}
    commands = run_scenario(scenario, str(tmp_path), runs=1)["runs"][0]["commands"]
    assert not any("mariadb-dump" in c or "init-command" in c for c in commands)
    assert any(c.startswith("mysql: CHANGE MASTER TO MASTER_HOST='10.10.0.11'") for c in commands)


def test_replica_interrupted_mid_import_reimports_the_complete_dump_without_dumping_again(tmp_path):
    scenario = load_fixture("sql-replica")
    scenario["facts"].update({"databases": ["shop"], "probe_failures": 0, "dump_failures": 0})
    scenario["files"] = {"var/lib/golden/sql-replica.seeding": "{}\n",
                         "var/lib/golden/replica-seed.sql": "SET GLOBAL gtid_slave_pos='0-1-42';\n-- Dump completed\n"}
    result = run_scenario(scenario, str(tmp_path), runs=1)
    commands = result["runs"][0]["commands"]
    assert result["runs"][0]["exit"] == 0
    assert not any(c.startswith("mariadb-dump") for c in commands)
    assert any("init-command" in c for c in commands)
    assert not (tmp_path / "var/lib/golden/replica-seed.sql").exists()


def seed_run(tmp_path, **facts) -> tuple[dict, int, int, int]:
    """One first boot of a replica whose primary is up, with `facts`: the result, its exit status, and how many
    dumps and imports it ran."""
    scenario = load_fixture("sql-replica")
    scenario["facts"].update({"probe_failures": 0, "dump_failures": 0, **facts})
    result = run_scenario(scenario, str(tmp_path), runs=1)
    commands = result["runs"][0]["commands"]
    return (result, result["runs"][0]["exit"], sum(c.startswith("mariadb-dump") for c in commands),
            sum("init-command" in c for c in commands))


def test_a_dump_the_replica_refuses_is_dumped_again_and_the_log_says_where_it_stopped(tmp_path):
    result, status, dumps, imports = seed_run(tmp_path, import_failures=1)
    assert (status, dumps, imports) == (0, 2, 2), result["log"]
    log = "\n".join(result["log"])
    assert "did not import (attempt 1 of 3): line 5 is 'CREATE DATABASE /*!32312 IF NOT EXISTS*/ `shop`;', in " \
           "database `shop`" in log, log
    assert not (tmp_path / "var/lib/golden/replica-seed.sql").exists()


def test_a_torn_dump_is_taken_again_before_any_import(tmp_path):
    """A database made on the primary between mariadb-dump's two lists (tables, then views) is only `USE`d."""
    result, status, dumps, imports = seed_run(tmp_path, torn_dumps=1)
    assert (status, dumps, imports) == (0, 2, 1), result["log"]
    assert any("uses database shop without creating it" in line for line in result["log"]), result["log"]


def test_a_dump_taken_before_the_replication_account_had_its_grants_is_taken_again(tmp_path):
    """Between the primary's CREATE USER and GRANT the account dumps a GTID position and nothing else."""
    result, status, dumps, imports = seed_run(tmp_path, grantless_dumps=1)
    assert (status, dumps, imports) == (0, 2, 1), result["log"]
    assert any("the dump holds no mysql schema: repl had no privileges yet" in line for line in result["log"])


def test_a_replica_whose_imports_keep_failing_fails_its_seed_step_without_a_dump_left(tmp_path):
    result, status, dumps, imports = seed_run(tmp_path, import_failures=5)
    assert (status, dumps, imports) == (1, 3, 3), result["log"]
    assert any("sql-replica.seed failed" in line and "Unknown database 'shop'" in line for line in result["log"])
    assert not (tmp_path / "var/lib/golden/replica-seed.sql").exists()


@pytest.mark.parametrize("name", fixture_names())
def test_secrets_never_appear_in_logged_commands_or_argv(name, tmp_path):
    result = run_scenario(load_fixture(name), str(tmp_path))
    logged = "\n".join(result["log"])
    argv = "\n".join(c for run in result["runs"] for c in run["commands"] if not c.startswith("mysql:"))
    for secret in SECRETS:
        assert secret not in logged
        if name != "plesk":  # the licence key is an argument of `plesk bin license` (redacted in the log)
            assert secret not in argv


def test_replica_password_reaches_mysql_through_stdin_and_an_option_file_only(tmp_path):
    result = run_scenario(load_fixture("sql-replica"), str(tmp_path), runs=1)
    assert any("MASTER_PASSWORD='Repl-S3cret-pw'" in text for text in result["inputs"])
    dump = [c for c in result["runs"][0]["commands"] if c.startswith("mariadb-dump")][0]
    assert "--defaults-extra-file=/var/lib/golden/replica-client.cnf" in dump and "--gtid" in dump
    assert "--master-data=1" in dump
    assert not (tmp_path / "var/lib/golden/replica-client.cnf").exists()


def test_plesk_commands_install_the_licence_and_keep_the_admin_password_out_of_argv():
    commands = plesk.plesk_commands({"license_key": "KEY-1", "admin_email": "a@example.com",
                                     "admin_password": "pw-1"})
    assert commands == [
        (["/usr/sbin/plesk", "bin", "ipmanage", "--reread"], None),
        (["/usr/sbin/plesk", "bin", "license", "--install", "KEY-1"], None),
        (["/usr/sbin/plesk", "bin", "init_conf", "--init", "-email", "a@example.com", "-name", "Administrator",
          "-passwd", ""], {"PSA_PASSWORD": "pw-1"}),
    ]
    assert plesk.plesk_commands({"license_key": "KEY-1"})[-1][0][3] == "--install"


def test_plesk_is_not_run_where_it_is_not_installed(tmp_path):
    scenario = load_fixture("plesk")
    scenario["files"] = {}
    result = run_scenario(scenario, str(tmp_path), runs=1)
    assert result["runs"][0]["exit"] == 1 and result["runs"][0]["commands"] == []
    assert any("Plesk is not installed" in line for line in result["log"])


def test_lb_config_has_health_checks_listed_servers_and_parked_slots():
    settings = load_fixture("lb")["host"]["lb"]
    settings.update({"health_path": "/healthz", "max_servers": 4})
    text = lb.render_haproxy(settings, {"web": {"dyn1": {"name": "web3", "address": "10.10.0.23", "port": 80}}})
    assert "frontend www\n    bind *:80\n    default_backend web\n" in text
    assert "    option httpchk GET /healthz\n    http-check expect status 200\n" in text
    assert "    server web1 10.10.0.21:80 check\n    server web2 10.10.0.22:80 check\n" in text
    assert "    server dyn1 10.10.0.23:80 check  # web3\n    server dyn2 127.0.0.1:80 check disabled\n" in text
    assert "dyn3" not in text


def test_lb_add_and_remove_use_the_runtime_api_and_survive_a_restart(tmp_path):
    scenario = load_fixture("lb")
    make_root(str(tmp_path), scenario)
    fake = FakeHost(str(tmp_path), scenario["facts"])
    ctx = fake.context(scenario["image"], scenario["host"])
    assert agent.run(ctx) == 0
    fake.commands = []
    assert lb.pool_add(ctx, "web3", "10.10.0.23") == "dyn1"
    assert lb.pool_add(ctx, "web3", "10.10.0.23") == "dyn1"  # again: same slot
    assert fake.runtime[:2] == ["set server web/dyn1 addr 10.10.0.23 port 80", "set server web/dyn1 state ready"]
    assert fake.commands == []  # no reload, no restart
    cfg = (tmp_path / "etc/haproxy/conf.d/golden-cluster.cfg").read_text()
    assert "server dyn1 10.10.0.23:80 check  # web3" in cfg
    assert lb.pool_remove(ctx, "web3") == "dyn1"
    assert fake.runtime[-2:] == ["set server web/dyn1 state maint", "set server web/dyn1 addr 127.0.0.1 port 80"]
    assert "server dyn1 127.0.0.1:80 check disabled" in (tmp_path / "etc/haproxy/conf.d/golden-cluster.cfg").read_text()


def with_https(settings):
    """The lb settings with the cluster's HTTPS pass-through: frontend www-tls, backend web-tls following web."""
    settings["frontends"].append({"name": "www-tls", "bind": "*:443", "backend": "web-tls", "mode": "tcp"})
    settings["backends"].append({"name": "web-tls", "mode": "tcp", "port": 443, "follows": "web",
                                 "servers": [dict(s, port=443) for s in settings["backends"][0]["servers"]]})
    return settings


def section(text, name):
    return text.split("\n" + name + "\n", 1)[1].split("\n\n", 1)[0].rstrip("\n")


def test_lb_passes_https_through_to_the_web_nodes_checked_on_443_and_the_http_health_endpoint():
    settings = with_https(load_fixture("lb")["host"]["lb"])
    settings.update({"health_path": "/healthz", "max_servers": 4})
    text = lb.render_haproxy(settings, {"web": {"dyn1": {"name": "web3", "address": "10.10.0.23", "port": 80}}})
    front = section(text, "frontend www-tls")
    assert front.splitlines() == ["    bind *:443", "    mode tcp", "    option tcplog", "    default_backend web-tls"]
    back = section(text, "backend web-tls")
    assert "    mode tcp\n    balance roundrobin\n    option tcp-check\n" in back
    # its own port must accept, then the HTTP pool's own check must pass: one sequence
    assert ("    tcp-check connect port 443\n    tcp-check connect port 80\n"
            "    tcp-check send GET\\ /healthz\\ HTTP/1.0\\r\\n\\r\\n\n"
            "    tcp-check expect rstring ^HTTP/1\\.[01]\\ 200\n") in back
    assert "backup" not in back and "timeout client" not in front + back  # all nodes active; default timeouts
    assert back.endswith("    server web1 10.10.0.21:443 check\n    server web2 10.10.0.22:443 check\n"
                         "    server dyn1 10.10.0.23:443 check  # web3\n    server dyn2 127.0.0.1:443 check disabled")
    assert "    server dyn1 10.10.0.23:80 check  # web3\n" in section(text, "backend web")


@pytest.mark.parametrize("change, message", [
    (lambda b: b.update(follows="nope"), r"lb.backends\[1\].follows: 'nope' is not an HTTP backend"),
    (lambda b: b.pop("mode"), r"lb.frontends\[1\].mode: 'tcp' differs from backend web-tls's 'http'"),
    (lambda b: b["servers"].pop(), r"lb.backends\[1\].servers: \['web1'\] are not backend web's servers"),
])
def test_a_pass_through_backend_that_does_not_match_its_http_backend_is_refused(change, message):
    settings = with_https(load_fixture("lb")["host"]["lb"])
    change(settings["backends"][1])
    with pytest.raises(SettingsError, match=message):
        lb._validate(settings)


def test_a_health_path_that_would_break_the_check_line_is_refused():
    settings = with_https(load_fixture("lb")["host"]["lb"])
    settings["health_path"] = "/healthz\\r\\nX: 1"
    with pytest.raises(SettingsError, match=r"lb.health_path: .* is not a plain URL path"):
        lb._validate(settings)


def test_lb_add_fills_the_same_slot_of_the_https_pool_on_443_and_lb_remove_parks_both(tmp_path):
    scenario = load_fixture("lb")
    with_https(scenario["host"]["lb"])
    make_root(str(tmp_path), scenario)
    fake = FakeHost(str(tmp_path), scenario["facts"])
    ctx = fake.context(scenario["image"], scenario["host"])
    assert agent.run(ctx) == 0
    assert lb.pool_add(ctx, "web3", "10.10.0.23") == "dyn1"
    assert fake.runtime[:4] == ["set server web/dyn1 addr 10.10.0.23 port 80", "set server web/dyn1 state ready",
                                "set server web-tls/dyn1 addr 10.10.0.23 port 443",
                                "set server web-tls/dyn1 state ready"]
    cfg = (tmp_path / "etc/haproxy/conf.d/golden-cluster.cfg").read_text()
    assert "server dyn1 10.10.0.23:443 check  # web3" in section(cfg, "backend web-tls")
    with pytest.raises(FirstbootError, match="backend web-tls follows backend web"):
        lb.pool_add(ctx, "web4", "10.10.0.24", backend_name="web-tls")
    assert lb.pool_remove(ctx, "web3") == "dyn1"
    assert fake.runtime[-4:] == ["set server web/dyn1 state maint", "set server web/dyn1 addr 127.0.0.1 port 80",
                                 "set server web-tls/dyn1 state maint",
                                 "set server web-tls/dyn1 addr 127.0.0.1 port 443"]
    assert "server dyn1 127.0.0.1:443 check disabled" in section(
        (tmp_path / "etc/haproxy/conf.d/golden-cluster.cfg").read_text(), "backend web-tls")


def test_keepalived_conf_holds_the_vrrp_password_readable_by_root_only(tmp_path):
    run_scenario(load_fixture("lb"), str(tmp_path), runs=1)
    conf = tmp_path / "etc/keepalived/keepalived.conf"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    text = conf.read_text()
    assert "auth_pass Vrrp-S3c" in text and "virtual_ipaddress {\n        10.10.0.5/24" in text
    assert "unicast_peer {\n        10.10.0.9" in text


def test_binlog_retention_follows_the_images_setting_and_a_change_restarts_mariadb(tmp_path):
    scenario = load_fixture("sql-primary")
    run_scenario(scenario, str(tmp_path), runs=1)
    cnf = tmp_path / "etc/mysql/mariadb.conf.d/61-golden-host.cnf"
    assert "expire_logs_days = 7\n" in cnf.read_text()  # sql-primary.yaml's default
    # an overlay's value (settings.mariadb in image.json) over the default: written, and MariaDB restarted
    scenario["image"]["settings"]["mariadb"]["binlog_expire_days"] = 30
    (tmp_path / "etc/golden/image.json").write_text(json.dumps(scenario["image"]))
    fake = FakeHost(str(tmp_path), scenario.get("facts") or {})
    assert agent.run(fake.context(scenario["image"], scenario["host"]), rerun=True) == 0
    assert "expire_logs_days = 30\n" in cnf.read_text()
    assert "systemctl restart mariadb.service" in fake.commands


def test_nfs_exports_are_limited_to_the_cluster_network(tmp_path):
    run_scenario(load_fixture("nfs"), str(tmp_path), runs=1)
    lines = (tmp_path / "etc/exports.d/golden.exports").read_text().splitlines()
    assert lines[1:] == ["/srv/nfs/www 10.10.0.0/24(rw,sync,no_subtree_check,no_root_squash)"]
    assert (tmp_path / "srv/nfs/www").is_dir()


def test_nfs_options_cannot_smuggle_another_client():
    with pytest.raises(Exception, match="not an option list"):
        nfs.render_exports([{"path": "/srv/x", "options": "rw) *(rw"}], "10.10.0.0/24")


def test_hardened_sql_key_file_is_owned_by_mysql_mode_0400_in_a_0750_directory(tmp_path):
    result = run_scenario(load_fixture("banking-sql-primary"), str(tmp_path), runs=1)
    key = tmp_path / "etc/mysql/encryption/keyfile"
    assert stat.S_IMODE(key.stat().st_mode) == 0o400
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o750
    assert key.read_text().startswith("1;") and len(key.read_text().strip()) == 2 + 64
    assert ("/etc/mysql/encryption/keyfile", "mysql", "mysql") in result["chowns"]
    assert ("/etc/mysql/encryption", "root", "mysql") in result["chowns"]
    assert (tmp_path / "etc/mysql/mariadb.conf.d/70-golden-encryption.cnf").exists()


def test_hardened_key_is_never_replaced_on_rerun(tmp_path):
    scenario = load_fixture("banking-sql-primary")
    run_scenario(scenario, str(tmp_path))
    key = (tmp_path / "etc/mysql/encryption/keyfile").read_text()
    fake = FakeHost(str(tmp_path), scenario["facts"])
    assert agent.run(fake.context(scenario["image"], scenario["host"]), rerun=True) == 0
    assert (tmp_path / "etc/mysql/encryption/keyfile").read_text() == key


def test_retry_backs_off_doubling_up_to_the_cap():
    sleeps: list[float] = []
    calls = iter([RuntimeError("a"), RuntimeError("b"), "ok"])

    def action():
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    assert retry(action, "x", RetryPolicy(5, 2, 3), sleep=sleeps.append, logger=lambda _: None) == "ok"
    assert sleeps == [2, 3]
    with pytest.raises(RetryExhausted, match="gave up y after 2 attempts"):
        retry(lambda: 1 / 0, "y", RetryPolicy(2, 1, 1), sleep=sleeps.append, logger=lambda _: None)


def test_image_without_host_settings_runs_no_cluster_step(tmp_path):
    scenario = load_fixture("sql-primary")
    scenario["host"] = None
    result = run_scenario(scenario, str(tmp_path), runs=1)
    assert result["runs"][0]["exit"] == 0
    # Only the role's own service is checked (it runs and answers): nothing is configured or joined.
    assert [c.split(" ")[:2] for c in result["runs"][0]["commands"]] == [["systemctl", "show"], ["mysql:", "SELECT"]]
    done = [k for k, (state, _) in result["runs"][0]["steps"].items() if state == "done"]
    assert done == ["common.host-settings-private", "mariadb.running"]


def test_hardened_grub_hash_is_what_grub_mkpasswd_pbkdf2_computes():
    # Checked against OpenSSL's PBKDF2, an implementation independent of Python's hashlib.
    salt = bytes(range(64))
    line = hardened.grub_pbkdf2("correct horse", salt, iterations=1000)
    prefix, iterations, salt_hex, digest_hex = line.rsplit(".", 3)
    assert prefix == "grub.pbkdf2.sha512" and iterations == "1000" and salt_hex == salt.hex().upper()
    out = subprocess.run(
        ["openssl", "kdf", "-keylen", "64", "-kdfopt", "digest:SHA512", "-kdfopt", "pass:correct horse",
         "-kdfopt", "hexsalt:" + salt.hex(), "-kdfopt", "iter:1000", "PBKDF2"],
        capture_output=True, text=True, check=True).stdout
    assert digest_hex == out.strip().replace(":", "").upper()


def test_hardened_grub_password_is_made_per_host_and_kept_on_rerun(tmp_path):
    result = run_scenario(load_fixture("banking-sql-primary"), str(tmp_path))
    hash_file = tmp_path / "etc/golden/grub-password.pbkdf2"
    password = tmp_path / "root/grub-password"
    assert hash_file.read_text().startswith("grub.pbkdf2.sha512.10000.")
    assert stat.S_IMODE(hash_file.stat().st_mode) == 0o400 and stat.S_IMODE(password.stat().st_mode) == 0o400
    first, second = result["runs"]
    assert first["commands"].count("update-grub") == 1 and "update-grub" not in second["commands"]
    assert password.read_text().strip() not in "\n".join(result["log"])


def test_hardened_grub_password_from_the_operator_leaves_no_plain_password(tmp_path):
    scenario = load_fixture("banking-sql-primary")
    given = hardened.grub_pbkdf2("operator's", b"\x01" * 64, iterations=1000)
    scenario["host"] = {**(scenario.get("host") or {}), "hardened": {"grub_password_pbkdf2": given}}
    run_scenario(scenario, str(tmp_path), runs=1)
    assert (tmp_path / "etc/golden/grub-password.pbkdf2").read_text().strip() == given
    assert not (tmp_path / "root/grub-password").exists()


def test_hardened_grub_password_that_is_not_a_hash_is_refused(tmp_path):
    scenario = load_fixture("banking-sql-primary")
    scenario["host"] = {**(scenario.get("host") or {}), "hardened": {"grub_password_pbkdf2": "hunter2"}}
    result = run_scenario(scenario, str(tmp_path), runs=1)
    assert result["runs"][0]["exit"] == 2
    assert any("grub_password_pbkdf2: not a GRUB PBKDF2 hash" in line for line in result["log"])


def test_hardened_new_key_is_256_random_bits_in_file_key_management_format():
    keys = [hardened.new_keyfile() for _ in range(2)]
    assert keys[0] != keys[1]
    for key in keys:
        key_id, _, hex_key = key.rstrip("\n").partition(";")
        assert key_id == "1" and len(bytes.fromhex(hex_key)) == 32
        assert hardened.keyfile_problem(key) is None


@pytest.mark.parametrize("text, problem", [
    ("", "no key 1"),
    ("2;" + "ab" * 32 + "\n", "no key 1"),
    ("1;" + "ab" * 31 + "\n", "not ID;KEY"),
    ("1:" + "ab" * 32 + "\n", "not ID;KEY"),
    ("1;" + "zz" * 32 + "\n", "not ID;KEY"),
])
def test_hardened_key_file_problems_are_named(text, problem):
    assert problem in hardened.keyfile_problem(text)


def test_hardened_damaged_key_file_fails_first_boot_and_is_left_as_it_is(tmp_path):
    scenario = load_fixture("banking-sql-primary")
    scenario["files"]["etc/mysql/encryption/keyfile"] = "1;not-a-key\n"
    result = run_scenario(scenario, str(tmp_path), runs=1)
    assert result["runs"][0]["exit"] == 1
    assert result["runs"][0]["steps"]["hardened.mariadb-keyfile"][0] == "failed"
    assert any("keyfile: a line is not ID;KEY" in line for line in result["log"])
    assert (tmp_path / "etc/mysql/encryption/keyfile").read_text() == "1;not-a-key\n"
    assert "systemctl restart mariadb" not in result["runs"][0]["commands"]


def test_hardened_lost_key_is_an_error_once_mariadb_encrypts_with_it(tmp_path):
    scenario = load_fixture("banking-sql-primary")
    cnf = scenario["files"]["etc/golden/mariadb/70-golden-encryption.cnf"]
    scenario["files"]["etc/mysql/mariadb.conf.d/70-golden-encryption.cnf"] = cnf
    result = run_scenario(scenario, str(tmp_path), runs=1)
    assert result["runs"][0]["exit"] == 1
    assert any("keyfile is missing, but MariaDB's data is encrypted with it" in line for line in result["log"])
    assert any(line.startswith("hint: restore the key file") for line in result["log"])
    assert not (tmp_path / "etc/mysql/encryption/keyfile").exists()


def test_hardened_key_mode_is_put_back_to_0400_without_a_new_key(tmp_path):
    scenario = load_fixture("banking-sql-primary")
    run_scenario(scenario, str(tmp_path), runs=1)
    key = tmp_path / "etc/mysql/encryption/keyfile"
    before = key.read_text()
    key.chmod(0o644)
    fake = FakeHost(str(tmp_path), scenario["facts"])
    assert agent.run(fake.context(scenario["image"], scenario["host"]), rerun=True) == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o400 and key.read_text() == before
    status = agent.Status(str(tmp_path)).load()
    assert status["steps"]["hardened.mariadb-keyfile"]["changed"] is True
    assert ("/etc/mysql/encryption/keyfile", "mysql", "mysql") in fake.chowns


def test_hardened_first_boot_waits_for_innodb_to_encrypt_every_tablespace(tmp_path):
    result = run_scenario(load_fixture("banking-sql-primary"), str(tmp_path), runs=1)
    # the fixture's encryption threads need three looks: 1 of 5, 4 of 5, then 5 of 5
    assert result["runs"][0]["commands"].count("mysql: SELECT InnoDB encryption progress") == 3
    assert len(result["sleeps"]) == 2
    waits = [line for line in result["log"] if "tablespaces encrypted" in line and "of 5" in line]
    assert len(waits) == 2
    report = next(line for line in result["log"] if line.startswith("MariaDB encryption at rest:"))
    assert "5 InnoDB tablespaces encrypted" in report and "4 Aria tables of the mysql schema" in report
    assert "purged binary logs written in clear: mysql-bin.000001" in report


def test_hardened_first_boot_gives_up_when_innodb_never_finishes(tmp_path):
    scenario = load_fixture("banking-sql-primary")
    scenario["facts"]["innodb_rotation"] = [[5, 3]]
    scenario["host"]["firstboot"] = {"retry_attempts": 3, "retry_delay": 1, "retry_max_delay": 1}
    result = run_scenario(scenario, str(tmp_path), runs=1)
    assert result["runs"][0]["exit"] != 0
    assert result["runs"][0]["steps"]["hardened.mariadb-encrypted"][0] == "failed"
    assert result["runs"][0]["steps"]["mariadb.host-config"][0] == "pending"
    assert not (tmp_path / "var/lib/golden/mariadb-aria-encrypted.json").exists()


def test_hardened_setting_the_server_does_not_take_fails_first_boot_naming_it(tmp_path):
    scenario = load_fixture("banking-sql-primary")
    scenario["facts"]["overridden"] = ["encrypt_binlog", "enforce_storage_engine"]
    result = run_scenario(scenario, str(tmp_path), runs=1)
    assert result["runs"][0]["exit"] == 1
    error = next(line for line in result["log"] if line.startswith("error: step hardened.mariadb-encryption"))
    assert "encrypt_binlog = ON (server: unset)" in error and "enforce_storage_engine = InnoDB" in error
    assert "innodb_encrypt_tables" not in error


def test_hardened_settings_installed_by_a_run_that_stopped_are_put_in_effect(tmp_path):
    scenario = load_fixture("banking-sql-primary")
    cnf = scenario["files"]["etc/golden/mariadb/70-golden-encryption.cnf"]
    scenario["files"]["etc/mysql/mariadb.conf.d/70-golden-encryption.cnf"] = cnf
    scenario["files"]["etc/mysql/encryption/keyfile"] = hardened.new_keyfile()
    result = run_scenario(scenario, str(tmp_path), runs=1)
    first = result["runs"][0]
    assert first["exit"] == 0 and first["steps"]["hardened.mariadb-encryption"] == ["done", True]
    sql = [c for c in first["commands"] if c.startswith(("mysql: SELECT encryption", "systemctl restart"))]
    assert sql[:3] == ["mysql: SELECT encryption variables", "systemctl restart mariadb.service",
                       "mysql: SELECT encryption variables"]


def test_hardened_replica_overwrites_a_seed_dump_left_behind(tmp_path):
    scenario = load_fixture("banking-sql-replica")
    run_scenario(scenario, str(tmp_path), runs=1)
    dump = tmp_path / "var/lib/golden/replica-seed.sql"
    assert not dump.exists()
    dump.write_text("INSERT INTO t VALUES ('secret');\n")  # a run stopped before removing it
    fake = FakeHost(str(tmp_path), {**scenario["facts"], "slave": {
        "Master_Host": "10.10.0.11", "Using_Gtid": "Slave_Pos", "Slave_IO_Running": "Yes",
        "Slave_SQL_Running": "Yes"}})
    assert agent.run(fake.context(scenario["image"], scenario["host"]), rerun=True) == 0
    assert "shred --zero --iterations=0 --remove /var/lib/golden/replica-seed.sql" in fake.commands
    assert not dump.exists()


def test_web_unit_that_missed_its_start_timeout_is_restarted_and_reported(tmp_path, capsys):
    scenario = load_fixture("web")
    scenario["facts"].update({"active": ["php8.2-fpm"], "failed": ["apache2"], "start_failures": {"apache2": 1}})
    result = run_scenario(scenario, str(tmp_path), runs=1)
    run = result["runs"][0]
    assert run["exit"] == 0, result["log"]
    # Found failed, restarted; that start failed again and the next attempt restarted it once more.
    assert run["commands"].count("systemctl reset-failed apache2.service") == 2
    assert run["commands"].count("systemctl start apache2.service") == 2
    data = json.loads((tmp_path / "var/lib/golden/firstboot.json").read_text())
    assert data["steps"]["web.vhosts"]["units"]["apache2"]["restarts"] == 1
    unit = data["steps"]["web.health"]["units"]["apache2"]
    assert unit["restarts"] == 2 and unit["state"] == "active (running)"
    assert any("start operation timed out" in line for line in unit["journal"])
    text = agent.format_status(data)
    assert "unit apache2: active (running), restarted 2 time(s) by golden-firstboot" in text
    assert "start operation timed out" in text


def test_web_unit_that_never_starts_fails_the_step_naming_the_unit_and_its_journal(tmp_path):
    scenario = load_fixture("web")
    scenario["facts"].update({"active": ["php8.2-fpm"], "failed": ["apache2"], "start_failures": {"apache2": 99}})
    scenario["host"]["firstboot"] = {"service_restarts": 2}
    result = run_scenario(scenario, str(tmp_path), runs=1)
    run = result["runs"][0]
    assert run["exit"] == 1
    assert run["commands"].count("systemctl start apache2.service") == 2  # the budget, then no more
    data = json.loads((tmp_path / "var/lib/golden/firstboot.json").read_text())
    assert data["steps"]["web.health"]["state"] == "failed"
    assert "apache2 is failed, result timeout after 2 restart(s)" in data["error"]
    assert len(result["sleeps"]) == 1  # one wait after the second failed start, not the whole retry budget
    text = agent.format_status(data)
    assert "unit apache2: failed, result timeout, restarted 2 time(s)" in text
    assert "| [   42.100000] host1 systemd[1]: Failed to start apache2." in text


def test_web_health_starts_a_stopped_php_fpm_before_waiting(tmp_path):
    scenario = load_fixture("web")
    scenario["facts"]["active"] = ["apache2"]
    result = run_scenario(scenario, str(tmp_path), runs=1)
    run = result["runs"][0]
    assert run["exit"] == 0, result["log"]
    assert "systemctl start php8.2-fpm.service" in run["commands"]
    assert "systemctl enable --quiet php8.2-fpm.service" in run["commands"]
    assert run["steps"]["web.health"] == ["done", True]
    assert result["sleeps"] == []  # started before the first check: no wait was needed


def test_snakeoil_pair_is_made_once_private_to_ssl_cert_and_by_the_early_run_alone(tmp_path):
    scenario = load_fixture("web")
    make_root(str(tmp_path), scenario)
    fake = FakeHost(str(tmp_path), scenario["facts"])
    ctx = fake.context(scenario["image"], scenario["host"])
    assert agent.run_early(ctx) == 0
    assert [c.split()[0] for c in fake.commands] == ["openssl"]  # only the early step ran
    key = tmp_path / "etc/ssl/private/ssl-cert-snakeoil.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o640 and (tmp_path / "etc/ssl/certs/ssl-cert-snakeoil.pem").exists()
    assert fake.chowns == [("/etc/ssl/private/ssl-cert-snakeoil.key.golden-new", "root", "ssl-cert")]
    assert "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1" in fake.commands[0]
    assert "/CN=host1.example.com" in fake.commands[0]
    fake.commands = []
    assert agent.run_early(ctx) == 0 and fake.commands == []
    assert not list((tmp_path / "etc/ssl/private").glob("*.golden-new"))


def test_mariadb_that_failed_at_boot_is_restarted_before_any_sql_step(tmp_path):
    scenario = load_fixture("sql-primary")
    scenario["facts"].update({"active": [], "failed": ["mariadb"]})
    result = run_scenario(scenario, str(tmp_path), runs=1)
    run = result["runs"][0]
    assert run["exit"] == 0, result["log"]
    first_sql = next(i for i, c in enumerate(run["commands"]) if c.startswith("mysql"))
    assert run["commands"].index("systemctl start mariadb.service") < first_sql
    assert run["steps"]["mariadb.running"] == ["done", True]


def test_give_up_on_skips_the_remaining_attempts():
    sleeps = []
    calls = []

    def action():
        calls.append(1)
        raise KeyError("no")

    with pytest.raises(KeyError):
        retry(action, "x", RetryPolicy(attempts=5, delay=1), sleep=sleeps.append, give_up_on=(KeyError,))
    assert calls == [1] and sleeps == []


def test_snakeoil_rsa_pair_from_ssl_cert_on_an_applied_host_is_replaced_once_by_the_ecdsa_pair(tmp_path):
    import subprocess

    from golden_firstboot.roles.web import is_rsa_key

    keys = {}
    for kind, options in (("rsa", ["-newkey", "rsa:2048"]), ("ec", ["-newkey", "ec", "-pkeyopt",
                                                                    "ec_paramgen_curve:prime256v1"])):
        subprocess.run(["openssl", "req", "-x509", *options, "-nodes", "-subj", "/CN=x", "-days", "1",
                        "-keyout", str(tmp_path / f"{kind}.key"), "-out", str(tmp_path / f"{kind}.pem")],
                       check=True, capture_output=True)
        keys[kind] = (tmp_path / f"{kind}.key").read_text()
    assert is_rsa_key(keys["rsa"]) and not is_rsa_key(keys["ec"]) and not is_rsa_key("-----BEGIN PRIVATE KEY-----\n")
    scenario = load_fixture("web")
    root = tmp_path / "root"
    make_root(str(root), scenario)
    (root / "etc/ssl/private").mkdir(parents=True, exist_ok=True)
    (root / "etc/ssl/certs").mkdir(parents=True, exist_ok=True)
    (root / "etc/ssl/private/ssl-cert-snakeoil.key").write_text(keys["rsa"])
    (root / "etc/ssl/certs/ssl-cert-snakeoil.pem").write_text((tmp_path / "rsa.pem").read_text())
    fake = FakeHost(str(root), scenario["facts"])
    ctx = fake.context(scenario["image"], scenario["host"])
    assert agent.run_early(ctx) == 0
    assert [c.split()[0] for c in fake.commands] == ["openssl", "systemctl"]
    assert "try-reload-or-restart apache2.service" in fake.commands[1]
    # the fake's openssl wrote a key that is not RSA: from now on the pair is kept
    fake.commands = []
    assert agent.run_early(ctx) == 0 and fake.commands == []
    (root / "etc/ssl/private/ssl-cert-snakeoil.key").write_text(keys["ec"])
    assert agent.run_early(ctx) == 0 and fake.commands == []


@pytest.mark.parametrize("argv", [["--rerun", "run"], ["run", "--rerun"], ["--rerun"],
                                  ["--rerun", "--host-settings", "/h.json", "run"],
                                  ["--host-settings", "/h.json", "run", "--rerun"],
                                  ["--root", "/r", "--rerun", "status"]])
def test_the_agents_options_count_before_and_after_the_command(argv):
    from golden_firstboot.__main__ import parser

    args = parser().parse_args(argv)
    assert args.rerun is True
    assert args.host_settings == ("/h.json" if "/h.json" in argv else None)
    assert args.root == ("/r" if "/r" in argv else "/")


def test_the_agents_options_default_when_not_given():
    from golden_firstboot.__main__ import parser

    for argv in ([], ["run"], ["status", "--json"]):
        args = parser().parse_args(argv)
        assert (args.rerun, args.root, args.host_settings) == (False, "/", None)
