"""Resilience matrix for ``open_sse`` on a plain SSE endpoint (issue 8), through the chaos proxy.

Each row: ``open_sse`` follows a feed of 60 events (ids 1..60, a ``retry: 10`` block first and a
``: ping`` comment after every 5th event of a connection) through the chaos proxy whose plan
applies the row's fault; the stream ends on the server's 204 once the client resumes from 60.
Besides the checks of ``assert_feed_run`` (exactly once and in order, whole payloads, the
``Last-Event-ID`` chain = the last complete frame before each request, computed from the
proxy's counts of complete blocks), each row pins the literal ``Last-Event-ID`` values the
server saw and how the proxy cut. The pings and the ``retry:`` block are blocks too: a cut after
``k`` blocks delivers fewer than ``k`` events (worked out in each row's comment).
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

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
from ._feed import FAST, assert_feed_run, follow_feed

STALLING = attrs.evolve(FAST, idle_timeout=IDLE)


@attrs.frozen
class Row:
    plan: Plan
    #: Last-Event-ID of each request the proxy read (the last one gets the 204).
    resume_ids: list[str | None]
    #: How each connection ended (runs of refused connections count once).
    kinds: list[CutKind | None]
    policy: Any = FAST
    feed: dict[str, Any] = attrs.field(factory=dict)


ROWS: dict[str, Row] = {
    # 7 blocks = retry, 1..5, ping; 0 blocks: no progress, a backoff; 20 blocks from 5 end at 21;
    # 1 block = the retry block alone: no progress.
    "cut_at_frame_boundary": Row(
        Plan.of(
            CutAfterEvents(7),
            CutAfterEvents(0),
            CutAfterEvents(20, graceful=True),
            CutAfterEvents(1),
        ),
        [None, "5", "5", "21", "21", "60"],
        [CLEAN, CLEAN, CLEAN, CLEAN, None, None],
    ),
    # Half of event 5 (then of the retry block) arrives: resumed from 4; 30 blocks from 4 end at 29.
    "cut_mid_frame": Row(
        Plan.of(
            CutAfterEvents(5, mode="mid_frame"),
            CutAfterEvents(0, mode="mid_frame"),
            CutAfterEvents(30, mode="mid_frame"),
        ),
        [None, "4", "4", "29", "60"],
        [MID, MID, MID, None, None],
    ),
    "cut_mid_frame_then_rst": Row(
        Plan.of(
            CutAfterEvents(5, mode="reset"),
            CutAfterEvents(0, mode="reset"),
            CutAfterEvents(30, mode="reset"),
        ),
        [None, "4", "4", "29", "60"],
        [RESET, RESET, RESET, None, None],
    ),
    # The id line of the next event arrives, its frame never completes: never resumed from.
    "cut_after_id_line": Row(
        Plan.of(
            CutAfterEvents(5, mode="after_id"),
            CutAfterEvents(0, mode="after_id"),
            CutAfterEvents(30, mode="after_id"),
        ),
        [None, "4", "4", "29", "60"],
        [AFTER_ID, AFTER_ID, AFTER_ID, None, None],
    ),
    # 10 blocks = retry, 1..5, ping, 6..8; then silence, ended by the 0.3 s idle watchdog.
    "stall": Row(
        Plan.of(Stall(after_events=10, seconds=1.0), Stall(after_events=0, seconds=1.0)),
        [None, "8", "8", "60"],
        [STALL, STALL, None, None],
        STALLING,
    ),
    "refuse": Row(
        Plan.of(CutAfterEvents(10), Refuse(ms=100), CutAfterEvents(10), Refuse(reset=True)),
        [None, "8", "16", "60"],
        [CLEAN, REFUSED, CLEAN, REFUSED, None, None],
    ),
    "status_503_retry_after": Row(
        Plan.of(
            Status(code=503, count=3, retry_after=1),
            CutAfterEvents(10),
            Status(code=503, retry_after=1),
        ),
        [None, None, None, None, "8", "8", "60"],
        [STATUS, STATUS, STATUS, CLEAN, STATUS, None, None],
    ),
    "status_429_retry_after": Row(
        Plan.of(
            Status(code=429, count=2, retry_after=1),
            CutAfterEvents(10, mode="mid_frame"),
            Status(code=429, count=2, retry_after=1),
        ),
        [None, None, None, "8", "8", "8", "60"],
        [STATUS, STATUS, MID, STATUS, STATUS, None, None],
    ),
    # 15 blocks = retry, 1..5, ping, 6..10, ping, 11, 12.
    "latency_then_throttle": Row(
        Plan.of((Latency(ms=2, jitter_ms=2), CutAfterEvents(15)), default=Throttle(40_000)),
        [None, "12", "60"],
        [CLEAN, None, None],
    ),
    "drop_in_response_headers": Row(
        Plan.of(DropInHeaders(fraction=0.5), CutAfterEvents(10), DropInHeaders(fraction=0.2)),
        [None, None, "8", "8", "60"],
        [DROP, CLEAN, DROP, None, None],
    ),
    # A server that ignores Last-Event-ID replays from event 1 on every connection: 20 blocks
    # end at 16; the next replay (up to 8) stays behind 16, so nothing is delivered and the
    # resume point stays; 45 blocks of the next replay end at 37; the last one goes to 60.
    "replaying_server": Row(
        Plan.of(CutAfterEvents(20), CutAfterEvents(10, mode="mid_frame"), CutAfterEvents(45)),
        [None, "16", "16", "37", "60"],
        [CLEAN, MID, CLEAN, None, None],
        feed={"ignore_last_event_id": True},
    ),
}


def _runs(kinds: list[Any]) -> list[Any]:
    """Collapse runs of REFUSED (their count depends on timing) into one."""
    return [k for i, k in enumerate(kinds) if not (k is REFUSED and i and kinds[i - 1] is REFUSED)]


@pytest.mark.parametrize("name", list(ROWS))
async def test_fault_row(name):
    row = ROWS[name]
    run = await follow_feed(row.plan, policy=row.policy, **row.feed)
    assert assert_feed_run(run) == row.resume_ids
    assert _runs(cuts(run.records)) == row.kinds


async def test_replay_after_a_cut_is_not_delivered_again():
    """The replaying row's duplicates were dropped, counted, and the pings never dispatched."""
    run = await follow_feed(ROWS["replaying_server"].plan, ignore_last_event_id=True)
    assert_feed_run(run)
    # Delivered again by the server: 8 (second connection, all below 16) + 16 (third) + 37.
    assert run.stats.duplicates == 8 + 16 + 37


async def test_stall_is_ended_by_the_idle_watchdog():
    """The proxy would stall 1 s; the 0.3 s idle watchdog must reconnect first."""
    run = await follow_feed(ROWS["stall"].plan, policy=STALLING)
    assert_feed_run(run)
    gaps = gaps_after(run.records, STALL)
    assert len(gaps) == 2
    for gap in gaps:
        assert IDLE * 0.9 <= gap < 1.0, gaps


async def test_a_slow_feed_is_not_cut_while_bytes_arrive():
    """The idle timeout bounds the silence between bytes, not a connection's length: a feed
    throttled to 400 B/s takes more than the 0.5 s idle timeout and is followed in one go."""
    policy = attrs.evolve(FAST, idle_timeout=0.5)
    run = await follow_feed(Plan.of(default=Throttle(400)), policy=policy, total=12)
    assert assert_feed_run(run) == [None, "12"]
    assert run.elapsed > policy.idle_timeout
    assert run.stats.connections == 1


@pytest.mark.parametrize("code", [503, 429])
async def test_retry_after_is_capped_by_max_delay(code):
    """Retry-After: 1 is capped by max_delay (0.05 s): each retry waits >= 0.05 s, never 1 s."""
    run = await follow_feed(Plan.of(Status(code=code, count=3, retry_after=1)))
    assert assert_feed_run(run) == [None, None, None, None, "60"]
    gaps = gaps_after(run.records, STATUS)
    assert len(gaps) == 3
    for gap in gaps:
        assert FAST.max_delay <= gap < 1.0, gaps


async def test_retry_after_is_honoured_below_max_delay():
    """With max_delay 5 s, Retry-After: 1 is waited (plus at most 10 % jitter), not backed off."""
    policy = attrs.evolve(FAST, max_delay=5.0)
    plan = Plan.of(Status(code=503, retry_after=1), Status(code=429, retry_after=1))
    run = await follow_feed(plan, policy=policy)
    assert assert_feed_run(run) == [None, None, None, "60"]
    gaps = gaps_after(run.records, STATUS)
    assert len(gaps) == 2
    for gap in gaps:
        assert 1.0 <= gap < 2.0, gaps  # 1 s plus at most 10 % jitter, never twice
