"""The Galera pieces: who may bootstrap (never two), how a node joins, the health endpoint HAProxy checks, the
SQL pool and the keepalived pair in the load balancers' configuration, and the cluster file's checks."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.unit.firstboot_fake import FakeHost, make_root
from tests.unit.test_cluster import host_json, problems, render

from golden_firstboot import galera_health  # isort: skip  (on sys.path through firstboot_fake)
from golden_firstboot.roles import galera, lb  # isort: skip
from golden_firstboot.system import Result, RetryExhausted  # isort: skip

IMAGE = {"roles": ["sql-galera"], "settings": {"mariadb": {"port": 3306},
                                               "galera": {"sst_method": "rsync", "health_port": 9200}}}


def host(bootstrap: bool, address: str = "10.10.0.11") -> dict[str, Any]:
    return {"hostname": "db1", "address": address, "network": "10.10.0.0/24",
            "mariadb": {"server_id": 11, "databases": ["shop"]},
            "galera": {"cluster_name": "ha", "nodes": ["10.10.0.11", "10.10.0.12"], "arbitrators": ["10.10.0.9"],
                       "bootstrap": bootstrap, "health_port": 9200},
            "firstboot": {"galera_wait_attempts": 2}}


class GaleraHost(FakeHost):
    """MariaDB that is Synced once it was bootstrapped, or restarted with wsrep on while a peer is primary."""

    def __init__(self, root: str, peer_primary: bool) -> None:
        super().__init__(root, {"active": ["mariadb"]})
        self.peer_primary = peer_primary
        self.wsrep = False

    def http_status(self, url: str) -> int:
        return 200 if self.peer_primary and url.endswith(":9200/primary") else 503

    def execute(self, args, input, env, stdin_path, stdout_path, timeout) -> Result:
        if args[0] == "galera_new_cluster":
            self.commands.append("galera_new_cluster")
            self.wsrep = True
            return Result(0)
        if args[:2] == ["systemctl", "restart"] and args[2] in ("mariadb", "mariadb.service"):
            self.wsrep = self.peer_primary and os.path.exists(os.path.join(self.root, galera.GALERA_CNF[1:]))
        if args[0] == "mysql" and (input or "").startswith("SHOW GLOBAL STATUS"):
            if not self.wsrep:
                return Result(0, "wsrep_ready\tOFF\n")
            return Result(0, "wsrep_ready\tON\nwsrep_local_state\t4\nwsrep_cluster_status\tPrimary\n")
        return super().execute(args, input, env, stdin_path, stdout_path, timeout)


def run_step(tmp_path: Path, fake: GaleraHost, settings: dict[str, Any]) -> bool:
    return galera.cluster.apply(fake.context(IMAGE, settings))


def make(tmp_path: Path, settings: dict[str, Any], peer_primary: bool, files: dict[str, str] | None = None):
    make_root(str(tmp_path), {"image": IMAGE, "host": settings, "files": files or {}})
    return GaleraHost(str(tmp_path), peer_primary)


def test_designated_node_bootstraps_once_when_no_peer_is_primary(tmp_path: Path) -> None:
    fake = make(tmp_path, host(bootstrap=True), peer_primary=False)
    assert run_step(tmp_path, fake, host(bootstrap=True))
    assert fake.commands.count("galera_new_cluster") == 1
    assert (tmp_path / galera.BOOTSTRAPPED[1:]).exists()
    fake.commands = []
    assert not run_step(tmp_path, fake, host(bootstrap=True))  # Synced already: a no-op
    assert "galera_new_cluster" not in fake.commands


def test_designated_node_joins_when_a_peer_is_primary(tmp_path: Path) -> None:
    fake = make(tmp_path, host(bootstrap=True), peer_primary=True)
    assert run_step(tmp_path, fake, host(bootstrap=True))
    assert "galera_new_cluster" not in fake.commands
    assert "systemctl restart mariadb.service" in fake.commands


def test_node_that_was_in_a_cluster_never_bootstraps_and_waits_for_a_primary_peer(tmp_path: Path) -> None:
    state = "# GALERA saved state\nversion: 2.1\nuuid: 6b3d4a5c-1111-11ef-9a4a-2bd1f0d5e2a1\nseqno: -1\n"
    fake = make(tmp_path, host(bootstrap=True), peer_primary=False, files={galera.GRASTATE[1:]: state})
    with pytest.raises(RetryExhausted, match="primary component"):
        run_step(tmp_path, fake, host(bootstrap=True))
    assert "galera_new_cluster" not in fake.commands


def test_a_node_that_is_not_designated_never_bootstraps(tmp_path: Path) -> None:
    fake = make(tmp_path, host(bootstrap=False, address="10.10.0.12"), peer_primary=False)
    with pytest.raises(RetryExhausted):
        run_step(tmp_path, fake, host(bootstrap=False, address="10.10.0.12"))
    assert "galera_new_cluster" not in fake.commands


def test_galera_cnf_lists_nodes_and_arbitrators_and_this_node() -> None:
    settings = {"cluster_name": "ha", "nodes": ["10.10.0.11", "10.10.0.12"], "arbitrators": ["10.10.0.9"],
                "address": "10.10.0.12", "sst_method": "rsync"}
    text = galera.render_cnf(settings, "db2")
    assert "wsrep_cluster_address    = gcomm://10.10.0.11,10.10.0.12,10.10.0.9\n" in text
    assert "wsrep_node_address       = 10.10.0.12\n" in text and "wsrep_on                 = ON\n" in text


def test_settings_refuse_a_host_outside_its_nodes(tmp_path: Path) -> None:
    settings = host(bootstrap=False, address="10.10.0.13")
    make_root(str(tmp_path), {"image": IMAGE, "host": settings})
    ctx = FakeHost(str(tmp_path), {}).context(IMAGE, settings)
    with pytest.raises(Exception, match="not among them"):
        galera.settings(ctx)


SYNCED = {"wsrep_ready": "ON", "wsrep_local_state": "4", "wsrep_cluster_status": "Primary",
          "wsrep_local_state_comment": "Synced"}


@pytest.mark.parametrize(("status", "donor_ok", "expected"), [
    (SYNCED, False, (200, 200)),
    ({**SYNCED, "wsrep_local_state": "1", "wsrep_local_state_comment": "Joining"}, False, (503, 200)),
    ({**SYNCED, "wsrep_local_state": "2", "wsrep_local_state_comment": "Donor/Desynced"}, False, (503, 200)),
    ({**SYNCED, "wsrep_local_state": "2", "wsrep_local_state_comment": "Donor/Desynced"}, True, (200, 200)),
    ({**SYNCED, "wsrep_cluster_status": "non-Primary"}, False, (503, 503)),
    ({}, False, (503, 503)),  # MariaDB does not answer
])
def test_health_endpoint_passes_only_a_node_that_may_take_sql(status, donor_ok, expected) -> None:
    checker = galera_health.Checker(donor_ok, read=lambda: status)
    checker.refresh()
    assert (checker.answer("/")[0], checker.answer("/primary")[0]) == expected


def test_health_endpoint_answers_from_the_last_reading_while_mariadb_is_slow_to_answer() -> None:
    """A donor busy with a state transfer took over 2 s to answer: a check must not wait for MariaDB."""
    readers, blocked, release = [], threading.Event(), threading.Event()

    def read() -> dict[str, str]:
        readers.append(threading.current_thread())
        if len(readers) > 1:  # the second reading hangs until the test ends
            blocked.set()
            release.wait(30)
        return SYNCED

    checker = galera_health.Checker(False, read=read)
    assert checker.answer("/")[0] == 503  # nothing read yet
    stop = threading.Event()
    poller = threading.Thread(target=checker.poll, args=(stop, 0.01), daemon=True)
    poller.start()
    assert blocked.wait(10)
    codes = [checker.answer("/")[0], checker.answer("/primary")[0]]
    stop.set(), release.set()
    poller.join(10)
    assert codes == [200, 200] and set(readers) == {poller}


def test_health_endpoint_counts_a_stale_reading_as_down() -> None:
    now = [100.0]
    checker = galera_health.Checker(False, read=lambda: SYNCED, clock=lambda: now[0])
    checker.refresh()
    now[0] += galera_health.STALE_SECONDS - 1
    assert checker.answer("/")[0] == 200
    now[0] += 2
    assert checker.answer("/") == (503, "down -\n")


def test_health_endpoint_reports_a_mariadb_that_stops_answering_at_the_next_reading() -> None:
    readings = [{}, SYNCED]
    checker = galera_health.Checker(False, read=readings.pop)
    checker.refresh()
    assert checker.answer("/")[0] == 200
    checker.refresh()
    assert checker.answer("/")[0] == 503


def test_sql_pool_sends_writes_to_one_node_and_cuts_sessions_of_a_dead_one() -> None:
    settings = {"frontends": [{"name": "sql", "bind": "*:3306", "backend": "sql", "mode": "tcp"}],
                "backends": [{"name": "sql", "mode": "tcp", "port": 3306, "check_port": 9200, "health_path": "/",
                              "servers": [{"name": "db1", "address": "10.10.0.11"},
                                          {"name": "db2", "address": "10.10.0.12"}]}]}
    text = lb.render_haproxy(settings, {})
    assert "frontend sql\n    bind *:3306\n    mode tcp\n" in text
    assert "on-marked-down shutdown-sessions port 9200" in text
    assert "    timeout check 5s\n" in text  # a donor slowed by a state transfer is not marked down at 2 s
    assert "    server db1 10.10.0.11:3306 check\n    server db2 10.10.0.12:3306 check  backup\n" in text
    assert "dyn1" not in text  # no spare web slots in a SQL pool


def test_keepalived_never_takes_the_address_back() -> None:
    text = lb.render_keepalived({"virtual_address": "10.10.0.5/24", "password": "p" * 32, "peers": ["10.10.0.9"],
                                 "priority": 150}, "10.10.0.10")
    assert "    state BACKUP\n    nopreempt\n" in text and "unicast_peer {\n        10.10.0.9\n    }" in text
    # HAProxy tracked by process events, not a forked script that can time out on a busy host
    assert "vrrp_track_process golden_haproxy {\n    process haproxy\n" in text and "vrrp_script" not in text


# The cluster file

def ha_cluster(**changes: Any) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "cluster-ha.yaml").read_text())
    data.update(changes)
    return data


def test_ha_example_renders_galera_nodes_the_sql_pool_and_the_arbitrator(tmp_path: Path) -> None:
    out = render(tmp_path, ha_cluster())
    db1, db2, lb1, lb2 = (host_json(out, name) for name in ("db1", "db2", "lb1", "lb2"))
    assert db1["galera"]["bootstrap"] is True and db2["galera"]["bootstrap"] is False
    assert db1["galera"]["nodes"] == ["10.10.0.11", "10.10.0.12"] and db1["galera"]["arbitrators"] == ["10.10.0.9"]
    assert "replication_password" not in db1["mariadb"] and db2["mariadb"]["databases"] == ["shop"]
    lb1, lb2 = lb1["lb"], lb2["lb"]
    assert lb1["backends"] == lb2["backends"]
    sql = next(b for b in lb1["backends"] if b["name"] == "sql")
    assert [s["name"] for s in sql["servers"]] == ["db1", "db2"]
    assert "arbitrator" not in lb1 and lb2["arbitrator"] == {"group": "ha", "nodes": ["10.10.0.11", "10.10.0.12"]}


def test_two_galera_nodes_without_an_arbitrator_are_refused(tmp_path: Path) -> None:
    data = ha_cluster()
    data["hosts"][-1].pop("arbitrator")
    (line,) = problems(tmp_path, data)
    assert "2 sql-galera nodes and 0 arbitrator(s) make an even number of votes" in line


def test_arbitrator_on_a_host_that_is_not_a_load_balancer_is_refused(tmp_path: Path) -> None:
    data = ha_cluster()
    data["hosts"][3]["arbitrator"] = True
    assert any("hosts[3].arbitrator: only a lb host takes arbitrator" in line for line in problems(tmp_path, data))
