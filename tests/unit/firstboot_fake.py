"""A fake Debian host for the first-boot agent: facts in, commands out.

Kept Python 3.7 compatible so that the same scenarios also run under Debian 10's Python
(`python3.7 tests/unit/firstboot_fake.py FIXTURE...` prints their results as JSON)."""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "unit", "fixtures", "firstboot")
sys.path.insert(0, os.path.join(ROOT, "firstboot"))

from golden_firstboot import agent  # noqa: E402
from golden_firstboot.steps import Context  # noqa: E402
from golden_firstboot.system import Result, Runner  # noqa: E402

ACCOUNT = re.compile(r"User = '([^']*)' AND Host = '([^']*)'")
ENCRYPTION_CNF = "etc/mysql/mariadb.conf.d/70-golden-encryption.cnf"


class FakeHost(Runner):
    """Answers the agent's commands from a small model of the host, and records them."""

    def __init__(self, root: str, facts: dict[str, Any]) -> None:
        super().__init__(logger=self.log_line)
        self.root = root
        self.facts = facts
        self.lines: list[str] = []
        self.commands: list[str] = []
        self.inputs: list[str] = []
        self.chowns: list[tuple[str, str, str]] = []
        self.sleeps: list[float] = []
        self.runtime: list[str] = []
        self.users: dict[str, dict[str, Any]] = {
            k: dict(v) for k, v in (facts.get("users") or {}).items()}
        self.databases: list[str] = list(facts.get("databases") or [])
        self.slave: dict[str, str] = dict(facts.get("slave") or {})
        self.active = set(facts.get("active") or [])
        # Units the image enables (baked `services`): those running at boot, and any the scenario names.
        self.enabled = set(facts.get("enabled") or []) | self.active
        # Units that failed at boot (a missed start timeout), and how many more starts of each fail.
        self.failed = set(facts.get("failed") or [])
        self.start_failures: dict[str, int] = dict(facts.get("start_failures") or {})
        self.probe_failures = int(facts.get("probe_failures", 0))
        self.dump_failures = int(facts.get("dump_failures", 0))
        # MariaDB's encryption: the variables it runs with (read from the cnf files at each restart), the
        # encryption threads' progress, one (total, encrypted) per query, and its binary logs.
        self.variables: dict[str, str] = {}
        self.rotation: list[list[int]] = [list(p) for p in facts.get("innodb_rotation") or [[5, 5]]]
        self.binlogs: list[list[Any]] = [list(b) for b in facts.get("binlogs") or []]

    def log_line(self, line: str) -> None:
        self.lines.append(line)

    # The agent's hooks.
    def probe(self, host: str, port: int) -> bool:
        if self.facts.get("primary_down"):
            return False
        if self.probe_failures:
            self.probe_failures -= 1
            return False
        return True

    def http_status(self, url: str) -> int:
        if self.facts.get("health_down") or not {"apache2", "php8.2-fpm"} <= self.active:
            return 503 if "apache2" in self.active else 0
        return 200

    def chown(self, path: str, user: str, group: str) -> None:
        self.chowns.append(("/" + os.path.relpath(path, self.root), user, group))

    def haproxy(self, command: str) -> str:
        self.runtime.append(command)
        return "IP changed from '127.0.0.1'" if " addr " in command else ""

    def context(self, image: dict[str, Any], host: dict[str, Any], check: bool = False) -> Context:
        ctx = Context(image, host, root=self.root, runner=self, logger=self.log_line, sleep=self.sleeps.append,
                      probe=self.probe, chown=self.chown, haproxy=self.haproxy, http_status=self.http_status,
                      hostname=lambda: "host1.example.com", check=check)
        return ctx

    # The commands.
    def execute(self, args, input, env, stdin_path, stdout_path, timeout) -> Result:
        line = " ".join(a.replace(self.root, "") for a in args)
        if stdin_path:
            line += " < /" + os.path.relpath(stdin_path, self.root)
        if stdout_path:
            line += " > /" + os.path.relpath(stdout_path, self.root)
        if input:
            self.inputs.append(input)
        if env:
            self.inputs.append(json.dumps(env))
        if args[0] == "mysql":
            if stdin_path:
                self.commands.append(line)
                if self.facts.get("import_failures"):
                    self.facts["import_failures"] -= 1
                    return Result(1, "", "ERROR 1049 (42000) at line 5: Unknown database 'shop'")
                self.databases += [d for d in self.facts.get("primary_databases", []) if d not in self.databases]
                return Result(0)
            return self.mysql(input or "")
        self.commands.append(line)
        if args[0] in ("mariadb-dump", "mysqldump"):
            if self.dump_failures:
                self.dump_failures -= 1
                return Result(2, "", "Access denied for user 'repl'")
            kind = next((k for k in ("torn_dumps", "grantless_dumps") if self.facts.get(k)), "")
            if kind:
                self.facts[kind] -= 1
            with open(stdout_path, "w") as handle:
                # --all-databases lists databases twice (tables, then views): `shop` made in between is torn;
                # an account without its grants yet dumps a GTID position and nothing else
                handle.write("SET GLOBAL gtid_slave_pos='0-1-42';\n" + ("" if kind == "grantless_dumps" else (
                    "CREATE DATABASE /*!32312 IF NOT EXISTS*/ `mysql`;\nUSE `mysql`;\n-- Current Database: `shop`\n"
                    + ("" if kind == "torn_dumps" else "CREATE DATABASE /*!32312 IF NOT EXISTS*/ `shop`;\n")
                    + "USE `shop`;\n")) + "-- Dump completed on 2025-01-01\n")
            return Result(0)
        if args[0] == "systemctl":
            return self.systemctl(args[1:])
        if args[0] == "journalctl":
            unit = args[args.index("--unit") + 1][:-len(".service")]
            return Result(0, f"[   42.000000] host1 systemd[1]: {unit}.service: start operation timed out. "
                             f"Terminating.\n[   42.100000] host1 systemd[1]: Failed to start {unit}.\n")
        if args[0] == "openssl":
            for option in ("-keyout", "-out"):
                with open(args[args.index(option) + 1], "w") as handle:
                    handle.write("-----BEGIN {}-----\n".format("PRIVATE KEY" if option == "-keyout" else "CERTIFICATE"))
        if args[0] == "systemd-run":
            self.active.add(args[1].split("=", 1)[1])
        if args[0] == "mount":
            self.mount(args[1])
        if args[0] in ("a2ensite", "a2dissite"):
            link = os.path.join(self.root, "etc/apache2/sites-enabled", args[-1] + ".conf")
            if args[0] == "a2ensite":
                os.makedirs(os.path.dirname(link), exist_ok=True)
                os.symlink("../sites-available/" + args[-1] + ".conf", link)
            elif os.path.lexists(link):
                os.unlink(link)
        return Result(0)

    def systemctl(self, args: list[str]) -> Result:
        verb = args[0]
        names = [a for a in args[1:] if not a.startswith("-")]
        unit = names[0][:-len(".service")] if names and names[0].endswith(".service") else (names or [""])[0]
        if verb == "show":
            state = "active" if unit in self.active else "failed" if unit in self.failed else "inactive"
            return Result(0, "ActiveState={}\nSubState={}\nUnitFileState={}\nResult={}\nNRestarts=0\n".format(
                state, {"active": "running", "failed": "failed", "inactive": "dead"}[state],
                "enabled" if unit in self.enabled else "disabled", "timeout" if state == "failed" else "success"))
        if verb == "is-active":
            return Result(0 if unit in self.active else 3)
        if verb == "is-enabled":
            return Result(0 if unit in self.enabled else 1)
        if verb == "reset-failed":
            self.failed.discard(unit)
        if verb in ("start", "restart", "reload-or-restart"):
            if self.start_failures.get(unit):
                self.start_failures[unit] -= 1
                self.active.discard(unit)
                self.failed.add(unit)
                return Result(1, "", f"Job for {unit}.service failed because a timeout was exceeded.")
            self.active.add(unit)
            self.failed.discard(unit)
        if verb == "restart" and unit == "mariadb":
            self.restart_mariadb()
        if verb == "enable":
            self.enabled.update(n[:-len(".service")] if n.endswith(".service") else n for n in names)
        return Result(0)

    def mount(self, mount_point: str) -> None:
        with open(os.path.join(self.root, "etc/fstab")) as handle:
            source = next(line.split()[0] for line in handle if line.split()[1:2] == [mount_point])
        with open(os.path.join(self.root, "proc/mounts"), "a") as handle:
            handle.write(f"{source} {mount_point} nfs4 rw 0 0\n")

    def restart_mariadb(self) -> None:
        """The server reads its option files: the encryption settings, less any the scenario says are overridden."""
        self.variables = {}
        path = os.path.join(self.root, ENCRYPTION_CNF)
        if os.path.exists(path):
            with open(path) as handle:
                for line in handle:
                    name, sep, value = line.split("#")[0].partition("=")
                    if sep and name.strip() not in ("plugin_load_add", *self.facts.get("overridden", [])):
                        self.variables[name.strip().upper()] = value.strip()
        # the restart opens a new binary log, encrypted when encrypt_binlog is on
        if self.binlogs:
            encrypted = self.variables.get("ENCRYPT_BINLOG", "OFF").upper() == "ON"
            self.binlogs.append([f"mysql-bin.{len(self.binlogs) + 1:06d}", encrypted])

    def mysql_encryption(self, sql: str) -> Result | None:
        """The reads of the encryption steps; None for any other statement."""
        if sql.startswith("SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES"):
            self.commands.append("mysql: SELECT encryption variables")
            return Result(0, "".join(f"{k}\t{v}\n" for k, v in sorted(self.variables.items()) if f"'{k}'" in sql))
        if sql.startswith("SELECT COUNT(*), COALESCE(SUM(e.ENCRYPTION_SCHEME"):
            self.commands.append("mysql: SELECT InnoDB encryption progress")
            total, encrypted = self.rotation.pop(0) if len(self.rotation) > 1 else self.rotation[0]
            return Result(0, f"{total}\t{encrypted}\n")
        if sql.startswith("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'mysql'"):
            self.commands.append("mysql: SELECT Aria tables of mysql")
            return Result(0, "".join(t + "\n" for t in self.facts.get("aria_system_tables", [])))
        if sql.startswith("SELECT @@GLOBAL.log_bin"):
            self.commands.append("mysql: SELECT log_bin")
            return Result(0, "1\n" if self.binlogs else "0\n")
        if sql.startswith("SHOW BINARY LOGS"):
            self.commands.append("mysql: SHOW BINARY LOGS")
            return Result(0, "".join(f"{name}\t1024\n" for name, _ in self.binlogs))
        match = re.match(r"SHOW BINLOG EVENTS IN '([^']*)'", sql)
        if match:
            self.commands.append("mysql: SHOW BINLOG EVENTS IN " + match.group(1))
            encrypted = dict((name, enc) for name, enc in self.binlogs)[match.group(1)]
            out = f"{match.group(1)}\t4\tFormat_desc\t1\t256\tServer ver\n"
            return Result(0, out + (f"{match.group(1)}\t256\tStart_encryption\t1\t296\t\n" if encrypted else ""))
        match = re.match(r"PURGE BINARY LOGS TO '([^']*)'", sql)
        if match:
            self.commands.append("mysql: " + sql.strip())
            names = [name for name, _ in self.binlogs]
            self.binlogs = self.binlogs[names.index(match.group(1)):]
            return Result(0)
        return None

    def mysql(self, sql: str) -> Result:
        """Reads answered from the model; writes change it. Statements are recorded without their secrets."""
        answered = self.mysql_encryption(sql)
        if answered is not None:
            return answered
        out = ""
        if sql.startswith("SELECT (SELECT COUNT(*) FROM mysql.user"):
            user, host = ACCOUNT.search(sql).groups()
            password = re.search(r"PASSWORD\('([^']*)'\)", sql).group(1)
            account = self.users.get(user + "@" + host)
            state = [account is not None, bool(account) and account["password"] == password,
                     bool(account) and account.get("granted", False)]
            out = "\t".join(str(int(v)) for v in state) + "\n"
            self.commands.append(f"mysql: SELECT account state of {user}@{host}")
            return Result(0, out)
        if sql.startswith("SELECT COUNT(*) FROM mysql.user WHERE User = 'prometheus'"):
            self.commands.append("mysql: SELECT grants of prometheus@localhost")
            return Result(0, "1\n" if self.users.get("prometheus@localhost", {}).get("granted") else "0\n")
        if sql.startswith("SELECT SCHEMA_NAME"):
            self.commands.append("mysql: SELECT databases")
            return Result(0, "".join(d + "\n" for d in self.databases))
        if sql.startswith("SELECT @@GLOBAL.gtid_binlog_pos"):
            self.commands.append("mysql: SELECT gtid_binlog_pos")
            return Result(0, self.facts.get("gtid_binlog_pos", "") + "\n")
        if sql.startswith("SHOW SLAVE STATUS"):
            self.commands.append("mysql: SHOW SLAVE STATUS")
            if self.slave:
                out = "*************************** 1. row ***************************\n"
                out += "".join(f"{k:>30}: {v}\n" for k, v in self.slave.items())
            return Result(0, out)
        for statement in [s.strip() for s in sql.split(";\n") if s.strip()]:
            self.commands.append("mysql: " + re.sub(r"(IDENTIFIED BY |MASTER_PASSWORD=)'[^']*'", r"\1'...'", statement))
            match = re.match(r"(CREATE USER IF NOT EXISTS|ALTER USER) '([^']*)'@'([^']*)' IDENTIFIED BY '([^']*)'",
                             statement)
            if match:
                account = self.users.setdefault(match.group(2) + "@" + match.group(3), {})
                account["password"] = match.group(4)
            match = re.match(r"CREATE USER IF NOT EXISTS '([^']*)'@'([^']*)' IDENTIFIED VIA unix_socket", statement)
            if match:
                self.users.setdefault(match.group(1) + "@" + match.group(2), {})["plugin"] = "unix_socket"
            match = re.match(r"GRANT .* TO '([^']*)'@'([^']*)'", statement)
            if match:
                self.users[match.group(1) + "@" + match.group(2)]["granted"] = True
            match = re.match(r"CREATE DATABASE IF NOT EXISTS `([^`]*)`", statement)
            if match:
                self.databases.append(match.group(1))
            match = re.match(r"CHANGE MASTER TO MASTER_HOST='([^']*)'", statement)
            if match:
                self.slave = {"Master_Host": match.group(1), "Using_Gtid": "Slave_Pos",
                              "Slave_IO_Running": "No", "Slave_SQL_Running": "No"}
            if statement.startswith("START SLAVE") and self.slave:
                self.slave.update({"Slave_IO_Running": "Yes", "Slave_SQL_Running": "Yes"})
        return Result(0)


def make_root(root: str, scenario: dict[str, Any]) -> None:
    """The image's files under root: image.json, host.json (0600), and what the scenario adds."""
    files = {"etc/golden/image.json": json.dumps(scenario["image"]), "proc/mounts": "", "etc/fstab": ""}
    if scenario.get("host") is not None:
        files["etc/golden/host.json"] = json.dumps(scenario["host"])
    files.update(scenario.get("files") or {})
    for name, content in files.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(content)
    if scenario.get("host") is not None:
        os.chmod(os.path.join(root, "etc/golden/host.json"), 0o600)


def run_scenario(scenario: dict[str, Any], root: str, runs: int = 2) -> dict[str, Any]:
    """Run the agent (then rerun it) on a fresh fake host; what each run did."""
    make_root(root, scenario)
    fake = FakeHost(root, scenario.get("facts") or {})
    results = []
    for index in range(runs):
        fake.commands = []
        ctx = fake.context(scenario["image"], scenario.get("host") or {})
        code = agent.run(ctx, rerun=index > 0)
        status = agent.Status(root).load() or {}
        results.append({
            "exit": code,
            "commands": fake.commands,
            "steps": {k: [v["state"], v.get("changed")] for k, v in status.get("steps", {}).items()},
        })
    return {"runs": results, "log": fake.lines, "inputs": fake.inputs, "chowns": fake.chowns,
            "runtime": fake.runtime, "sleeps": fake.sleeps}


def load_fixture(name: str) -> dict[str, Any]:
    with open(os.path.join(FIXTURES, name + ".json")) as handle:
        return json.load(handle)


def fixture_names() -> list[str]:
    return sorted(n[:-len(".json")] for n in os.listdir(FIXTURES) if n.endswith(".json"))


if __name__ == "__main__":
    report = {}
    for fixture in sys.argv[1:] or fixture_names():
        with tempfile.TemporaryDirectory() as tmp:
            report[fixture] = run_scenario(load_fixture(fixture), tmp)["runs"]
    json.dump(report, sys.stdout, indent=1)
