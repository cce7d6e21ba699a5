"""The backend's fan-out path (issue 23): coalesced hub wake-ups, one read per append for a
caught-up follower, a send queue that wakes one producer per freed slot, pages queued at once."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import trio
import trio.testing

from arkor_trio.server._hub import EventHub
from arkor_trio.server._replay import Rows, follow_log
from arkor_trio.server._store import Store
from arkor_trio.server._ws import _batch, _SendQueue
from arkor_trio.server._ws_protocol import event_message

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


class _HeldToken:
    """Stands in for the trio token: records the callbacks ``run_sync_soon`` is given."""

    def __init__(self) -> None:
        self.callbacks: list[tuple[Callable[..., object], tuple[Any, ...]]] = []

    def run_sync_soon(self, fn: Callable[..., object], *args: Any) -> None:
        self.callbacks.append((fn, args))


async def test_notifies_from_a_thread_for_many_jobs_schedule_one_wake_up() -> None:
    hub = EventHub()
    token = _HeldToken()
    hub._token = token  # type: ignore[assignment]
    jobs = ["job_a", "job_b", "job_c"]
    with hub.watching("job_a"), hub.watching("job_b"), hub.watching("job_c"):
        changed = {job: hub.changed(job) for job in jobs}

        def appender() -> None:  # a training thread appending to three jobs, one twice
            for job in [*jobs, "job_a"]:
                hub.notify(job)

        await trio.to_thread.run_sync(appender)
        assert len(token.callbacks) == 1  # one wake-up of the loop for the four appends
        assert not any(event.is_set() for event in changed.values())
        fn, args = token.callbacks.pop()
        fn(*args)  # the loop runs it
        assert all(event.is_set() for event in changed.values())
        # After it ran, the next append schedules a new wake-up (none is lost).
        again = hub.changed("job_b")
        await trio.to_thread.run_sync(hub.notify, "job_b")
        assert len(token.callbacks) == 1
        fn, args = token.callbacks.pop()
        fn(*args)
        assert again.is_set()


class _CountingStore(Store):
    reads = 0
    status_reads = 0

    def events_after(self, job_id: str, after: int, limit: int) -> list[tuple[int, str, str]]:
        self.reads += 1
        return super().events_after(job_id, after, limit)

    def job_status(self, job_id: str) -> str | None:
        self.status_reads += 1
        return super().job_status(job_id)


async def test_a_caught_up_follower_reads_the_log_once_per_append(tmp_path: Path) -> None:
    hub = EventHub()
    store = _CountingStore(tmp_path / "db.sqlite3", on_append=hub.notify)
    try:
        store.create_job(job_id="job_1", org_id="o", project_id="p", name="j", config={})
        store.append_many("job_1", [{"type": "training.started"}, {"type": "training.log"}])
        pages: list[Rows] = []
        delivered = trio.Event()

        async def deliver(rows: Rows) -> None:
            nonlocal delivered
            pages.append(rows)
            delivered.set()
            delivered = trio.Event()

        ended: list[bool] = []

        async def follow() -> None:
            ended.append(await follow_log(store, hub, "job_1", 0, deliver))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            await trio.testing.wait_all_tasks_blocked()
            assert [[seq for seq, _, _ in page] for page in pages] == [[1, 2]]
            # A short page with no append since: it waits, without an empty read or a status read.
            assert (store.reads, store.status_reads) == (1, 0)
            store.append("job_1", {"type": "training.log"})  # on the loop: wakes it at once
            await trio.testing.wait_all_tasks_blocked()
            assert [[seq for seq, _, _ in page] for page in pages] == [[1, 2], [3]]
            assert (store.reads, store.status_reads) == (2, 0)
            store.append("job_1", {"type": "training.completed"})
        assert ended == [True]
        assert [seq for seq, _, _ in pages[-1]] == [4]
    finally:
        store.close()


async def test_a_full_page_is_followed_by_another_read(tmp_path: Path) -> None:
    """A page of ``page_size`` rows may not be the last: the follower reads on at once."""
    hub = EventHub()
    store = Store(tmp_path / "db.sqlite3", on_append=hub.notify)
    try:
        store.create_job(job_id="job_1", org_id="o", project_id="p", name="j", config={})
        store.append_many("job_1", [{"type": "training.log"}] * 5 + [{"type": "training.failed"}])
        pages: list[list[int]] = []

        async def deliver(rows: Rows) -> None:
            pages.append([seq for seq, _, _ in rows])

        with trio.fail_after(5):  # (a hang would be the defect)
            assert await follow_log(store, hub, "job_1", 0, deliver, page_size=3)
        assert pages == [[1, 2, 3], [4, 5, 6]]
    finally:
        store.close()


async def test_one_message_taken_wakes_one_waiting_producer() -> None:
    out = _SendQueue(2)
    await out.put_many(["a", "b"])
    async with trio.open_nursery() as nursery:
        for name in "cdefg":
            nursery.start_soon(out.put, name)
        await trio.testing.wait_all_tasks_blocked()
        assert out.not_full.statistics().tasks_waiting == 5
        out.take()
        # One slot freed: one producer woken, four still waiting (not all five woken to race).
        assert out.not_full.statistics().tasks_waiting == 4
        await trio.testing.wait_all_tasks_blocked()
        assert len(out.items) == 2
        assert out.not_full.statistics().tasks_waiting == 4
        assert len(out.take_batch(10, 1 << 20)) == 2  # two freed: two woken
        assert out.not_full.statistics().tasks_waiting == 2
        nursery.cancel_scope.cancel()


async def test_a_producer_woken_then_cancelled_passes_its_slot_on() -> None:
    out = _SendQueue(1)
    await out.put("x")
    first = trio.CancelScope()

    async def cancelled_producer() -> None:
        with first:
            await out.put("first")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancelled_producer)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(out.put, "second")
        await trio.testing.wait_all_tasks_blocked()
        assert out.take() == "x"  # wakes the first producer only ...
        first.cancel()  # ... which is cancelled (unsubscribed) before it runs
        await trio.testing.wait_all_tasks_blocked()
        # The slot went to the second one instead of staying empty while it waits.
        assert list(out.items) == ["second"]


async def test_a_page_larger_than_the_room_is_queued_in_order_as_room_frees() -> None:
    out = _SendQueue(3)
    await out.put("first")
    page = [f"m{i}" for i in range(7)]
    taken: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(out.put_many, page)
        await trio.testing.wait_all_tasks_blocked()
        assert list(out.items) == ["first", "m0", "m1"]  # what fits, at once
        while len(taken) < 8:
            taken += out.take_batch(2, 1 << 20)
            await trio.testing.wait_all_tasks_blocked()
    assert taken == ["first", *page]


async def test_a_cancelled_page_queues_nothing_more() -> None:
    out = _SendQueue(2)
    scope = trio.CancelScope()

    async def producer() -> None:
        with scope:
            await out.put_many(["a", "b", "c", "d"])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        out.take()
        scope.cancel()  # re-subscribed between the wake-up and its run
    assert list(out.items) == ["b"]


def test_a_batch_is_a_json_array_within_its_bounds() -> None:
    out = _SendQueue(10)
    out.items.extend(['{"n":1}', '{"n":2}', '{"n":3}'])
    assert json.loads(_batch(out, 2)) == [{"n": 1}, {"n": 2}]
    assert _batch(out, 2) == '{"n":3}'  # one message alone: no array


def test_event_messages_encode_any_event_type() -> None:
    for kind in ["training.log", 'odd"type\\', "tab\there", "training.log"]:
        message = json.loads(event_message('"job_1"', 7, kind, '{"x":1}'))
        assert message == {"type": "event", "job": "job_1", "id": "7", "event": kind,
                           "data": {"x": 1}}  # fmt: skip


async def _follow_with_both(
    store: Store, hub: EventHub, pages: list[tuple[str, list[int]]], now: Callable[[Rows], bool]
) -> bool:
    async def deliver(rows: Rows) -> None:
        pages.append(("task", [seq for seq, _, _ in rows]))

    def deliver_now(rows: Rows) -> bool:
        taken = now(rows)
        if taken:
            pages.append(("hub", [seq for seq, _, _ in rows]))
        return taken

    return await follow_log(store, hub, "job_1", 0, deliver, deliver_now=deliver_now)


async def test_the_hub_delivers_a_caught_up_followers_events_and_the_task_the_end(
    tmp_path: Path,
) -> None:
    hub = EventHub()
    store = Store(tmp_path / "db.sqlite3", on_append=hub.notify)
    try:
        store.create_job(job_id="job_1", org_id="o", project_id="p", name="j", config={})
        store.append_many("job_1", [{"type": "training.started"}, {"type": "training.log"}])
        pages: list[tuple[str, list[int]]] = []
        ended: list[bool] = []

        async def follow() -> None:
            ended.append(await _follow_with_both(store, hub, pages, lambda rows: True))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            await trio.testing.wait_all_tasks_blocked()
            store.append("job_1", {"type": "training.log"})
            store.append_many("job_1", [{"type": "training.log"}] * 2)
            # Delivered by the hub during the appends themselves: no task ran in between.
            assert pages == [("task", [1, 2]), ("hub", [3]), ("hub", [4, 5])]
            store.append("job_1", {"type": "training.completed"})
        assert ended == [True]
        assert pages[-1] == ("task", [6])  # the terminal event: the task delivers it and ends
    finally:
        store.close()


async def test_rows_the_hub_could_not_deliver_are_delivered_once_by_the_task(
    tmp_path: Path,
) -> None:
    hub = EventHub()
    store = Store(tmp_path / "db.sqlite3", on_append=hub.notify)
    try:
        store.create_job(job_id="job_1", org_id="o", project_id="p", name="j", config={})
        store.append("job_1", {"type": "training.started"})
        pages: list[tuple[str, list[int]]] = []
        answers = iter([False, "raise", True])

        def now(rows: Rows) -> bool:
            answer = next(answers)
            if answer == "raise":
                raise RuntimeError("a delivery error")  # never into the hub's caller
            return bool(answer)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(_follow_with_both, store, hub, pages, now)
            for _ in range(3):
                await trio.testing.wait_all_tasks_blocked()
                store.append("job_1", {"type": "training.log"})
            await trio.testing.wait_all_tasks_blocked()
            store.append("job_1", {"type": "training.failed", "error": "x"})
        assert pages == [("task", [1]), ("task", [2]), ("task", [3]), ("hub", [4]), ("task", [5])]
    finally:
        store.close()


async def test_a_finished_or_cancelled_tail_step_is_never_run_again() -> None:
    hub = EventHub()
    calls: list[str] = []

    def once() -> bool:
        calls.append("once")
        return False

    def always() -> bool:
        calls.append("always")
        return True

    with hub.watching("job_1"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hub.tail, "job_1", once)
            nursery.start_soon(hub.tail, "job_1", always)
            await trio.testing.wait_all_tasks_blocked()
            hub.notify("job_1")  # on the loop: runs the steps at once
            hub.notify("job_1")  # before the finished one's task removed it
            assert sorted(calls) == ["always", "always", "once"]
            nursery.cancel_scope.cancel()
        hub.notify("job_1")
        assert sorted(calls) == ["always", "always", "once"]
        assert hub._tails == {}
