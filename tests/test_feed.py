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
    JobNotFound,
    ReconnectPolicy,
    Trainer,
)
from arkor_trio.server import open_local_backend
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
            assert feed.cursor_store.load(f"job_{i}") == str(i % 5 + 2)
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
