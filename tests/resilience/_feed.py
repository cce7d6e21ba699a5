"""How an ``open_sse`` matrix row runs: a plain SSE feed, the chaos proxy, one channel.

:func:`follow_feed` starts a :class:`~tests.sse_feed_server.FeedServer` (events 1..total with
``id:`` lines, a ``retry:`` block and ``: ping`` comments in every connection, 204 once the
client resumes from the last event), puts a chaos proxy with the row's plan in front of it, and
follows ``proxy.url + "/feed"`` with :func:`arkor_trio.stream.open_sse` until the 204 ends
iteration, every wait bounded by ``trio.fail_after``.

What every row asserts (:func:`assert_feed_run`):

* exactly once and in order: the frames yielded carry ids ``1..total``, each once, with the
  server's payload for that id (a half-received frame would have a cut payload or be missing)
  and ``last_event_id`` equal to their own id;
* the ``Last-Event-ID`` of every request the proxy read equals the id of the last *complete*
  frame delivered before it, computed from the proxy's own records: a connection that got a 200
  passed ``events_passed`` complete blocks (pings and the ``retry:`` block included) of the
  exact block list :meth:`FeedServer.blocks` gives for its resume point;
* the chain never goes backwards, and the last request (from ``total``) got the 204.

Everything runs on the real clock (real sockets), like the job-API matrix, with short reconnect
delays (:data:`FAST`).
"""

from __future__ import annotations

import attrs
import trio

from arkor_trio.sse import SSEFrame
from arkor_trio.stream import ReconnectPolicy, StreamStats, open_sse
from arkor_trio.testing import ConnectionRecord, CutKind, Plan, open_chaos_proxy
from tests.sse_feed_server import FeedServer, open_feed_server, payload

#: Bound on every row: a regression fails here instead of hanging the suite.
BOUND = 20.0
#: Short reconnect delays, unlimited retries; idle_timeout is long unless a row stalls.
FAST = ReconnectPolicy(initial_delay=0.01, max_delay=0.05, idle_timeout=5.0)
#: The feed of every row: 60 events, a ping after every 5th, ``retry: 10`` first.
FEED = {"total": 60, "ping_every": 5, "retry_ms": 10}


@attrs.frozen(kw_only=True)
class FeedRun:
    """What one followed feed produced."""

    frames: list[SSEFrame]
    records: list[ConnectionRecord]
    server: FeedServer
    stats: StreamStats
    elapsed: float


async def follow_feed(plan: Plan, *, policy: ReconnectPolicy = FAST, **feed: object) -> FeedRun:
    """Follow a feed (``FEED`` updated with ``feed``) through a proxy applying ``plan``."""
    with trio.fail_after(BOUND):
        async with (
            open_feed_server(**{**FEED, **feed}) as server,
            open_chaos_proxy(server.url, plan=plan) as proxy,
        ):
            began = trio.current_time()
            async with open_sse(f"{proxy.url}/feed", policy=policy) as stream:
                frames = [frame async for frame in stream]
                stats = stream.stats
            elapsed = trio.current_time() - began
            await proxy.wait_closed(len(proxy.records))
            records = proxy.records
    return FeedRun(frames=frames, records=records, server=server, stats=stats, elapsed=elapsed)


def expected_resume_ids(records: list[ConnectionRecord], server: FeedServer) -> list[str | None]:
    """The ``Last-Event-ID`` each request must carry, from the proxy's counts of complete blocks.

    Ids are increasing numbers, so the resume point is the largest complete id delivered so far
    (a replay from a server ignoring the header moves nothing until it passes that point).
    """
    position: str | None = None
    expected: list[str | None] = []
    for record in records:
        if record.method is None:
            continue  # refused or dropped before the request head: no header was seen
        expected.append(position)
        if record.status == 200:
            passed = server.blocks(position)[: record.events_passed]
            ids = [int(i) for i in passed if i is not None]
            if ids and ids[-1] > int(position or 0):
                position = str(ids[-1])
    return expected


def assert_feed_run(run: FeedRun) -> list[str | None]:
    """The checks of every row (see the module docstring); returns the Last-Event-IDs seen."""
    total = run.server.total
    assert [f.id for f in run.frames] == [str(n) for n in range(1, total + 1)]
    assert [f.data for f in run.frames] == [payload(n) for n in range(1, total + 1)]
    assert all(f.last_event_id == f.id for f in run.frames)
    assert run.stats.events == total
    seen = [r.last_event_id for r in run.records if r.method is not None]
    assert seen == expected_resume_ids(run.records, run.server)
    numbers = [int(i or 0) for i in seen]
    assert numbers == sorted(numbers), f"Last-Event-ID went backwards: {seen}"
    assert run.records[-1].status == 204
    assert run.records[-1].last_event_id == str(total)
    # The server saw the same chain the proxy forwarded (requests the proxy answered itself
    # with a status never reached it).
    upstream = [
        r.last_event_id
        for r in run.records
        if r.method is not None and r.cut_kind is not CutKind.STATUS
    ]
    assert run.server.last_event_ids() == upstream
    return seen
