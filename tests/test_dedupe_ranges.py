"""RecentIds keeps numeric ids as ranges while it can, and falls back to its window of strings.

The ranges are what makes an idle followed job cheap (issue 23); membership must stay by
identity, and the fall-back must keep every id the window would have kept.
"""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from arkor_trio.stream import DuplicateFilter, Ledger
from arkor_trio.stream._dedupe import MAX_RUNS, RecentIds
from arkor_trio.stream._queue import EventQueue


def test_ids_in_order_are_one_range_and_membership_is_by_identity():
    r = RecentIds(str(i) for i in range(1, 1001))
    assert r.ranged
    assert r._runs == [1, 1000]
    assert "1" in r
    assert "1000" in r
    assert "1001" not in r
    assert "0" not in r
    assert "07" not in r  # not the id "7": a different string
    assert "7.0" not in r
    assert len(r) == 1000


def test_a_gap_opens_a_range_and_an_id_out_of_order_hands_over_to_the_window():
    r = RecentIds(["1", "2", "5", "6"])
    assert r._runs == [1, 2, 5, 6]
    assert "3" not in r
    r.add("2")  # already there: nothing changes
    assert r._runs == [1, 2, 5, 6]
    r.add("3")  # lower than the highest and new: the order is gone, the window takes over
    assert not r.ranged
    assert all(x in r for x in ["1", "2", "3", "5", "6"])
    assert "4" not in r
    assert r.ids() == ["1", "2", "5", "6", "3"]


def test_a_non_numeric_id_falls_back_to_the_window_keeping_the_ids():
    r = RecentIds(["1", "2", "3"])
    r.add("evt_a")
    assert not r.ranged
    assert all(x in r for x in ["1", "2", "3", "evt_a"])
    assert "4" not in r


def test_too_many_ranges_fall_back_to_the_window():
    ids = [str(n) for n in range(0, 4 * (MAX_RUNS + 1), 4)]  # every id its own range
    r = RecentIds(ids[:MAX_RUNS])
    assert r.ranged
    r.add(ids[MAX_RUNS])
    assert not r.ranged
    assert all(i in r for i in ids)
    assert "1" not in r


def test_ranges_forget_the_lowest_ids_like_the_window():
    r = RecentIds((str(i) for i in range(10_000)), size=100)
    assert r.ranged
    assert len(r) <= 200
    assert all(str(i) in r for i in range(9_900, 10_000))
    assert "0" not in r


def test_a_filter_seeded_from_a_set_copies_it():
    handled = RecentIds(["1", "2"])
    f = DuplicateFilter(handled)
    f.add("3")
    assert "3" not in handled
    assert f.ids() == ["1", "2", "3"]


ids = st.one_of(
    st.integers(0, 60).map(str),
    st.sampled_from(["a", "b", "07", "00", "-1", "1e3", "x9"]),
)


@given(st.lists(ids, max_size=80), st.lists(ids, max_size=20), st.integers(3, 12))
def test_ranges_and_window_remember_what_the_window_promises(added, probes, size):
    # Never an id that was not added; always the last `size` distinct ids added.
    r = RecentIds(added, size)
    for probe in probes + added:
        if probe in r:
            assert probe in added
    distinct = list(dict.fromkeys(reversed(added)))  # most recent first
    assert all(recent in r for recent in distinct[:size])
    assert len(r) <= 3 * size


@given(st.lists(st.integers(1, 10**6), max_size=60), st.integers(3, 12))
def test_ids_in_ascending_order_stay_ranges(numbers, size):
    ordered = sorted(set(numbers))
    runs = sum(1 for i, n in enumerate(ordered) if i == 0 or ordered[i - 1] != n - 1)
    r = RecentIds((str(n) for n in ordered), size)
    if runs <= MAX_RUNS:  # more may stay ranges too: the oldest ranges are forgotten
        assert r.ranged
    assert all(str(n) in r for n in ordered[-size:])
    assert len(r) < 2 * size or not r.ranged


async def test_the_ledger_drops_a_replay_after_a_reconnect_and_delivers_new_ids():
    # The one rule, with ranges: a resubscription that replays handled ids drops them.
    ledger = Ledger()
    f = ledger.new_filter()
    f.connection("")
    for i in ("1", "2", "3"):
        assert not f.seen(i)
        f.add(i)
        ledger.take(i)
        await ledger.handled()
    f = ledger.new_filter()
    f.connection("2")
    assert f.seen("2")  # a replay of the handled past
    assert f.seen("3")
    assert not f.seen("4")


async def test_an_idle_queue_holds_no_deque_and_a_waiting_consumer_is_woken():
    q: EventQueue[int] = EventQueue(4)
    assert q._items is None
    got: list[int] = []

    async def consumer() -> None:
        got.append(await q.get())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        assert q._consumer is not None
        q.put(1)
    assert got == [1]
    assert q._items is None  # drained: the deque went with the last item
    assert q._consumer is None


async def test_a_cancelled_waiter_is_forgotten():
    q: EventQueue[int] = EventQueue(1)
    with trio.move_on_after(1) as scope:
        await q.get()
    assert scope.cancelled_caught
    assert q._consumer is None
    q.put(1)
    with trio.move_on_after(1):
        await q.wait_not_full()
    assert q._producer is None


def test_the_next_id_in_order_is_taken_without_parsing_and_only_as_written():
    r = RecentIds(["5"])
    assert "6" not in r
    r.add("6")
    assert r._runs == [5, 6]
    assert "" not in r
    r.add("")  # not a number: the window takes over, keeping both ids
    assert not r.ranged
    assert all(x in r for x in ["5", "6", ""])
    clone = RecentIds(["1", "2"]).copy()
    clone.add("3")
    assert clone._runs == [1, 3]
    f = DuplicateFilter(["1"])
    f.connection("1")
    assert not f.seen("2")
    assert f.seen("1")
    f.add("2")
    assert not f.seen("02")  # another string: not the id "2"
    assert f.seen("2")
