"""The job feed and ``events(transport="websocket")`` against a real local backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest
import trio

from arkor_trio import (
    ApiError,
    ArkorClient,
    ConfigError,
    JobFeed,
    JobNotFound,
    ReconnectPolicy,
    Trainer,
)
from arkor_trio.server import open_local_backend
from arkor_trio.server._store import Store
from tests.server.conftest import FakeEngine, create_job, headers_for, prefill

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from arkor_trio.server import LocalBackend


@pytest.fixture
def fake() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
async def backend(fake: FakeEngine, tmp_path) -> AsyncIterator[LocalBackend]:
    async with open_local_backend(tmp_path / "data", engine=fake.engine()) as b:
        yield b


async def _ids(stream) -> list[str | None]:
    return [event.event_id async for event in stream]


async def test_events_over_websocket_match_sse(backend) -> None:
    prefill(backend.data_dir, "job_a", 4)
    async with backend.client() as client:
        async with client.events("job_a") as sse:
            over_sse = [(e.event_id, type(e).__name__) async for e in sse]
        async with client.events("job_a", transport="websocket") as ws:
            over_ws = [(e.event_id, type(e).__name__) async for e in ws]
            assert ws.cursor == "6"
            assert ws.stats.connections == 1
        async with client.events("job_a", after="3", transport="websocket") as ws:
            tail = await _ids(ws)
    assert over_ws == over_sse
    assert tail == ["4", "5", "6"]


async def test_transport_is_validated(backend) -> None:
    async with backend.client() as client:
        with pytest.raises(ConfigError, match="transport"):
            client.events("job_a", transport="carrier-pigeon")


async def test_one_feed_many_jobs_each_with_its_cursor(backend) -> None:
    for i in range(20):
        prefill(backend.data_dir, f"job_{i}", i % 5)
    async with backend.client() as client, client.feed() as feed:
        results: dict[str, list[str | None]] = {}

        async def follow(job: str) -> None:
            async with feed.subscribe(job) as sub:
                results[job] = await _ids(sub)

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(follow, f"job_{i}")
        assert feed.stats.connections == 1
        assert feed.jobs == []
        for i in range(20):
            assert results[f"job_{i}"] == [str(n) for n in range(1, i % 5 + 3)]
            assert feed.cursor_store.peek(f"job_{i}").id == str(i % 5 + 2)
        # The store resumes after the terminal event: only `end` is left, and the feed
        # reports the job's end as a terminal event without an id (as the SSE stream does).
        async with feed.subscribe("job_3") as sub:
            rest = [event async for event in sub]
        assert [(type(e).__name__, e.event_id) for e in rest] == [("TrainingCompleted", None)]


async def test_live_job_and_slow_consumer_pause_lose_nothing(backend, fake) -> None:
    async with httpx.AsyncClient(base_url=backend.base_url, headers=headers_for(backend)) as http:
        job = await create_job(http, "live", logs=30)
    async with backend.client() as client:
        policy = ReconnectPolicy(buffer_size=2)
        async with client.feed(policy=policy) as feed, feed.subscribe(job["id"]) as sub:
            seen = []
            async for event in sub:
                seen.append(event.event_id)
                await trio.sleep(0.001)  # a slow consumer: the job's queue of 2 overflows
        assert seen == [str(n) for n in range(1, 34)]
        assert feed.stats.pauses > 0


async def test_one_job_stream_waits_for_a_slow_consumer_without_replays(backend) -> None:
    # events(transport="websocket") follows one job: when its queue is full the socket is not
    # read until the consumer made room (TCP slows the server, as on SSE). It used to pause the
    # job instead (unsubscribe, resubscribe after room), dropping every event already in
    # flight and having the server send it again: with a queue of 4 and a backlog of 300
    # events in batches, several times as many messages as events.
    prefill(backend.data_dir, "job_slow", 300)
    async with backend.client() as client:
        policy = ReconnectPolicy(buffer_size=4)
        async with client.events("job_slow", transport="websocket", policy=policy) as ws:
            ids = []
            async for event in ws:
                ids.append(event.event_id)
                await trio.lowlevel.checkpoint()  # the drain task runs between events
            stats = ws.stats
    assert ids == [str(n) for n in range(1, 303)]  # each once, in order
    assert stats.connections == 1
    assert stats.duplicates == 0
    # every message read once: `subscribed`, the events, maybe `end`; no replayed event
    assert len(ids) + 1 <= stats.frames - stats.pings <= len(ids) + 2


async def test_a_paused_job_keeps_its_events_in_flight(backend) -> None:
    # On a shared feed a job whose queue is full is paused (unsubscribed until its consumer
    # made room). The rest of the batch that filled the queue, and whatever else the server
    # sent before it read the unsubscribe, is of the same subscription and in order: kept (up
    # to buffer_size beyond the full queue), where it used to be dropped and sent again.
    prefill(backend.data_dir, "job_busy", 300)
    prefill(backend.data_dir, "job_idle", 1)
    async with backend.client() as client:
        policy = ReconnectPolicy(buffer_size=4)
        async with client.feed(policy=policy) as feed:
            async with feed.subscribe("job_busy") as busy, feed.subscribe("job_idle") as idle:
                assert [e.event_id async for e in idle] == ["1", "2", "3"]
                ids = []
                async for event in busy:
                    ids.append(event.event_id)
                    await trio.lowlevel.checkpoint()
            stats = feed.stats
    assert ids == [str(n) for n in range(1, 303)]  # each once, in order
    assert stats.pauses > 0
    assert stats.kept > 0
    # what is in flight past the allowance is still dropped (stale) and sent again, but every
    # event is queued once
    assert stats.events == 302 + 3
    assert stats.duplicates == 0


async def test_a_single_job_feed_refuses_a_second_job(backend) -> None:
    prefill(backend.data_dir, "job_one", 1)
    async with (
        backend.client() as client,
        JobFeed(client, single_job=True) as feed,
        feed.subscribe("job_one") as sub,
    ):
        with pytest.raises(RuntimeError, match="one job only"):
            feed.subscribe("job_two")
        assert [e.event_id async for e in sub] == ["1", "2", "3"]


async def test_unknown_job_and_bad_token(backend) -> None:
    async with backend.client() as client, client.feed() as feed:
        with pytest.raises(JobNotFound):
            async with feed.subscribe("job_nope") as sub:
                await _ids(sub)
    async with (
        ArkorClient(
            base_url=backend.base_url, token="wrong", org_slug="local", project_slug="default"
        ) as bad,
        bad.feed() as feed,
    ):
        with pytest.raises(ApiError) as caught:
            async with feed.subscribe("job_x") as sub:
                await _ids(sub)
        assert caught.value.status == 401


async def test_trainers_share_a_feed(backend) -> None:
    prefill(backend.data_dir, "job_t1", 2)
    prefill(backend.data_dir, "job_t2", 3)
    async with backend.client() as client, client.feed() as feed:
        steps: dict[str, list[int]] = {"job_t1": [], "job_t2": []}
        results = {}

        async def run(job: str) -> None:
            trainer = Trainer.attach(
                job,
                client=client,
                transport=feed,
                callbacks={"on_log": lambda ctx: steps[ctx.job.id].append(ctx.step)},
            )
            results[job] = await trainer.wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "job_t1")
            nursery.start_soon(run, "job_t2")
        assert steps == {"job_t1": [1, 2], "job_t2": [1, 2, 3]}
        assert {r.job.status for r in results.values()} == {"completed"}
        assert feed.stats.connections == 1


async def test_websocket_trainer_end_to_end(backend) -> None:
    async with backend.client() as client:
        from arkor_trio import BlobDataset, create_trainer

        logs = []
        trainer = create_trainer(
            name="ws",
            model="fake/tiny-model",
            dataset=BlobDataset("file:///tmp/x.jsonl"),
            client=client,
            transport="websocket",
            callbacks={"on_log": lambda ctx: logs.append(ctx.step)},
        )
        result = await trainer.wait()
    assert result.job.status == "completed"
    assert logs == [1, 2, 3]


async def _serve_until(stop, data, port, engine, *, task_status=trio.TASK_STATUS_IGNORED):
    """Serve until ``stop`` is set; ``stop`` is replaced by a pair (stop, stopped)."""
    async with open_local_backend(data, port, engine=engine) as b:
        task_status.started(b)
        await stop[0].wait()
    stop[1].set()


async def test_feed_resumes_every_job_exactly_once_across_a_backend_restart(tmp_path) -> None:
    """Backend A closes the socket with 1001 on shutdown; the feed reconnects to B (same data
    dir and port) and resubscribes each job after its last event: the log, exactly once."""
    fake, data = FakeEngine(), tmp_path / "d"
    for i in range(5):
        prefill(data, f"job_p{i}", 3)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            stop_a, stop_b = (trio.Event(), trio.Event()), (trio.Event(), trio.Event())
            a = await nursery.start(_serve_until, stop_a, data, 0, fake.engine())
            port = int(a.base_url.rsplit(":", 1)[1])
            async with httpx.AsyncClient(base_url=a.base_url, headers=headers_for(a)) as http:
                live = (await create_job(http, "live", logs=3, gate="never"))["id"]
            jobs = [live] + [f"job_p{i}" for i in range(5)]
            seen: dict[str, list[str | None]] = {job: [] for job in jobs}
            live_started = trio.Event()
            async with a.client() as client, client.feed() as feed:

                async def follow(job: str) -> None:
                    async with feed.subscribe(job, after="2" if job != live else None) as sub:
                        async for event in sub:
                            seen[job].append(event.event_id)
                            if job == live and len(seen[job]) == 4:
                                live_started.set()

                async with trio.open_nursery() as followers:
                    for job in jobs:
                        followers.start_soon(follow, job)
                    await live_started.wait()
                    stop_a[0].set()  # A shuts down: the job thread stops, the socket gets 1001
                    await stop_a[1].wait()
                    await nursery.start(_serve_until, stop_b, data, port, fake.engine())
                stats = feed.stats
            stop_b[0].set()
    store = Store.in_dir(data)
    try:
        log = {job: [str(row[0]) for row in store.events_after(job, 0, 100)] for job in jobs}
    finally:
        store.close()
    assert seen[live] == log[live]
    assert len(log[live]) == 5  # started, 3 logs, then a terminal event after the restart
    for job in jobs[1:]:
        assert seen[job] == log[job][2:]
    assert stats.reconnects >= 1
    assert stats.duplicates == 0


async def test_leaving_returns_at_once_while_handshaking_or_backing_off(backend) -> None:
    """Cancellation reaches the feed wherever it waits: in a handshake the server never
    answers (connect_timeout 10 s), and in a failure backoff (10 s)."""
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts (in the kernel) and never answers: a handshake that hangs
    port = listener.getsockname()[1]
    slow = ReconnectPolicy(connect_timeout=10.0, initial_delay=10.0, max_delay=10.0)
    try:
        for base_url in (f"http://127.0.0.1:{port}", "http://127.0.0.1:1"):
            client = ArkorClient(
                base_url=base_url, token="t", org_slug="local", project_slug="default"
            )
            started = trio.current_time()
            with trio.move_on_after(0.3):
                async with client.feed(policy=slow) as feed, feed.subscribe("job_x") as sub:
                    await _ids(sub)
            assert trio.current_time() - started < 1.0
            assert feed.stats.connections == 0
    finally:
        listener.close()


async def test_a_refused_subscription_is_retried_with_backoff_until_room(tmp_path) -> None:
    """Over the socket's subscription cap the server answers ``error 429`` for that job: the
    feed retries it (per-job backoff) while the other jobs flow, and it gets in once one ends."""
    from arkor_trio.server import WsLimits

    fake = FakeEngine()
    limits = WsLimits(max_subscriptions=2)
    async with (
        open_local_backend(
            tmp_path / "d", engine=fake.engine(), ws_limits=limits, max_concurrent_jobs=3
        ) as b,
        httpx.AsyncClient(base_url=b.base_url, headers=headers_for(b)) as http,
    ):
        jobs = [(await create_job(http, f"j{i}", logs=1, gate=f"g{i}"))["id"] for i in range(3)]
        policy = ReconnectPolicy(initial_delay=0.01, max_delay=0.05)
        seen: dict[str, list[str | None]] = {job: [] for job in jobs}
        async with b.client() as client, client.feed(policy=policy) as feed:
            two_in = trio.Event()

            async def follow(job: str) -> None:
                async with feed.subscribe(job) as sub:
                    async for event in sub:
                        seen[job].append(event.event_id)
                        if sum(len(v) >= 2 for v in seen.values()) == 2:
                            two_in.set()

            async with trio.open_nursery() as nursery:
                for job in jobs:
                    nursery.start_soon(follow, job)
                await two_in.wait()  # two jobs are live on the socket; one is refused
                waiting = [job for job in jobs if not seen[job]]
                assert len(waiting) == 1
                first = next(job for job in jobs if seen[job])
                fake.gates[f"g{jobs.index(first)}"].set()  # it ends: room for the third
                for i in range(3):
                    fake.gates[f"g{i}"].set()
    assert all(seen[job] == ["1", "2", "3", "4"] for job in jobs), seen


async def test_a_trainer_on_a_shared_feed_starts_from_its_own_cursor(backend) -> None:
    """Defect 3: the feed already followed the job (its store holds the last id); a trainer
    with its own empty store attaching through that feed gets every event, as on SSE."""
    prefill(backend.data_dir, "job_s", 3)
    async with backend.client() as client, client.feed() as feed:
        async with feed.subscribe("job_s") as sub:
            assert await _ids(sub) == ["1", "2", "3", "4", "5"]
        assert feed.cursor_store.peek("job_s").id == "5"
        steps: list[int] = []
        trainer = Trainer.attach(
            "job_s",
            client=client,
            transport=feed,
            callbacks={"on_log": lambda ctx: steps.append(ctx.step)},
        )
        result = await trainer.wait()
        # `subscribe(job)` without `after` still resumes after the feed's stored cursor.
        async with feed.subscribe("job_s") as sub:
            rest = [type(e).__name__ for e in [e async for e in sub]]
    assert steps == [1, 2, 3]
    assert result.job.status == "completed"
    assert rest == ["TrainingCompleted"]


async def test_job_ids_the_server_refuses_are_refused_before_sending(backend) -> None:
    """Defect 10: a job id over 200 characters (the server's limit; one over 64 KiB got the
    socket closed with 1009 on every connection, stopping every other job) is a ConfigError
    at ``subscribe``; the feed's other jobs go on, on one socket."""
    prefill(backend.data_dir, "job_ok", 2)
    policy = ReconnectPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.02)
    async with backend.client() as client, client.feed(policy=policy) as feed:
        for job_id in ("j" * 201, "j" * 70_000):
            with pytest.raises(ConfigError) as caught:
                feed.subscribe(job_id)
            assert caught.value.field == "job_id"
        assert feed.jobs == []
        with pytest.raises(JobNotFound):  # 200 characters is a job id the server looks up
            async with feed.subscribe("j" * 200) as sub:
                await _ids(sub)
        async with feed.subscribe("job_ok") as sub:
            assert await _ids(sub) == ["1", "2", "3", "4"]
        assert feed.stats.connections == 1
