"""`golden cluster status`: the agent's one-object summary of its host (`golden-firstboot facts --json`), and the
table golden prints from every host's answer, judged with the cluster file's thresholds."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from goldenimage.apply import status as cluster_status_mod
from goldenimage.core.errors import GoldenError
from goldenimage.model.cluster import Thresholds
from tests.unit.firstboot_fake import load_fixture  # noqa: F401  (puts the agent on sys.path)

from golden_firstboot import host_summary  # isort: skip

NOW = 1_800_000_000.0
REPLICA_ROW = """*************************** 1. row ***************************
               Slave_IO_State: Waiting for master to send event
             Slave_IO_Running: {io}
            Slave_SQL_Running: Yes
        Seconds_Behind_Master: {lag}
                Last_IO_Error: {error}
"""


def tree(root: Path, roles: list[str], result: str = "done", steps: dict[str, str] | None = None) -> Path:
    (root / "etc/golden").mkdir(parents=True)
    (root / "var/lib/golden").mkdir(parents=True)
    (root / "etc/golden/image.json").write_text(json.dumps({"profile": roles[0], "roles": roles}))
    (root / "var/lib/golden/firstboot.json").write_text(json.dumps(
        {"result": result, "steps": {k: {"state": v} for k, v in (steps or {"base.hostname": "done"}).items()}}))
    return root


def fake_run(answers: dict[str, tuple[int, str]]) -> Any:
    """A command runner answering by the command's first word (mysql: by the SQL it is fed)."""
    def run(argv: Sequence[str], stdin: str = "") -> tuple[int, str]:
        key = stdin.split()[0] + " " + stdin.split()[1] if argv[0] == "mysql" else " ".join(argv[:2])
        return answers.get(key, (0, ""))
    return run


def test_a_replica_that_stopped_replicating_is_unhealthy_and_says_why(tmp_path: Path) -> None:
    root = tree(tmp_path, ["sql-replica"])
    run = fake_run({"SELECT 1;": (0, "1\n"), "SHOW SLAVE": (0, REPLICA_ROW.format(
        io="No", lag="NULL", error="error connecting to master 'repl@10.10.0.11:3306'"))})
    facts = host_summary.summary(str(root), NOW, run=run, addresses=lambda: [], enddate=lambda p: None)
    assert facts["database"] == {"kind": "replica", "io": "No", "sql": "Yes", "lag": None, "state": "stopped"}
    replication = next(c for c in facts["checks"] if c["name"] == "replication")
    assert not replication["ok"] and "error connecting to master" in replication["detail"]
    assert facts["healthy"] is False

    run = fake_run({"SELECT 1;": (0, "1\n"), "SHOW SLAVE": (0, REPLICA_ROW.format(io="Yes", lag="3", error=""))})
    facts = host_summary.summary(str(root), NOW, run=run, addresses=lambda: [], enddate=lambda p: None)
    assert facts["database"]["state"] == "running" and facts["database"]["lag"] == 3
    assert facts["healthy"] is True


def test_a_galera_node_that_is_not_synced_is_unhealthy(tmp_path: Path) -> None:
    root = tree(tmp_path, ["sql-galera"])
    status = "wsrep_local_state_comment\tDonor/Desynced\nwsrep_cluster_size\t2\nwsrep_cluster_status\tPrimary\n"
    run = fake_run({"SELECT 1;": (0, "1\n"), "SHOW GLOBAL": (0, status)})
    facts = host_summary.summary(str(root), NOW, run=run, addresses=lambda: [], enddate=lambda p: None)
    assert facts["database"] == {"kind": "galera", "state": "Donor/Desynced", "size": 2, "cluster": "Primary"}
    assert not facts["healthy"]
    run = fake_run({"SELECT 1;": (0, "1\n"), "SHOW GLOBAL": (0, status.replace("Donor/Desynced", "Synced"))})
    assert host_summary.summary(str(root), NOW, run=run, addresses=lambda: [], enddate=lambda p: None)["healthy"]


def test_a_web_node_reports_its_health_endpoint_failed_units_and_a_failed_first_boot(tmp_path: Path) -> None:
    root = tree(tmp_path, ["web"], result="failed", steps={"web.vhosts": "failed", "base.hostname": "done"})
    (root / "var/lib/golden/backup-last-success").write_text("")
    import os
    os.utime(root / "var/lib/golden/backup-last-success", (NOW - 7200, NOW - 7200))
    (root / "etc/ssl/certs").mkdir(parents=True)
    (root / "etc/ssl/certs/ssl-cert-snakeoil.pem").write_text("x")
    run = fake_run({"systemctl list-units": (0, "php8.2-fpm.service loaded failed failed PHP\n")})
    facts = host_summary.summary(str(root), NOW, run=run, addresses=lambda: [], enddate=lambda p: NOW + 86400 * 3,
                                 http=lambda url: "503")
    assert facts["firstboot"] == {"result": "failed", "failed_steps": ["web.vhosts"]}
    checks = {c["name"]: c for c in facts["checks"]}
    assert checks["health endpoint"] == {"name": "health endpoint", "ok": False, "detail": "HTTP 503"}
    assert checks["systemd"]["detail"] == "failed: php8.2-fpm.service"
    assert facts["backup_age_seconds"] == 7200 and facts["certificate_expires_in_seconds"] == 3 * 86400


def test_a_web_node_whose_https_port_refuses_is_unhealthy_though_its_health_endpoint_answers(
        tmp_path: Path) -> None:
    root = tree(tmp_path, ["web"])
    asked = []

    def connect(host: str, port: int) -> str:
        asked.append((host, port))
        return "Connection refused"

    facts = host_summary.summary(str(root), NOW, run=fake_run({}), addresses=lambda: [], enddate=lambda p: None,
                                 http=lambda url: "200", connect=connect)
    checks = {c["name"]: c for c in facts["checks"]}
    assert checks["health endpoint"]["ok"] and asked == [("127.0.0.1", 443)]
    assert checks["https port"] == {"name": "https port", "ok": False, "detail": "127.0.0.1:443 Connection refused"}
    assert facts["healthy"] is False
    facts = host_summary.summary(str(root), NOW, run=fake_run({}), addresses=lambda: [], enddate=lambda p: None,
                                 http=lambda url: "200", connect=lambda host, port: "accepts")
    assert facts["healthy"] is True


def test_a_probe_that_cannot_run_is_a_failed_check_not_a_crash() -> None:
    code, out = host_summary.command(["/nonexistent/golden-probe"])
    assert code == 127 and out
    assert host_summary.http_status("http://127.0.0.1:9/") != "200"  # nothing listens on the discard port
    assert host_summary.tcp_accepts("127.0.0.1", 9) != "accepts"


def test_images_leave_the_summary_to_the_agent_golden_ships() -> None:
    import io
    import zipfile

    from goldenimage.render.firstboot_bundle import build_zipapp

    def names(app: bytes) -> set[str]:
        return set(zipfile.ZipFile(io.BytesIO(app[app.index(b"PK"):])).namelist())

    assert "golden_firstboot/host_summary.py" in names(build_zipapp())
    assert "golden_firstboot/host_summary.py" not in names(build_zipapp(engine=False, backup=False))


def test_the_agent_prints_its_summary_as_json(tmp_path: Path) -> None:
    root = tree(tmp_path, ["nfs"])
    proc = subprocess.run(["python3", "-m", "golden_firstboot", "facts", "--json", "--root", str(root)],
                          capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2] / "firstboot")
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["roles"] == ["nfs"] and facts["firstboot"]["result"] == "done"
    assert [c["name"] for c in facts["checks"]] == ["nfs-server", "systemd"]


class FakeTransport:
    """A host as the status session sees it: mktemp, the agent copied there, the agent run, the folder removed."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.closed = False
        self.calls: list[list[str]] = []
        self.put_files: list[str] = []

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        if isinstance(self.answer, Exception):
            raise self.answer
        if argv[0] == "mktemp":
            return subprocess.CompletedProcess(list(argv), 0, "/tmp/golden-status.abcdefgh\n", "")
        if argv[0] == "python3":
            assert list(argv) == ["python3", "/tmp/golden-status.abcdefgh/golden-firstboot.pyz", "facts", "--json"]
            return subprocess.CompletedProcess(list(argv), 0, self.answer, "")
        return subprocess.CompletedProcess(list(argv), 0, "", "")

    def put(self, files: Sequence[Path], remote_dir: str, **kwargs: Any) -> None:
        assert remote_dir == "/tmp/golden-status.abcdefgh"
        self.put_files += [f.name for f in files]

    def close(self) -> None:
        self.closed = True


def healthy(roles: list[str], **extra: Any) -> str:
    return json.dumps({"roles": roles, "firstboot": {"result": "done", "failed_steps": []}, "healthy": True,
                       "checks": [{"name": "systemd", "ok": True, "detail": "no failed unit"}], "database": None,
                       "backup_age_seconds": None, "certificate_expires_in_seconds": 90 * 86400, **extra})


def test_the_table_names_each_problem_and_the_hosts_to_look_at(tmp_path: Path) -> None:
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("""name: shop
network: 10.10.0.0/24
monitoring: {thresholds: {replica_lag_seconds: 60}}
hosts:
  - {name: db1, profile: sql-primary, address: 10.10.0.11}
  - {name: db2, profile: sql-replica, address: 10.10.0.12, primary: db1}
  - {name: web1, profile: web, address: 10.10.0.21}
""")
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("hosts: {db1: 127.0.0.1:2201, db2: 127.0.0.1:2202, web1: 127.0.0.1:2203}\n")
    answers = {
        2201: healthy(["sql-primary"], database={"kind": "primary", "state": "writer"}),
        2202: healthy(["sql-replica"], database={"kind": "replica", "state": "running", "io": "Yes", "sql": "Yes",
                                                 "lag": 600}),
        2203: GoldenError("web1: ssh: connect to host 127.0.0.1 port 2203: Connection refused"),
    }
    transports: list[FakeTransport] = []

    def factory(target: Any, options: Any) -> FakeTransport:
        transports.append(FakeTransport(answers[target.port]))
        return transports[-1]

    statuses = cluster_status_mod.cluster_status(cluster, inventory, options=None, factory=factory)  # type: ignore[arg-type]
    assert [s.name for s in statuses] == ["db1", "db2", "web1"] and all(t.closed for t in transports)
    shipped = [t for t in transports if t.put_files]
    assert len(shipped) == 2 and all(t.put_files == ["golden-firstboot.pyz"] for t in shipped)
    assert all(t.calls[-1] == ["rm", "-rf", "--", "/tmp/golden-status.abcdefgh"] for t in shipped)
    assert statuses[0].ok
    assert statuses[1].problems == ["replica 600 s behind (threshold 60)"]
    assert statuses[2].error and "Connection refused" in statuses[2].error
    console = Console(record=True, width=200)
    console.print(cluster_status_mod.status_table(statuses))
    text = console.export_text()
    assert "replica running, 600 s behind" in text and "unreachable" in text
    assert cluster_status_mod.status_summary(statuses) == ("1 of 3 host(s) healthy; look at: db2, web1", 1)


@pytest.mark.parametrize("answer", ["not json", "[1, 2]"])
def test_an_agent_that_gives_no_status_is_the_rows_error(answer: str) -> None:
    status = cluster_status_mod.ask("web1", "web", FakeTransport(answer))
    assert status.error and status.error.startswith("the agent gave no status")


def test_a_certificate_and_a_backup_past_their_thresholds_are_problems() -> None:
    status = cluster_status_mod.HostStatus("web1", "web", facts=json.loads(healthy(
        ["web"], certificate_expires_in_seconds=86400, backup_age_seconds=30 * 3600)))
    judged = cluster_status_mod.judge(status, Thresholds(), has_backups=True)
    assert judged.problems == ["a certificate expires in 1d (threshold 14d)", "last backup 1d ago (threshold 26h)"]


@pytest.mark.parametrize("holding, problems", [
    ((True, False), ([], [])),  # the backup lb waits: both healthy
    ((False, False), (["virtual address 10.10.0.5: held by no load balancer"],) * 2),
    ((True, True), (["virtual address 10.10.0.5: held by 2 at once (lb1, lb2)"],) * 2),
])
def test_a_floating_address_is_judged_across_its_load_balancers(tmp_path: Path, holding, problems) -> None:
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("""name: shop
network: 10.10.0.0/24
hosts:
  - {name: lb1, profile: lb, address: 10.10.0.10, virtual_address: 10.10.0.5}
  - {name: lb2, profile: lb, address: 10.10.0.9, virtual_address: 10.10.0.5}
""")
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("hosts: {lb1: 127.0.0.1:2201, lb2: 127.0.0.1:2202}\n")

    def answer(holds: bool) -> str:
        check = {"name": "virtual address", "ok": holds, "detail": "10.10.0.5 " + ("held" if holds else "not here")}
        return json.dumps(dict(json.loads(healthy(["lb"])), checks=[check]))

    answers = {2201: answer(holding[0]), 2202: answer(holding[1])}
    statuses = cluster_status_mod.cluster_status(cluster, inventory, options=None,  # type: ignore[arg-type]
                                                 factory=lambda target, options: FakeTransport(answers[target.port]))
    assert (statuses[0].problems, statuses[1].problems) == tuple(problems)
