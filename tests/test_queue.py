from __future__ import annotations

import pytest
import trio
import trio.testing

from arkor_trio.stream._dedupe import RecentIds
from arkor_trio.stream._queue import YIELD_EVERY, EventQueue


async def test_items_come_out_in_order_then_the_end():
    q: EventQueue[int] = EventQueue(10)
    for i in range(5):
        q.put(i)
    q.close()
    assert [await q.get() for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(trio.EndOfChannel):
        await q.get()


async def test_the_close_error_comes_after_the_queued_items():
    q: EventQueue[int] = EventQueue(10)
    q.put(1)
    q.close(ValueError("boom"))
    assert await q.get() == 1
    with pytest.raises(ValueError, match="boom"):
        await q.get()


async def test_the_producer_waits_while_full():
    q: EventQueue[int] = EventQueue(2)
    q.put(1)
    q.put(2)
    assert q.full
    done = trio.Event()

    async def producer():
        await q.wait_not_full()
        q.put(3)
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()
        assert await q.get() == 1
        await done.wait()
    assert len(q) == 2


async def test_the_consumer_yields_every_so_often_and_stays_cancellable():
    q: EventQueue[int] = EventQueue(1000)
    for i in range(10 * YIELD_EVERY):
        q.put(i)
    ticks = 0

    async def other():
        nonlocal ticks
        while True:
            ticks += 1
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await trio.sleep(0)
        start = ticks
        for _ in range(10 * YIELD_EVERY):
            await q.get()
        assert ticks - start >= 9  # the other task ran about once per YIELD_EVERY items
        nursery.cancel_scope.cancel()
    q.put(1)
    with trio.CancelScope() as scope:
        scope.cancel()
        await q.get()  # queued item, but the pending cancellation is honoured
    assert scope.cancelled_caught
    assert len(q) == 1


async def test_a_waiting_consumer_is_woken_by_put():
    q: EventQueue[str] = EventQueue(4)
    got = []

    async def consumer():
        got.append(await q.get())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        q.put("x")
    assert got == ["x"]


def test_recent_ids_are_bounded_and_forget_the_oldest():
    # Two generations of `size` ids: the last `size` ids are always remembered, at most
    # 2 * size are held, and the oldest generation goes when the current one fills up.
    r = RecentIds(["a", "b"], size=3)
    r.add("b")  # already known: nothing moves
    assert r.ids() == ["a", "b"]
    r.add("c")
    r.add("d")
    assert all(x in r for x in "abcd")
    assert r.ids() == ["a", "b", "c", "d"]
    for x in "efg":
        r.add(x)
    assert "a" not in r
    assert "c" not in r
    assert r.ids() == ["d", "e", "f", "g"]
    many = RecentIds((str(i) for i in range(10_000)), size=100)
    assert len(many) <= 200
    assert all(str(i) in many for i in range(9_900, 10_000))


async def test_a_parked_consumer_is_woken_once_for_a_run_of_puts(monkeypatch):
    """The items a feed batch puts before the consumer runs wake it once, not once each."""
    q: EventQueue[int] = EventQueue(100)
    wakes: list[object] = []
    reschedule = trio.lowlevel.reschedule

    def counting(task, *args):
        wakes.append(task)
        reschedule(task, *args)

    monkeypatch.setattr(trio.lowlevel, "reschedule", counting)
    got: list[int] = []

    async def consumer():
        got.append(await q.get())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(5):
            q.put(i)
        assert len(wakes) == 1
    assert got == [0]
    assert len(q) == 4
