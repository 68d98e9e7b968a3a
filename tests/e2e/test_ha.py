"""`make test-ha`: the reference HA infrastructure (examples/cluster-ha.yaml: 2 lb, 2 web, 2 Galera nodes, nfs)
and a load client, eight guests on one private network; a bounded request stream to the virtual address while
the active load balancer, a web node and the SQL node taking writes are killed and booted again, one at a time.

The short drill (five guests: the lb pair, the Galera pair and a mysql client writing to VIP:3306) kills the
active load balancer and the SQL writer. Marked `vm` and `ha`: outside `make test` (the full drill takes most
of an hour under TCG). HA_RATE, HA_DWELL, HA_MAX_SECONDS and HA_IMAGES shorten it (tests/e2e/ha_scenario.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.drill_record import recorded
from tests.e2e.ha_scenario import (
    Drill,
    acknowledged_ids,
    infrastructure,
    run_drill,
    sql_infrastructure,
    success_rate,
    table,
)

pytestmark = [pytest.mark.vm, pytest.mark.ha]
MAX_OUTAGE = 30.0
MIN_SUCCESS = 0.99


def test_lb_pair_and_galera_survive_the_loss_of_the_active_lb_and_of_the_sql_writer(tmp_path: Path) -> None:
    with recorded("ha-sql"), sql_infrastructure(tmp_path) as drill:
        check(drill)


def test_each_single_failure_is_survived_and_repaired_without_a_hand(tmp_path: Path) -> None:
    with recorded("ha"), infrastructure(tmp_path) as drill:
        check(drill)


def check(drill: Drill) -> None:
    records, figs, found = run_drill(drill)
    print("\n" + table(records, figs))
    assert records, "the client recorded no request"
    assert success_rate(records) >= MIN_SUCCESS, table(records, figs)
    # per phase: requests were sent, the client kept sending (liveness), no outage over the bound
    problems = [problem for fig in figs for problem in fig.problems(MAX_OUTAGE)]
    assert not problems, "; ".join(problems) + "\n" + table(records, figs)
    acked = acknowledged_ids(records)
    assert acked, "no write was acknowledged"
    for node, ids in found.items():
        assert not acked - ids, f"{node} lacks acknowledged ids {sorted(acked - ids)[:10]}"
