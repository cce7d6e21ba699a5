"""Resilience matrix, one row per fault type (issue 4).

Each row: a real trainer follows a scripted local-backend job (started, 60 logs, 3 checkpoints,
completed: 65 events, ids 1..65) through the chaos proxy whose plan applies the row's fault to
the stream connections. Besides the checks of ``assert_run`` (exactly once and in order, no
partial frame, one terminal callback, the trainer's final state, Last-Event-ID = last complete
frame), each row pins the literal Last-Event-ID values the backend saw and how the proxy cut.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from arkor_trio import ReconnectPolicy
from arkor_trio.testing import (
    CutAfterEvents,
    CutKind,
    DropInHeaders,
    Latency,
    Plan,
    Refuse,
    Stall,
    Status,
    Throttle,
)

from ._checks import (
    AFTER_ID,
    CLEAN,
    DROP,
    IDLE,
    MID,
    REFUSED,
    RESET,
    STALL,
    STATUS,
    cuts,
    gaps_after,
)
from ._harness import FAST, assert_run, follow_through_proxy
from ._scripted import loss_at

STALLING = attrs.evolve(FAST, idle_timeout=IDLE)


@attrs.frozen
class Row:
    plan: Plan
    #: Last-Event-ID of each stream request the proxy read (the backend saw these).
    resume_ids: list[str | None]
    #: How each stream connection ended (runs of refused connections count once).
    kinds: list[CutKind | None]
    policy: ReconnectPolicy = FAST


ROWS: dict[str, Row] = {
    # k = 0 cuts before any frame: no progress, so that reconnect is a backoff failure.
    "cut_at_frame_boundary": Row(
        Plan.of(
            CutAfterEvents(7),
            CutAfterEvents(0),
            CutAfterEvents(20, graceful=True),
            CutAfterEvents(1),
        ),
        [None, "7", "7", "27", "28"],
        [CLEAN, CLEAN, CLEAN, CLEAN, None],
    ),
    "cut_mid_frame": Row(
        Plan.of(
            CutAfterEvents(5, mode="mid_frame"),
            CutAfterEvents(0, mode="mid_frame"),
            CutAfterEvents(30, mode="mid_frame"),
        ),
        [None, "5", "5", "35"],
        [MID, MID, MID, None],
    ),
    "cut_mid_frame_then_rst": Row(
        Plan.of(
            CutAfterEvents(5, mode="reset"),
            CutAfterEvents(0, mode="reset"),
            CutAfterEvents(30, mode="reset"),
        ),
        [None, "5", "5", "35"],
        [RESET, RESET, RESET, None],
    ),
    # The id line of frame k+1 arrives, its frame never completes: it must not be resumed from.
    "cut_after_id_line": Row(
        Plan.of(
            CutAfterEvents(5, mode="after_id"),
            CutAfterEvents(0, mode="after_id"),
            CutAfterEvents(30, mode="after_id"),
        ),
        [None, "5", "5", "35"],
        [AFTER_ID, AFTER_ID, AFTER_ID, None],
    ),
    "stall": Row(
        Plan.of(Stall(after_events=10, seconds=1.0), Stall(after_events=0, seconds=1.0)),
        [None, "10", "10"],
        [STALL, STALL, None],
        STALLING,
    ),
    "refuse": Row(
        Plan.of(CutAfterEvents(10), Refuse(ms=100), CutAfterEvents(10), Refuse(reset=True)),
        [None, "10", "20"],
        [CLEAN, REFUSED, CLEAN, REFUSED, None],
    ),
    "status_503_retry_after": Row(
        Plan.of(
            Status(code=503, count=3, retry_after=1),
            CutAfterEvents(10),
            Status(code=503, retry_after=1),
        ),
        [None, None, None, None, "10", "10"],
        [STATUS, STATUS, STATUS, CLEAN, STATUS, None],
    ),
    "status_429_retry_after": Row(
        Plan.of(
            Status(code=429, count=2, retry_after=1),
            CutAfterEvents(10, mode="mid_frame"),
            Status(code=429, count=2, retry_after=1),
        ),
        [None, None, None, "10", "10", "10"],
        [STATUS, STATUS, MID, STATUS, STATUS, None],
    ),
    "latency_and_jitter": Row(
        Plan.of(
            (Latency(ms=4, jitter_ms=4), CutAfterEvents(15)), default=Latency(ms=4, jitter_ms=4)
        ),
        [None, "15"],
        [CLEAN, None],
    ),
    "throttle": Row(
        Plan.of((Throttle(40_000), CutAfterEvents(25, mode="mid_frame")), default=Throttle(40_000)),
        [None, "25"],
        [MID, None],
    ),
    "drop_in_response_headers": Row(
        Plan.of(DropInHeaders(fraction=0.5), CutAfterEvents(10), DropInHeaders(fraction=0.2)),
        [None, None, "10", "10"],
        [DROP, CLEAN, DROP, None],
    ),
}


def _runs(kinds: list[Any]) -> list[Any]:
    """Collapse runs of REFUSED (their count depends on timing) into one."""
    return [k for i, k in enumerate(kinds) if not (k is REFUSED and i and kinds[i - 1] is REFUSED)]


@pytest.mark.parametrize("name", list(ROWS))
async def test_fault_row(tmp_path, name):
    row = ROWS[name]
    run = await follow_through_proxy(tmp_path, row.plan, policy=row.policy)
    assert len(run.log) == 65
    assert assert_run(run) == row.resume_ids
    logs = [c for c in run.calls if c[0] == "log"]
    assert [c[1] for c in logs] == list(range(1, 61))
    assert all(c[2] == loss_at(c[1]) for c in logs)  # payloads intact, not from a half frame
    assert _runs(cuts(run.streams)) == row.kinds
    assert run.streams[-1].status == 200


async def test_stall_is_ended_by_the_idle_watchdog(tmp_path):
    """The proxy would stall 1 s; the trainer's 0.3 s idle watchdog must reconnect first."""
    run = await follow_through_proxy(tmp_path, ROWS["stall"].plan, policy=STALLING)
    assert_run(run)
    gaps = gaps_after(run.streams, STALL)
    assert len(gaps) == 2
    for gap in gaps:
        assert IDLE * 0.9 <= gap < 1.0, gaps


@pytest.mark.parametrize("code", [503, 429])
async def test_retry_after_is_honoured_up_to_max_delay(tmp_path, code):
    """Retry-After: 1 is capped by max_delay (0.05 s): each retry waits >= 0.05 s, never 1 s."""
    plan = Plan.of(Status(code=code, count=3, retry_after=1), CutAfterEvents(10))
    run = await follow_through_proxy(tmp_path, plan)
    assert assert_run(run) == [None, None, None, None, "10"]
    assert [r.status for r in run.streams] == [code, code, code, 200, 200]
    gaps = gaps_after(run.streams, STATUS)
    assert len(gaps) == 3
    for gap in gaps:
        assert FAST.max_delay <= gap < 1.0, gaps


async def test_refused_window_is_retried_until_it_ends(tmp_path):
    plan = Plan.of(Refuse(ms=100), CutAfterEvents(10))
    run = await follow_through_proxy(tmp_path, plan)
    assert assert_run(run) == [None, "10"]
    refused = [r for r in run.streams if r.cut_kind is REFUSED]
    assert refused, "no connection was refused"
    assert all(r.method is None for r in refused)
    first_served = next(r for r in run.streams if r.cut_kind is not REFUSED)
    assert first_served.opened_at >= refused[0].opened_at + 0.1


async def test_stall_during_a_slow_callback_resumes_from_what_was_read(tmp_path):
    """Rules 1 and 3: while the 5th callback is busy, the reader has read 10 events, the proxy
    stalls, the watchdog still fires and the reconnect resumes from 10 (read), not 4 (done)."""
    reconnected_during_callback_5 = []

    async def busy_at_5(proxy, n, identity):
        if n == 5:  # events 1..4 are committed; this callback returns only after the reconnect
            await proxy.wait_connections(3)  # create, the stalled stream, its successor
            reconnected_during_callback_5.append(True)

    plan = Plan.of(Stall(after_events=10, seconds=1.0))
    run = await follow_through_proxy(tmp_path, plan, policy=STALLING, hook=busy_at_5)
    assert assert_run(run) == [None, "10"]
    assert reconnected_during_callback_5 == [True]
    assert cuts(run.streams) == [STALL, None]
