"""A fleet's jobs ride one job feed per replica where the backend offers it (issue 19, item 2).

Replicas are Fleet objects in one trio run against a real local backend (real HTTP and
WebSocket over loopback, a fake engine) sharing a real ``redis-server``; a backend without the
feed is the same backend behind the chaos proxy answering 404 to ``/v1/events/ws``, as the
cloud does.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import httpx
import trio

from arkor_trio import Callbacks, Fleet, MemoryCursorStore
from arkor_trio.server import open_local_backend
from arkor_trio.server._serve import local_client
from arkor_trio.stream import RedisCursorStore
from arkor_trio.testing import Plan, Status, open_chaos_proxy
from tests._redis import redis_server
from tests.server.conftest import FakeEngine, create_job, headers_for

if TYPE_CHECKING:
    from pathlib import Path

EVENTS_PER_JOB = 5  # started, 2 logs, checkpoint, completed


async def _until(predicate: Any) -> None:
    """Wait (bounded) for a condition the fleets reach by themselves."""
    with trio.fail_after(20):
        while not predicate():
            await trio.sleep(0.01)


def _recorder(seen: list[tuple[str, str | None]]) -> Callbacks:
    def record(ctx: Any) -> None:
        seen.append((ctx.delivery.job_id, ctx.delivery.event_id))

    return Callbacks(on_started=record, on_log=record, on_checkpoint=record, on_completed=record)


async def test_each_replica_follows_all_its_jobs_over_one_feed_socket(tmp_path: Path) -> None:
    fake = FakeEngine()
    seen: list[tuple[str, str | None]] = []
    with redis_server(tmp_path) as redis:
        async with (
            open_local_backend(tmp_path / "d", engine=fake.engine(), max_concurrent_jobs=20) as b,
            b.client() as client,
            httpx.AsyncClient(base_url=b.base_url, headers=headers_for(b)) as http,
            RedisCursorStore(redis.url, namespace="feed") as store,
            trio.open_nursery() as nursery,
        ):
            fleets = [
                Fleet(client, store=store, callbacks=_recorder(seen), lease_ttl=1.0,
                      discovery_interval=0.1, name=f"r{i}")
                for i in range(2)
            ]  # fmt: skip
            for fleet in fleets:
                nursery.start_soon(fleet.run)
            await _until(lambda: all(f.stats.members == 2 for f in fleets))
            jobs = [(await create_job(http, f"j{i}", logs=2, gate="g"))["id"] for i in range(6)]
            await _until(lambda: [f.stats.held for f in fleets] == [3, 3])
            fake.gates["g"].set()
            await _until(lambda: len(seen) >= 6 * EVENTS_PER_JOB)
            feeds = [f.feed for f in fleets]
            for fleet in fleets:
                fleet.stop()
    assert Counter(job for job, _ in seen) == dict.fromkeys(jobs, EVENTS_PER_JOB)
    assert len(set(seen)) == len(seen), "an event was dispatched twice"
    # One socket per replica carried every event of its three jobs (no stream per job).
    assert [feed.stats.connections if feed else None for feed in feeds] == [1, 1]
    assert sum(feed.stats.events for feed in feeds if feed) == 6 * EVENTS_PER_JOB


async def test_without_a_feed_on_the_backend_a_replica_follows_one_stream_per_job(
    tmp_path: Path,
) -> None:
    fake = FakeEngine()
    seen: list[tuple[str, str | None]] = []
    no_feed = Plan(steps=((Status(code=404, message="not found"),),), cycle=True, only="/events/ws")
    async with (
        open_local_backend(tmp_path / "d", engine=fake.engine(), max_concurrent_jobs=20) as b,
        open_chaos_proxy(b.base_url, plan=no_feed) as proxy,
        local_client(proxy.url, b.token) as client,
        httpx.AsyncClient(base_url=b.base_url, headers=headers_for(b)) as http,
        trio.open_nursery() as nursery,
    ):
        fleet = Fleet(client, store=MemoryCursorStore(), callbacks=_recorder(seen),
                      lease_ttl=1.0, discovery_interval=0.1)  # fmt: skip
        nursery.start_soon(fleet.run)
        jobs = [(await create_job(http, f"j{i}", logs=2, gate="g"))["id"] for i in range(2)]
        await _until(lambda: fleet.stats.held == 2)
        fake.gates["g"].set()
        await _until(lambda: len(seen) >= 2 * EVENTS_PER_JOB)
        assert fleet.feed is None  # fell back after the refused handshake
        fleet.stop()
    assert Counter(job for job, _ in seen) == dict.fromkeys(jobs, EVENTS_PER_JOB)
    assert len(set(seen)) == len(seen)
