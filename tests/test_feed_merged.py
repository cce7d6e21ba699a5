"""``feed.subscribe_many``: many jobs from one task, against a real local backend over a socket.

Every test checks each job's events against what the backend logged (``prefill``: started,
``logs`` log events, completed; ids ``1..logs + 2``): each once and in the job's order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio

from arkor_trio import JobNotFound, MemoryCursorStore, MergedSubscription, ReconnectPolicy
from arkor_trio.server import open_local_backend
from arkor_trio.testing import CutAfterEvents, Plan, open_chaos_proxy
from tests.resilience._harness import proxy_client
from tests.server.conftest import FakeEngine, prefill

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from arkor_trio.server import LocalBackend

FAST = ReconnectPolicy(initial_delay=0.01, max_delay=0.05, idle_timeout=5.0)


@pytest.fixture
async def backend(tmp_path) -> AsyncIterator[LocalBackend]:
    async with open_local_backend(tmp_path / "data", engine=FakeEngine().engine()) as b:
        yield b


def _log(logs: int) -> list[str]:
    return [str(n) for n in range(1, logs + 3)]


async def _collect(merged: MergedSubscription) -> dict[str, list[str | None]]:
    seen: dict[str, list[str | None]] = {}
    async for job_id, event in merged:
        seen.setdefault(job_id, []).append(event.event_id)
    return seen


async def test_every_event_of_many_jobs_once_in_per_job_order(backend) -> None:
    jobs = {f"job_m{i:02d}": i % 7 for i in range(40)}
    for job, logs in jobs.items():
        prefill(backend.data_dir, job, logs)
    with trio.fail_after(20):
        async with backend.client() as client, client.feed(policy=FAST) as feed:
            async with feed.subscribe_many([*jobs, "job_nope"]) as merged:
                assert merged.jobs == [*jobs, "job_nope"]
                seen = await _collect(merged)
                assert merged.jobs == []  # every job left: after its end or its own error
            assert feed.jobs == []
            stats = feed.stats
    assert seen == {job: _log(logs) for job, logs in jobs.items()}
    assert list(merged.errors) == ["job_nope"]
    assert isinstance(merged.errors["job_nope"], JobNotFound)
    assert stats.connections == 1
    assert stats.events == sum(logs + 2 for logs in jobs.values())
    for job, logs in jobs.items():  # each job's own cursor, committed by the ledger's rule
        assert feed.cursor_store.peek(job).id == str(logs + 2)
        assert feed.cursor_store.peek(job).finished


async def test_jobs_added_and_removed_while_it_runs(backend) -> None:
    for i in range(6):
        prefill(backend.data_dir, f"job_a{i}", 5)
    async with backend.client() as client, client.feed(policy=FAST) as feed:
        seen: dict[str, list[str | None]] = {}
        async with feed.subscribe_many(["job_a0", "job_a1"]) as merged:
            async for job_id, event in merged:
                seen.setdefault(job_id, []).append(event.event_id)
                if len(seen[job_id]) == 1 and job_id == "job_a0":
                    for i in range(2, 6):
                        merged.add(f"job_a{i}")
                    merged.remove("job_a1")  # its queued events are dropped, not committed
                    with pytest.raises(RuntimeError, match="already follows"):
                        merged.add("job_a2")
        assert feed.jobs == []
    assert seen["job_a0"] == _log(5)
    for i in range(2, 6):
        assert seen[f"job_a{i}"] == _log(5)
    kept = seen.get("job_a1", [])
    assert kept == _log(5)[: len(kept)]
    committed = feed.cursor_store.peek("job_a1").id
    assert committed == (kept[-1] if kept else None)


async def test_resumes_after_the_last_committed_item_of_each_job(backend) -> None:
    """Leaving normally (break) commits the item being handled; leaving with an exception
    abandons it: a new merged subscription on the same store goes on from there, per job."""
    jobs = [f"job_r{i}" for i in range(8)]
    for job in jobs:
        prefill(backend.data_dir, job, 6)
    store = MemoryCursorStore()
    handled: dict[str, list[str | None]] = {job: [] for job in jobs}
    async with backend.client() as client:
        async with (
            client.feed(policy=FAST, cursor_store=store) as feed,
            feed.subscribe_many(jobs) as merged,
        ):
            async for job_id, event in merged:
                handled[job_id].append(event.event_id)
                if sum(map(len, handled.values())) == 25:
                    break
        for job in jobs:  # the store holds exactly what was handled
            assert store.peek(job).id == (handled[job][-1] if handled[job] else None)
        assert sum(map(len, handled.values())) == 25

        class Boom(Exception):
            pass

        async def handle_12_then_raise() -> None:
            async with (
                client.feed(policy=FAST, cursor_store=store) as feed,
                feed.subscribe_many(jobs) as merged,
            ):
                for _ in range(12):
                    job_id, event = await anext(merged)
                    handled[job_id].append(event.event_id)
                await anext(merged)
                raise Boom  # this item is not handled: it comes again

        with pytest.raises(Boom):
            await handle_12_then_raise()
        finished = {job for job in jobs if store.peek(job).finished}
        ended: list[str] = []
        async with (
            client.feed(policy=FAST, cursor_store=store) as feed,
            feed.subscribe_many(jobs) as merged,
        ):
            async for job_id, event in merged:
                if event.event_id is None:  # a job finished before: its end, as on a subscription
                    ended.append(job_id)
                else:
                    handled[job_id].append(event.event_id)
    assert handled == {job: _log(6) for job in jobs}
    assert sorted(ended) == sorted(finished)


async def test_a_full_shared_queue_holds_the_socket_and_loses_nothing(backend) -> None:
    jobs = {f"job_b{i:02d}": 20 + i for i in range(12)}
    for job, logs in jobs.items():
        prefill(backend.data_dir, job, logs)
    with trio.fail_after(20):
        async with backend.client() as client, client.feed(policy=FAST) as feed:
            async with feed.subscribe_many(jobs, buffer_size=4) as merged:
                seen = await _collect(merged)
            stats = feed.stats
    assert seen == {job: _log(logs) for job, logs in jobs.items()}
    # 4 places for 12 jobs' ~400 events: the feed stopped reading until the consumer made room
    # (as on SSE), instead of pausing jobs one by one and replaying what was in flight.
    assert (stats.pauses, stats.stale, stats.connections) == (0, 0, 1)
    assert stats.events == sum(logs + 2 for logs in jobs.values())  # queued once each


async def test_reconnects_in_the_middle_lose_and_duplicate_nothing(tmp_path) -> None:
    jobs = [f"job_c{i:02d}" for i in range(60)]
    for job in jobs:
        prefill(tmp_path / "data", job, 58)  # 60 events each: many batched messages
    plan = Plan.of(
        *[CutAfterEvents(k, mode=m) for k, m in [(2, "clean"), (3, "mid_frame"), (1, "reset")]] * 2
    )
    with trio.fail_after(40):
        async with (
            open_local_backend(tmp_path / "data", engine=FakeEngine().engine()) as backend,
            open_chaos_proxy(backend.base_url) as proxy,
            proxy_client(proxy.url, backend) as client,
        ):
            await client.list_jobs()
            proxy.set_plan(plan)
            async with client.feed(policy=FAST) as feed:
                async with feed.subscribe_many(jobs, buffer_size=64) as merged:
                    seen = await _collect(merged)
                stats = feed.stats
    assert seen == {job: _log(58) for job in jobs}
    # The plan's six cuts each come a few messages into a connection; the first three always
    # land (3,600 events take far more than six messages), the later ones only if the server's
    # batches leave enough messages (larger batches since issue 23 often finish first).
    assert stats.reconnects >= 3
    assert stats.events == 60 * 60  # queued once each: nothing replayed twice


async def test_resets_are_surfaced_per_job_and_a_feed_error_is_raised(tmp_path) -> None:
    from arkor_trio import ApiError, ArkorClient
    from arkor_trio.server._store import Store

    async with open_local_backend(
        tmp_path / "d", engine=FakeEngine().engine(), retain_events=3
    ) as backend:
        store = Store.in_dir(backend.data_dir, retain_events=3)
        try:
            store.create_job(
                job_id="job_r", org_id="org_local", project_id="proj_default", name="r", config={}
            )
            logs = [{"type": "training.log", "step": s, "loss": 1 / s} for s in (1, 2, 3)]
            for event in [{"type": "training.started"}, *logs]:
                store.append("job_r", event)
            store.append("job_r", {"type": "training.completed", "artifacts": []})
        finally:
            store.close()
        prefill(backend.data_dir, "job_k", 1)
        resets: dict[str, tuple[str, ...]] = {}
        async with backend.client() as client, client.feed(policy=FAST) as feed:
            async with feed.subscribe_many(["job_r", "job_k"], after=None) as merged:
                seen: dict[str, list[str | None]] = {}
                async for job_id, event in merged:
                    resets.setdefault(job_id, merged.resets(job_id))
                    seen.setdefault(job_id, []).append(event.event_id)
            assert feed.stats.resets == 1
        assert seen == {"job_r": ["3", "4", "5"], "job_k": _log(1)}
        assert "events before 3 are no longer kept" in resets["job_r"][0]
        assert resets["job_k"] == ()
        async with (
            ArkorClient(
                base_url=backend.base_url, token="wrong", org_slug="local", project_slug="default"
            ) as bad,
            bad.feed() as feed,
        ):
            with pytest.raises(ApiError) as caught:  # the whole feed's error, not one job's
                async with feed.subscribe_many(["job_r", "job_k"]) as merged:
                    await _collect(merged)
            assert caught.value.status == 401
            assert merged.errors == {}
