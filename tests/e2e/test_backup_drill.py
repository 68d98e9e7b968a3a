"""The backup drill on the SQL pair's images (`make test-backup`): a client on the primary acknowledging rows
all along, the replica backing up (mariabackup, binlogs every 10 s) into nanio, the S3 server that verifies
Signature V4, on the host's 127.0.0.1 (guests reach it as 10.0.2.100:9000 through a guestfwd relay: restricted
user networking, nothing else outside QEMU).

1. A full backup; writes go on; a table is dropped at a second db1 notes. `golden backup restore` onto a fresh
   SQL host (db3, booted from the image) as of one second before: every row acknowledged by then is there,
   none begun after it. No object of the bucket holds a known row value in clear.
2. The primary is destroyed (its VM killed, its disk deleted) and the replica's shipping stopped at the same
   instant (the worst case: the whole pair lost); the latest state is restored onto db3 and the acknowledged
   rows it lacks are counted: the RPO, printed, under 60 s of writes."""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from goldenimage.bake.pipeline import bake
from goldenimage.cli import main
from goldenimage.core.ssh_keys import ephemeral_keypair
from goldenimage.render.cluster import render_cluster
from goldenimage.verify.l2switch import L2Switch
from goldenimage.verify.vm import SSH_OPTIONS, VM
from tests.conftest import EXAMPLES
from tests.e2e.drill_record import recorded
from tests.e2e.test_cluster_sql import sql, wait_firstboot

pytestmark = [pytest.mark.vm, pytest.mark.backup]
RELAY = Path(__file__).resolve().parent / "tcp_relay.py"
GUEST_S3 = ("10.0.2.100", 9000)
BUCKET = "golden-drill"
ROW_SECRET = "GOLDEN-DRILL-ROW-5b0c2e"
BINLOG_SECONDS = 10
RPO_GOAL = 60.0
#: The row db1 writes in the drop's own session, acknowledged in the drop's second (never the writer's ids).
LAST_ROW = 10**9


class Writer(threading.Thread):
    """A client on db1 inserting one row per statement through a single SSH stream; each row's server time
    (NOW(6), the binlog's timestamp) comes back with its acknowledgement, which the host times on arrival."""

    def __init__(self, vm: VM, table: str, start: int) -> None:
        super().__init__(daemon=True)
        script = (f"i={start}; while [ $i -lt {start + 100000} ]; do "
                  f"mysql -N -B -e \"SET @t = NOW(6); INSERT INTO shop.{table} VALUES ($i, @t); "
                  "SELECT $i, UNIX_TIMESTAMP(@t);\" || exit 1; i=$((i+1)); done")
        argv = ["ssh", *SSH_OPTIONS, "-p", str(vm.ssh_port), "-i", str(vm.key), f"{vm.user}@127.0.0.1",
                "sudo sh -c " + shlex.quote(script)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.acks: dict[int, tuple[float, float]] = {}  # id -> (server time, host time of the acknowledgement)

    def run(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            fields = line.split()
            if len(fields) == 2:
                self.acks[int(fields[0])] = (float(fields[1]), time.time())

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.join(timeout=30)


def cluster_spec(key: str) -> dict[str, Any]:
    spec = yaml.safe_load((EXAMPLES / "cluster-sql.yaml").read_text())
    spec["ssh_authorized_keys"] = [key]
    spec["hosts"].append({"name": "db3", "profile": "sql-primary", "address": "10.10.0.13"})
    spec["secrets"].update({"backup_access_key": {"env": "GOLDEN_DRILL_S3_KEY"},
                            "backup_secret_key": {"env": "GOLDEN_DRILL_S3_SECRET"}})
    spec["backup"] = {"store": {"endpoint": f"http://{GUEST_S3[0]}:{GUEST_S3[1]}", "bucket": BUCKET},
                      "schedule": {"binlog_seconds": BINLOG_SECONDS}}
    return spec


def restore(db3: VM, key: Path, tmp: Path, at: str, capsys: pytest.CaptureFixture[str]) -> str:
    """`golden backup restore` onto db3 over SSH, as an operator runs it; its output."""
    capsys.readouterr()
    status = main(["backup", "restore", f"{db3.user}@127.0.0.1:{db3.ssh_port}", "--at", at, "--source", "db2",
                   "--identity", str(key), "--known-hosts", str(tmp / "known_hosts"), "--accept-new-host-key"])
    out = capsys.readouterr()
    assert status == 0, out.err[-3000:]
    return out.out


def rows(vm: VM, table: str) -> dict[int, float]:
    text = sql(vm, f"SELECT id, UNIX_TIMESTAMP(created) FROM shop.{table}")
    return {int(a): float(b) for a, b in (line.split() for line in text.splitlines())}


def replicated(replica: VM, query: str, expected: str, timeout: float = 300) -> None:
    """Wait (bounded) until the replica answers `query` with `expected`."""
    deadline = time.monotonic() + timeout
    while sql(replica, query) != expected:
        assert time.monotonic() < deadline, f"{replica.name} never answered {query!r} with {expected!r}"
        time.sleep(2)


def start(vm: VM, unit: str, timeout: float) -> None:
    """systemctl start UNIT, waited for; when it fails, the unit's journal and the agent's backup status are
    the assertion's message (a failed job says why in one line there, never only "exit code")."""
    done = vm.ssh(f"sudo systemctl start {unit}", timeout=timeout, check=False)
    if done.returncode != 0:
        journal = vm.ssh(f"sudo journalctl -u {unit} -n 60 --no-pager; sudo golden-firstboot backup status",
                         timeout=120, check=False)
        pytest.fail(f"{vm.name}: {unit} failed:\n{done.stderr}\n{journal.stdout}\n{journal.stderr}")


def ship(db2: VM) -> None:
    """One more binlog run on the replica (after any the timer is running), waited for."""
    start(db2, "golden-backup-binlog.service", 600)


def test_restore_to_one_second_before_a_drop_then_the_rpo_after_losing_the_primary(
        sigv4_s3, tmp_path, monkeypatch, capsys):
    with recorded("backup") as booted:
        images = {name: bake(name, 12) for name in ("sql-primary", "sql-replica")}
        booted.extend(artifact.qcow2 for artifact in images.values())
        backup_drill(images, sigv4_s3, tmp_path, monkeypatch, capsys)


def backup_drill(images, sigv4_s3, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GOLDEN_DRILL_S3_KEY", sigv4_s3.access_key)
    monkeypatch.setenv("GOLDEN_DRILL_S3_SECRET", sigv4_s3.secret_key)
    key = ephemeral_keypair(tmp_path)
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(cluster_spec(key.public)))
    render_cluster(tmp_path / "cluster.yaml", tmp_path / "rendered")
    hosts = json.loads((tmp_path / "rendered" / "hosts.json").read_text())
    port = int(sigv4_s3.endpoint.rsplit(":", 1)[1])
    forward = f"guestfwd=tcp:{GUEST_S3[0]}:{GUEST_S3[1]}-cmd:{sys.executable} {RELAY} {port}"
    with L2Switch() as switch, ExitStack() as stack:
        vms = {}
        for name in ("db1", "db2", "db3"):
            host = hosts[name]
            vms[name] = stack.enter_context(VM(
                images[host["profile"]].qcow2, seed=tmp_path / "rendered" / name / "seed.iso", key=key, name=name,
                mac=host["uplink_mac"], extra_args=switch.netdev_args(host["mac"]), workdir=tmp_path / name,
                cpus=1, memory_mib=768, netdev_options=[forward]))
        db1, db2, db3 = vms["db1"], vms["db2"], vms["db3"]
        for vm in vms.values():
            vm.wait_for_ssh(timeout=900)
        for vm in vms.values():
            wait_firstboot(vm)
        # db3 is the host restored onto: its own jobs (it is a primary without a replica) are not the drill's.
        db3.ssh("sudo systemctl stop golden-backup-full.timer golden-backup-binlog.timer golden-backup-full.service "
                "golden-backup-binlog.service", timeout=300)

        # 1. point in time
        sql(db1, "CREATE TABLE shop.orders (id INT PRIMARY KEY, created DATETIME(6)); "
                 f"CREATE TABLE shop.notes (v VARCHAR(64)); INSERT INTO shop.notes VALUES ('{ROW_SECRET}')")
        writer = Writer(db1, "orders", 1)
        writer.start()
        start(db2, "golden-backup-full.service", 1800)
        time.sleep(15)
        # The drop late in db1's second, a row acknowledged just before it in the same session: the rows of that
        # second must not return. (Under TCG the writer's own rows can be seconds apart: the drill's first full
        # run had none in the drop's second, and so nothing that tested "none after".)
        last_row, dropped = (float(v) for v in db1.ssh(
            "sudo sh -c 'while [ $(date +%N | cut -c1) -lt 7 ]; do sleep 0.05; done; "
            f"mysql -N -B -e \"SET @t = NOW(6); INSERT INTO shop.orders VALUES ({LAST_ROW}, @t); "
            "SELECT UNIX_TIMESTAMP(@t), UNIX_TIMESTAMP(NOW(6)); DROP TABLE shop.orders\"'").stdout.split())
        time.sleep(3)
        writer.stop()
        writer.acks[LAST_ROW] = (last_row, time.time())
        replicated(db2, "SHOW TABLES FROM shop LIKE 'orders'", "")  # the drop reached the replica's binlog
        ship(db2)
        at = math.floor(dropped) - 1
        iso_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
        print(restore(db3, key.private, tmp_path, iso_at, capsys))
        restored = rows(db3, "orders")
        before = {i for i, (created, _) in writer.acks.items() if created < at + 1}
        after = {i for i, (created, _) in writer.acks.items() if created >= at + 1}
        assert len(before) > 20 and after, (len(before), len(after))
        assert before <= set(restored), sorted(before - set(restored))[:10]
        assert not set(restored) & after, sorted(set(restored) & after)[:10]
        assert all(created < at + 1 for created in restored.values())

        s3 = boto3.client("s3", endpoint_url=sigv4_s3.endpoint, aws_access_key_id=sigv4_s3.access_key,
                          aws_secret_access_key=sigv4_s3.secret_key, region_name="us-east-1")
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
                for o in page.get("Contents", [])]
        assert len(keys) > 10
        assert sql(db3, "SELECT v FROM shop.notes") == ROW_SECRET  # the value is in the backup...
        for object_key in keys:  # ...and in no object as it is
            assert ROW_SECRET.encode() not in s3.get_object(Bucket=BUCKET, Key=object_key)["Body"].read(), object_key

        # 2. RPO: the primary lost, the replica's shipping stopped with it
        sql(db1, "CREATE TABLE shop.orders2 (id INT PRIMARY KEY, created DATETIME(6))")
        writer = Writer(db1, "orders2", 1)
        writer.start()
        time.sleep(3 * BINLOG_SECONDS + 5)
        deadline = time.monotonic() + 240  # under TCG a row can take a second or more: wait for 20 (bounded)
        while len(writer.acks) <= 20 and time.monotonic() < deadline:
            time.sleep(2)
        db2.ssh("sudo systemctl stop golden-backup-binlog.timer", timeout=120)
        db1.stop()  # QEMU killed, its disk (the overlay) deleted
        lost_at = time.time()
        writer.stop()
        acked = writer.acks
        db3.ssh("sudo mysql -e 'DROP DATABASE shop'")  # db3 takes a second restore: fresh again
        print(restore(db3, key.private, tmp_path, "now", capsys))
        back = set(rows(db3, "orders2"))
        lost = sorted(set(acked) - back)
        newest_back = max((acked[i][1] for i in back if i in acked), default=lost_at)
        last_ack = max(t for _, t in acked.values())
        rpo = last_ack - newest_back if lost else 0.0
        print(f"RPO: {len(lost)} of {len(acked)} acknowledged rows lost, {rpo:.1f} s of writes "
              f"(binlogs shipped every {BINLOG_SECONDS} s)")
        assert len(acked) > 20
        assert rpo < RPO_GOAL, (rpo, lost[:10])
