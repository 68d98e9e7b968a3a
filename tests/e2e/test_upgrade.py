"""`make test-upgrade`: the reference HA infrastructure (examples/cluster-ha.yaml: 2 lb, 2 web, 2 Galera nodes, nfs)
under the HA drill's load (tests/e2e/ha_scenario.py: the same guests, client and figures), changed by the real
commands over SSH, one after the other: `golden cluster upgrade --apply` (every node converged, node by node),
then `golden cluster reboot --rolling` after every node but nfs1 was flagged (/run/reboot-required). Each phase:
requests sent, no failed request, p99 latency under 2 s. The converge runs apt (the images keep no package lists):
each guest reaches Debian's mirror through the mirror relay, and nothing else.

Marked `vm` and `upgrade`: outside `make test` (eight guests under TCG take most of an hour to boot, and each
node's converge and reboot some minutes more). HA_RATE, HA_DWELL, HA_IMAGES and HA_LOGS as for the drill;
UPGRADE_MAX_SECONDS bounds each command (default 2 h)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from goldenimage.core.ssh_keys import SSHKey
from tests.e2e.drill_record import recorded
from tests.e2e.ha_scenario import (
    Drill,
    figures,
    infrastructure,
    knob,
    start_client,
    stop_client,
    table,
)

pytestmark = [pytest.mark.vm, pytest.mark.upgrade]
ROOT = Path(__file__).resolve().parents[2]
MAX_P99 = 2.0
PHASES = ("upgrade:apply", "reboot:rolling")
#: the drill's client is not part of the infrastructure: the commands never see it
CLIENT = "client"
#: nfs1 stands in for a NAS-HA share: no other node takes its work, so the rolling reboot names it and leaves it
NOT_REBOOTED = ("nfs1",)


def cluster_files(drill: Drill, tmp: Path) -> tuple[Path, Path, Path]:
    """The cluster file without the client, its inventory (each guest's forwarded SSH port on 127.0.0.1), and an
    output folder holding the drill's generated secrets (the running hosts use those)."""
    spec = yaml.safe_load((tmp / "cluster.yaml").read_text())
    spec["hosts"] = [h for h in spec["hosts"] if h["name"] != CLIENT]
    folder = tmp / "upgrade"
    folder.mkdir()
    cluster = folder / "cluster.yaml"
    cluster.write_text(yaml.safe_dump(spec, sort_keys=False))
    names = [h["name"] for h in spec["hosts"]]
    inventory = folder / "inventory.yaml"
    inventory.write_text(yaml.safe_dump({"user": drill[names[0]].user, "hosts": {
        name: f"127.0.0.1:{drill[name].ssh_port}" for name in names}}))
    out = folder / "rendered"
    shutil.copytree(drill.rendered, out)  # golden's own output folder: secrets.json and its marker
    return cluster, inventory, out


def golden(drill: Drill, tmp: Path, files: tuple[Path, Path, Path], *args: str) -> str:
    cluster, inventory, out = files
    key = drill.net.key
    identity = key.private if isinstance(key, SSHKey) else key
    argv = [sys.executable, "-m", "goldenimage.cli", "cluster", *args, str(cluster), "--inventory", str(inventory),
            "--out", str(out), "--identity", str(identity), "--accept-new-host-key",
            "--known-hosts", str(tmp / "known_hosts")]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                          timeout=knob("UPGRADE_MAX_SECONDS", 7200))
    drill.log(f"golden cluster {' '.join(args)}: exit {done.returncode} after {time.monotonic() - started:.0f}s\n"
              f"{done.stderr[-4000:]}\n{done.stdout[-2000:]}")
    assert done.returncode == 0, f"golden cluster {' '.join(args)} exited {done.returncode}: {done.stdout[-1500:]}"
    return done.stdout


def test_a_rolling_apply_upgrade_and_a_rolling_reboot_fail_no_request(tmp_path: Path) -> None:
    with recorded("upgrade"):
        rolling_apply_and_reboot(tmp_path)


def rolling_apply_and_reboot(tmp_path: Path) -> None:
    with infrastructure(tmp_path, mirror=True) as drill:  # the converge's apt reaches Debian's mirror only
        files = cluster_files(drill, tmp_path)
        dwell = knob("HA_DWELL", 30)
        start_client(drill, knob("HA_RATE", 5), knob("HA_MAX_SECONDS", 4 * 3600))
        time.sleep(dwell)

        drill.phase(PHASES[0])
        out = golden(drill, tmp_path, files, "upgrade", "--apply")
        assert "rolling apply: 7 of 7 node(s) changed" in out, out
        time.sleep(dwell)

        boots = {name: drill.sh(name, "cat /proc/sys/kernel/random/boot_id").strip() for name in drill.hosts
                 if name != CLIENT}
        for name in boots:
            if name not in NOT_REBOOTED:
                drill.sh(name, "sudo touch /run/reboot-required")
        drill.phase(PHASES[1])
        out = golden(drill, tmp_path, files, "reboot", "--rolling")
        assert "rolling reboot: 6 of 7 node(s) changed; skipped (no stand-in): nfs1" in out, out
        time.sleep(dwell)
        drill.phase("end")
        records = stop_client(drill)
        for name, before in boots.items():
            now = drill.sh(name, "cat /proc/sys/kernel/random/boot_id").strip()
            assert (now == before) == (name in NOT_REBOOTED), f"{name}: boot id {before} -> {now}"

    figs = figures(records, list(PHASES))
    report = table(records, figs)
    print("\n" + report)
    if os.environ.get("HA_LOGS"):
        (Path(os.environ["HA_LOGS"]) / "upgrade-figures.txt").write_text(report + "\n")
    problems = [problem for fig in figs for problem in fig.problems(max_outage=30.0)]
    for fig in figs:
        if fig.failed:
            problems.append(f"{fig.phase}: {fig.failed} failed request(s)")
        if fig.p99 is None or fig.p99 >= MAX_P99:
            problems.append(f"{fig.phase}: p99 latency {fig.p99} s (the target: under {MAX_P99:g} s)")
    assert not problems, "; ".join(problems) + "\n" + report
