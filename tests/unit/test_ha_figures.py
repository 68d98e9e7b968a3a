"""The HA drill's figures, from a client log: outages are runs of failed requests, measured from the first
failure's start to the next success's start."""

from __future__ import annotations

from tests.e2e.ha_scenario import acknowledged_ids, figures, outages, success_rate


def rec(began: float, status: int, phase: str = "p", kind: str = "read", **extra) -> dict:
    return {"began": began, "took": 0.1, "status": status, "phase": phase, "kind": kind, **extra}


def test_outage_runs_from_first_failure_to_next_success() -> None:
    records = [rec(0, 200), rec(1, 0), rec(2, 503), rec(4.5, 200), rec(5, 0), rec(6, 200)]
    assert outages(records) == [3.5, 1.0]


def test_outage_still_running_at_the_end_lasts_until_the_last_failure_ends() -> None:
    assert outages([rec(0, 200), rec(1, 0), rec(3, 0)]) == [2.1]


def test_figures_per_phase_and_acknowledged_ids() -> None:
    records = [rec(0, 200, "steady", "write", id=1), rec(1, 0, "lb:lb1", "write"), rec(2, 200, "lb:lb1", "write", id=5),
               rec(3, 200, "lb:lb1")]
    (fig,) = figures(records, ["lb:lb1"])
    assert (fig.requests, fig.failed, fig.longest_outage) == (3, 1, 1.0)
    assert acknowledged_ids(records) == {1, 5}
    assert success_rate(records) == 0.75
