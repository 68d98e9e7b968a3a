"""The HA drill's figures from synthetic client records: per phase requests sent, failed, served late (over 2 s
from the slot), the client's liveness, outages measured from answers, latency percentiles."""

from __future__ import annotations

from typing import Any

from tests.e2e.ha_figures import (
    LATE_S,
    acknowledged_ids,
    figures,
    on_time_rate,
    outages,
    percentile,
    success_rate,
    table,
)


def rec(t: float, status: int = 200, took: float = 0.05, phase: str = "p", kind: str = "read", wait: float = 0.0,
        **extra: Any) -> dict[str, Any]:
    """A request with slot t, started `wait` later (the client's queue), answered `took` after it started."""
    return {"n": int(t * 10), "t": t, "began": t + wait, "took": took, "status": status, "phase": phase,
            "kind": kind, **extra}


def stream(rate: float, seconds: float, phase: str = "p", **kwargs: Any) -> list[dict[str, Any]]:
    return [rec(i / rate, phase=phase, **kwargs) for i in range(int(rate * seconds))]


def test_an_outage_runs_from_the_last_good_answer_to_the_next_one_not_rounded_to_the_timeout() -> None:
    # 5 requests/s; the requests of slots 1.0 to 1.8 get nothing within the 5 s timeout
    records = [rec(t / 10, 0 if 10 <= t <= 18 else 200, took=5.0 if 10 <= t <= 18 else 0.05)
               for t in range(0, 40, 2)]
    # last good answer 0.8 + 0.05, first good answer 2.0 + 0.05: 1.2 s, not 5 s and more
    assert outages(records) == [1.2]


def test_answers_the_queue_made_late_count_as_an_outage_not_as_served() -> None:
    # every worker was stuck: slots 2.0-3.8 waited 3 s in the queue, then were answered 200
    records = [rec(t / 10, wait=3.0 if 20 <= t < 40 else 0.0) for t in range(0, 60, 2)]
    (fig,) = figures(records, ["p"])
    assert fig.failed == 0 and fig.late == 10
    assert fig.queue_wait == 3.0
    assert outages(records) == [round(4.05 - 1.85, 3)]  # last on-time answer 1.85, next on-time 4.0 + 0.05
    assert success_rate(records) == 1.0 and on_time_rate(records) == 20 / 30


def test_an_outage_still_running_at_the_end_lasts_until_its_last_answer() -> None:
    assert outages([rec(0), rec(1, 0, took=5.0), rec(2, 0, took=5.0)]) == [round(7.0 - 0.05, 3)]


def test_a_phase_without_requests_fails_instead_of_counting_zero() -> None:
    records = stream(5, 10, phase="lb:lb1")
    lb, web = figures(records, ["lb:lb1", "web:web1"])
    assert lb.problems(30.0) == []
    assert (web.requests, web.failed, web.longest_outage) == (0, 0, 0.0)
    assert web.problems(30.0) == ["web:web1: the client sent no request in this phase (it proves nothing)"]


def test_a_client_that_stalls_is_caught_by_its_silence() -> None:
    records = stream(5, 4) + [rec(20.0), rec(20.2)]  # nothing started between 3.8 and 20
    (fig,) = figures(records, ["p"])
    assert fig.silence == 16.2
    assert any("started no request for 16.2s" in p for p in fig.problems(30.0))


def test_latency_percentiles_are_of_the_answered_requests_slot_to_answer() -> None:
    records = [rec(i, took=0.01 * (i + 1)) for i in range(100)] + [rec(100, 0, took=5.0)]
    (fig,) = figures(records, ["p"])
    assert [round(v, 6) for v in (fig.p50, fig.p95, fig.p99)] == [0.5, 0.95, 0.99]  # type: ignore[arg-type]
    assert fig.failed == 1 and fig.late == 0
    assert percentile([], 99) is None
    assert "p99 ms" in table(records, [fig])


def test_late_is_more_than_two_seconds_after_the_slot() -> None:
    records = [rec(0, took=LATE_S), rec(1, took=LATE_S + 0.01)]
    (fig,) = figures(records, ["p"])
    assert fig.late == 1


def test_acknowledged_ids_are_the_answered_writes() -> None:
    records = [rec(0, kind="write", id=1), rec(1, 0, kind="write"), rec(2, kind="write", id=5), rec(3)]
    assert acknowledged_ids(records) == {1, 5}
