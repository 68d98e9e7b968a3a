"""The HA drill's figures, from the load client's records (tests/e2e/ha_client.py), per phase:

- requests sent (a phase without any proves nothing: the drill fails on it);
- failed (no 200), and served late: a 200 whose answer came more than LATE_S after the request's slot (the time
  the client meant to send it), so that the client's queue cannot turn an outage into answers that count;
- the client's liveness: the longest silence between two request starts and the longest a slot waited in the
  client's queue (a client that stalls or dies stops starting requests);
- outages measured from answers: a run of requests (in slot order) without an on-time 200 lasts from the last
  on-time answer before it to the first on-time answer after it, not from start times, and so is not rounded
  to the 5 s request timeout;
- latency percentiles (slot to answer, queue wait included) of the answered requests beside the success rate.

A record: n (its number), t (its slot, seconds from the client's start), began, took, kind, status, phase.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: An answer later than this after its slot is served late.
LATE_S = 2.0
#: The client is taken for dead or stalled when no request started for this long.
LIVENESS_S = 10.0


def slot(record: dict[str, Any]) -> float:
    return float(record.get("t", record["began"]))


def answered(record: dict[str, Any]) -> float:
    return float(record["began"]) + float(record["took"])


def latency(record: dict[str, Any]) -> float:
    """Seconds from the request's slot to its answer: the wait in the client's queue included."""
    return answered(record) - slot(record)


def on_time(record: dict[str, Any]) -> bool:
    return record["status"] == 200 and latency(record) <= LATE_S


def outages(records: list[dict[str, Any]]) -> list[float]:
    """Each run of requests without an on-time 200, in slot order: from the last on-time answer before it (the
    run's first slot when none came before) to the first on-time answer after it (the run's last answer when
    none followed)."""
    ordered = sorted(records, key=lambda r: (slot(r), r.get("n", 0)))
    spans: list[float] = []
    last_good: float | None = None
    start: float | None = None
    run_end = 0.0
    for record in ordered:
        if not on_time(record):
            if start is None:
                start = last_good if last_good is not None else slot(record)
                run_end = answered(record)
            run_end = max(run_end, answered(record))
            continue
        if start is not None:
            spans.append(round(max(0.0, answered(record) - start), 3))
            start = None
        last_good = answered(record)
    if start is not None:
        spans.append(round(max(0.0, run_end - start), 3))
    return spans


def percentile(values: list[float], p: float) -> float | None:
    """The nearest-rank percentile (p in 0..100); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def silence(records: list[dict[str, Any]]) -> float:
    """The longest gap between two consecutive request starts."""
    starts = sorted(float(r["began"]) for r in records)
    return max((b - a for a, b in zip(starts, starts[1:], strict=False)), default=0.0)


@dataclass
class PhaseFigures:
    """One phase (a failure, an upgrade step) as the client saw it."""

    phase: str
    requests: int = 0
    failed: int = 0
    late: int = 0
    longest_outage: float = 0.0
    silence: float = 0.0  # the longest gap between request starts: the client's liveness
    queue_wait: float = 0.0  # the longest a slot waited in the client's queue before its request started
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    back_in_service: float | None = None  # seconds from power-on until the node served again
    notes: list[str] = field(default_factory=list)

    def problems(self, max_outage: float) -> list[str]:
        """What makes this phase's figures fail the drill: no request, a stalled client, a long outage."""
        found = []
        if not self.requests:
            found.append(f"{self.phase}: the client sent no request in this phase (it proves nothing)")
        if self.silence > LIVENESS_S:
            found.append(f"{self.phase}: the client started no request for {self.silence:.1f}s (stalled or dead)")
        if self.longest_outage > max_outage:
            found.append(f"{self.phase}: an outage of {self.longest_outage:.1f}s")
        return found


def phase_figures(phase: str, records: list[dict[str, Any]]) -> PhaseFigures:
    mine = [r for r in records if r["phase"] == phase]
    answered_ok = [latency(r) for r in mine if r["status"] == 200]
    return PhaseFigures(
        phase, requests=len(mine), failed=sum(r["status"] != 200 for r in mine),
        late=sum(r["status"] == 200 and latency(r) > LATE_S for r in mine),
        longest_outage=max(outages(mine), default=0.0), silence=round(silence(mine), 3),
        queue_wait=round(max((float(r["began"]) - slot(r) for r in mine), default=0.0), 3),
        p50=percentile(answered_ok, 50), p95=percentile(answered_ok, 95), p99=percentile(answered_ok, 99))


def figures(records: list[dict[str, Any]], phases: list[str]) -> list[PhaseFigures]:
    """Per phase: the figures above (a phase's records are those the client started while it was marked)."""
    return [phase_figures(phase, records) for phase in phases]


def acknowledged_ids(records: list[dict[str, Any]]) -> set[int]:
    return {r["id"] for r in records if r["kind"] == "write" and r["status"] == 200 and "id" in r}


def success_rate(records: list[dict[str, Any]]) -> float:
    return sum(r["status"] == 200 for r in records) / len(records) if records else 0.0


def on_time_rate(records: list[dict[str, Any]]) -> float:
    return sum(on_time(r) for r in records) / len(records) if records else 0.0


def _ms(value: float | None) -> str:
    return f"{value * 1000:.0f}" if value is not None else "-"


def table(records: list[dict[str, Any]], figs: list[PhaseFigures]) -> str:
    lines = [f"{'phase':<12} {'sent':>6} {'failed':>6} {'late':>5} {'outage':>8} {'p50 ms':>7} {'p95 ms':>7} "
             f"{'p99 ms':>7} {'silence':>8} {'back in service':>16}"]
    for fig in figs:
        back = f"{fig.back_in_service:.0f} s" if fig.back_in_service is not None else "-"
        lines.append(f"{fig.phase:<12} {fig.requests:>6} {fig.failed:>6} {fig.late:>5} {fig.longest_outage:>6.1f} s "
                     f"{_ms(fig.p50):>7} {_ms(fig.p95):>7} {_ms(fig.p99):>7} {fig.silence:>6.1f} s {back:>16}")
    every = [latency(r) for r in records if r["status"] == 200]
    lines.append(f"overall: {len(records)} requests, {success_rate(records) * 100:.2f} % answered 200, "
                 f"{on_time_rate(records) * 100:.2f} % within {LATE_S:g} s; latency p50 {_ms(percentile(every, 50))} "
                 f"ms, p95 {_ms(percentile(every, 95))} ms, p99 {_ms(percentile(every, 99))} ms; "
                 f"{len(acknowledged_ids(records))} writes acknowledged")
    return "\n".join(lines)
