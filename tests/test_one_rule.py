"""Issue 17: the exactly-once rule in one place (stream/_ledger.py); each defect's test.

Time is trio's MockClock (autojump) where the server is the scripted one.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import trio

from arkor_trio import HuggingfaceDataset, ReconnectPolicy, aio, create_trainer
from arkor_trio.stream import (
    GapLog,
    LeaseLost,
    MemoryCursorStore,
    StreamCounters,
    open_sse,
)
from arkor_trio.wire._feed import JobFeed
from tests.sse_feed_server import open_feed_server
from tests.sse_script_server import COMPLETED, STARTED, Conn, frame, log_event


def _trainer(client: Any, callbacks: dict[str, Any], **kw: Any) -> Any:
    return create_trainer(
        name="t",
        model="unsloth/gemma-4-E4B-it",
        dataset=HuggingfaceDataset("arkorlab/triage-demo"),
        callbacks=callbacks,
        client=client,
        reconnect=kw.pop("reconnect", ReconnectPolicy(idle_timeout=5.0, max_attempts=5)),
        **kw,
    )


def _log(n_logs: int, first: int = 1) -> bytes:
    """Frames ``first..n_logs + 2``: id 1 started, ids 2.. logs (step id-1), the last completed."""
    out = []
    for i in range(first, n_logs + 3):
        if i == 1:
            out.append(frame(i, STARTED))
        elif i == n_logs + 2:
            out.append(frame(i, COMPLETED))
        else:
            out.append(frame(i, log_event(i - 1)))
    return b"".join(out)


async def test_defect_1_a_retried_wait_after_a_raise_on_a_connections_first_event(
    autojump_clock, client, server
):
    """Before: the resumed connection's first id was kept as a replay anchor though never
    dispatched, so the next wait() dropped every frame and never finished."""
    steps: list[int] = []
    raised = []

    def on_log(ctx: Any) -> None:
        if ctx.step == 3 and not raised:
            raised.append(ctx.step)
            raise RuntimeError("once")
        steps.append(ctx.step)

    body = _log(4)  # ids 1..6: started, steps 1..4, completed
    cut = body.index(b"id: 4\n")
    server.conns.append(Conn(body=[body[:cut]]))  # ids 1..3, then the connection ends
    server.conns.append(Conn(body=[body[cut:]]))  # resumed after 3: its first id 4 raises
    server.conns.append(Conn(body=[body[cut:]]))  # the next wait(): resumed after 3 again
    trainer = _trainer(client, {"on_log": on_log})
    with pytest.raises(RuntimeError, match="once"):
        await trainer.wait()
    assert trainer.cursor == "3"
    with trio.fail_after(60):
        result = await trainer.wait()
    assert result.job.status == "completed"
    assert steps == [1, 2, 3, 4]
    assert server.last_event_ids() == [None, "3", "3"]


async def test_defect_2_a_large_buffer_and_a_raise_skip_nothing(autojump_clock, client, server):
    """Before: with buffer_size=10000 the last dispatched id had left the dedupe window, the
    read-ahead ids stayed "seen" and the retried wait() skipped thousands of events."""
    n = 12_000
    steps: list[int] = []
    raised = []

    def on_log(ctx: Any) -> None:
        if ctx.step == 4_091 and not raised:
            raised.append(ctx.step)
            raise RuntimeError("once")
        steps.append(ctx.step)

    body = _log(n)
    server.conns.append(Conn(body=[body], end="hang"))
    server.conns.append(Conn(body=[body[body.index(b"id: 4092\n") :]]))
    policy = ReconnectPolicy(buffer_size=10_000, idle_timeout=5.0, max_attempts=3)
    trainer = _trainer(client, {"on_log": on_log}, reconnect=policy)
    with pytest.raises(RuntimeError, match="once"):
        await trainer.wait()
    result = await trainer.wait()
    assert result.job.status == "completed"
    assert steps == list(range(1, n + 1))
    assert server.last_event_ids() == [None, "4091"]


async def test_a_websocket_reset_keeps_the_dedupe(autojump_clock):
    """Issue 18 item 11: a ``reset`` cleared the dedupe window, so a replay of handled ids was
    delivered again (1..5, 1..5, 6); the ledger's rule drops it (1..5, 6)."""

    class Nowhere:
        async def websocket_target(self, path: str) -> tuple[str, list[Any]]:
            await trio.sleep_forever()
            raise AssertionError

    async with JobFeed(Nowhere()) as feed:  # type: ignore[arg-type]
        sub = feed.subscribe("job-1", after=None, ledger=None)
        await trio.testing.wait_all_tasks_blocked()

        def event(i: int) -> dict[str, Any]:
            data = log_event(i) | {"jobId": "job-1"}
            return {"type": "event", "job": "job-1", "id": str(i), "event": "x", "data": data}

        for i in range(1, 6):
            feed._handle(event(i))
        feed._handle({"type": "reset", "job": "job-1", "reason": "history gone"})
        for i in range(1, 7):
            feed._handle(event(i))
        got = [(await sub.__anext__()).event_id for _ in range(6)]
        assert got == ["1", "2", "3", "4", "5", "6"]
        assert feed.stats.duplicates == 5
        feed.remove("job-1")


def test_defect_8_aio_iterate_commits_the_last_frame_on_a_normal_exit():
    """Before: the trio side always left through Cancelled: asyncio committed 2, trio 3."""
    ready = threading.Event()
    stop = threading.Event()
    url: list[str] = []

    def serve() -> None:
        async def main() -> None:
            async with open_feed_server(total=10) as server:
                url.append(server.feed_url)
                ready.set()
                while not stop.is_set():
                    await trio.sleep(0.01)

        trio.run(main)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert ready.wait(10)
        store = MemoryCursorStore()

        async def consume() -> list[str]:
            seen = []
            async with aio.iterate(open_sse(url[0], cursor_store=store, cursor_key="k")) as it:
                async for frame in it:
                    seen.append(frame.id)
                    if len(seen) == 3:
                        break
            return seen

        assert asyncio.run(asyncio.wait_for(consume(), 20)) == ["1", "2", "3"]
        assert store.peek("k").id == "3"
    finally:
        stop.set()
        thread.join(10)


def test_defect_13_stats_gaps_are_bounded():
    """Before: ``stats.gaps`` kept one entry per reconnect (3,000 connections: 2,999)."""
    counters = StreamCounters()
    for i in range(3_000):
        counters.gaps.append(0.001 * (i % 10))
    stats = counters.snapshot()
    assert len(stats.gaps) <= 64
    assert stats.gap_count == 3_000
    assert stats.gap_max == pytest.approx(0.009)
    assert isinstance(counters.gaps, GapLog)


async def test_a_stale_lease_commits_nothing(autojump_clock):
    store = MemoryCursorStore()
    async with store.lease("k", ttl=3.0) as first:
        await store.commit("k", "1", lease=first)
    async with store.lease("k", ttl=3.0) as second:
        assert second.token > first.token
        with pytest.raises(LeaseLost):
            await store.commit("k", "2", lease=first)
        assert store.peek("k").id == "1"


async def test_a_callback_sees_its_delivery(autojump_clock, client, server):
    seen: list[Any] = []
    server.conns.append(Conn(body=[_log(2)]))
    trainer = _trainer(client, {"on_log": lambda ctx: seen.append(ctx.delivery)})
    await trainer.wait()
    assert [(d.job_id, d.event_id) for d in seen] == [("job-1", "2"), ("job-1", "3")]
    assert all(d.token >= 1 and d.holder.startswith("pid ") for d in seen)


async def test_open_sse_is_one_follower_per_key_in_a_file_store(tmp_path):
    """Issue 21 item 6: two followers of one cursor_key in one FileCursorStore both handled
    every event; now the second waits for the first's lease and resumes after its cursor."""
    from arkor_trio.stream import FileCursorStore

    path = tmp_path / "c.json"
    policy = ReconnectPolicy(initial_delay=0.01, max_delay=0.05, idle_timeout=5.0)
    handled: list[tuple[str, str | None]] = []
    first_in = trio.Event()
    with trio.fail_after(20):
        async with open_feed_server(total=6) as server:

            async def follow(name: str, stop_after: int) -> None:
                store = FileCursorStore(path)  # one object per follower, as two processes
                async with open_sse(
                    server.feed_url, cursor_store=store, cursor_key="k", policy=policy
                ) as stream:
                    first_in.set()
                    async for frame in stream:
                        handled.append((name, frame.id))
                        if name == "a":
                            await trio.sleep(0.05)  # b is waiting meanwhile
                        if len([h for h in handled if h[0] == name]) == stop_after:
                            break

            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow, "a", 3)
                await first_in.wait()
                nursery.start_soon(follow, "b", 3)
    assert handled == [("a", "1"), ("a", "2"), ("a", "3"), ("b", "4"), ("b", "5"), ("b", "6")]
    assert FileCursorStore(path).peek("k").id == "6"


async def test_open_sse_commit_early_after_a_side_effect(tmp_path):
    """``stream.commit()`` records the frame at once: a crash after it resumes past it."""
    from arkor_trio.stream import FileCursorStore

    path = tmp_path / "c.json"

    async def crash_after_a_side_effect(url: str) -> None:
        async with open_sse(url, cursor_store=FileCursorStore(path), cursor_key="k") as stream:
            async for frame in stream:
                if frame.id == "2":
                    await stream.commit()  # the side effect is done: never repeat it
                    raise RuntimeError("crash after the side effect")

    with trio.fail_after(20):
        async with open_feed_server(total=5) as server:
            with pytest.raises(RuntimeError):
                await crash_after_a_side_effect(server.feed_url)
    assert FileCursorStore(path).peek("k").id == "2"


async def test_a_trainer_owning_its_client_leaves_a_users_stream_open(
    autojump_clock, client, server
):
    """Also found in issue 17: a trainer that owns its client closed the shared stream pools
    (``client.aclose()`` when its wait ended) under a stream the user had opened on
    ``trainer.client``; that stream's next connection then failed on a closed httpx client."""
    from tests.sse_script_server import Gate

    gate = Gate()
    body = _log(3)  # ids 1..5
    cut = body.index(b"id: 3\n")
    server.conns.append(Conn(body=[body[:cut], gate]))  # the user's stream: 1, 2, then waits
    server.conns.append(Conn(body=[body]))  # the trainer's wait(): the whole job
    server.conns.append(Conn(body=[body[cut:]]))  # the user's stream again, after 2
    trainer = _trainer(client, {})
    trainer._owns_client = True  # as create_trainer(client=None) makes it
    seen: list[str | None] = []
    async with trainer.client.events("job-1") as stream:
        seen.extend([(await stream.__anext__()).event_id for _ in range(2)])
        await trainer.wait()  # ends: the trainer would close the client it owns
        gate.event.set()  # the user's connection ends; it reconnects through the pool
        seen.extend([event.event_id async for event in stream])
    assert seen == ["1", "2", "3", "4", "5"]
