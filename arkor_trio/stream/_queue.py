"""``EventQueue``: the bounded hand-over between a stream's reader task and its consumer.

A trio memory channel switches tasks on every item (``receive()`` always yields to the
scheduler), which caps a stream at the scheduler's pace: tens of thousands of events per second.
This queue hands items over in the batches they arrive in: the reader appends every event of a
network chunk without yielding, and the consumer takes them without a scheduler pass
(:meth:`EventQueue.take`; it still checks for cancellation at every item), yielding to the
scheduler at least every ``YIELD_EVERY`` items so other tasks (the reader, the idle watchdog)
keep running.
Bounded: the reader waits while ``capacity`` items are queued.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

import trio

__all__ = ["YIELD_EVERY", "EventQueue"]

T = TypeVar("T")

#: The consumer yields to the scheduler at least once per this many items.
YIELD_EVERY = 64


class EventQueue(Generic[T]):
    """A single-producer, single-consumer bounded FIFO for one trio run."""

    def __init__(self, capacity: int) -> None:
        self._items: deque[T] = deque()
        self._capacity = capacity
        # A waiting producer is woken once the queue has drained to this many items, not at
        # every item taken (which would switch tasks per item when the consumer is the slower).
        self._low_water = capacity // 2
        self._closed = False
        self._error: BaseException | None = None
        self._consumer = trio.lowlevel.ParkingLot()
        self._producer = trio.lowlevel.ParkingLot()
        # Whether a task is parked in each lot (ParkingLot.__bool__ is a Python call per item).
        self._consumer_parked = False
        self._producer_parked = False
        self._taken = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        """True while ``capacity`` items are queued: ``put`` must wait for ``wait_not_full``."""
        return len(self._items) >= self._capacity

    @property
    def room(self) -> int:
        """How many items ``extend`` may add now."""
        return self._capacity - len(self._items)

    def extend(self, items: list[T]) -> None:
        """Append several items at once (the caller checked ``room``); never blocks."""
        self._items.extend(items)
        if self._consumer_parked:
            self._wake_consumer()

    def put(self, item: T) -> None:
        """Append one item (the caller checked ``full``); never blocks, never yields."""
        self._items.append(item)
        if self._consumer_parked:
            self._wake_consumer()

    def _wake_consumer(self) -> None:
        # Not parked from now on as far as producers go: the items put before it runs (a whole
        # feed batch) must not each unpark an empty lot again (~1 us per event).
        self._consumer_parked = False
        self._consumer.unpark_all()

    def _wake_producer(self) -> None:
        self._producer_parked = False
        self._producer.unpark_all()

    async def wait_not_full(self) -> None:
        """Wait until the consumer drained the queue to half its capacity (or it was closed)."""
        while self.full and not self._closed:
            self._producer_parked = True
            try:
                await self._producer.park()
            finally:
                self._producer_parked = False

    def close(self, error: BaseException | None = None) -> None:
        """No more items: the consumer drains what is queued, then gets ``error`` or the end."""
        self._closed = True
        self._error = error
        self._consumer.unpark_all()
        self._producer.unpark_all()

    def take(self) -> T | None:
        """The next item if one is queued and the consumer need not yield yet, else None.

        The consumer's fast path, without a scheduler pass (the consumer still checks for
        cancellation): it takes at most ``YIELD_EVERY - 1`` items in a row this way; then (and
        whenever this returns None) it calls :meth:`get`, which yields to the scheduler. Items
        must not be None.
        """
        items = self._items
        if not items or self._taken >= YIELD_EVERY - 1:
            return None
        self._taken += 1
        item = items.popleft()
        if self._producer_parked and len(items) <= self._low_water:
            self._wake_producer()
        return item

    async def get(self) -> T:
        """The next item; raises the close error, or ``trio.EndOfChannel`` after the last item.

        Always a cancellation point; a scheduling point when it waits and every
        ``YIELD_EVERY`` items.
        """
        if self._items:
            self._taken += 1
            if self._taken >= YIELD_EVERY:
                self._taken = 0
                await trio.lowlevel.checkpoint()
            else:
                await trio.lowlevel.checkpoint_if_cancelled()
        while not self._items:
            if self._closed:
                await trio.lowlevel.checkpoint()
                if self._error is not None:
                    raise self._error
                raise trio.EndOfChannel
            self._consumer_parked = True
            try:
                await self._consumer.park()
            finally:
                self._consumer_parked = False
            self._taken = 0
        item = self._items.popleft()
        if self._producer_parked and len(self._items) <= self._low_water:
            self._wake_producer()
        return item
