"""``EventQueue``: the bounded hand-over between a stream's reader task and its consumer.

A trio memory channel switches tasks on every item (``receive()`` always yields to the
scheduler), which caps a stream at the scheduler's pace: tens of thousands of events per second.
This queue hands items over in the batches they arrive in: the reader appends every event of a
network chunk without yielding, and the consumer takes them without a scheduler pass, checking
for cancellation on every item and yielding every ``YIELD_EVERY`` items so other tasks (the
reader, the idle watchdog) keep running. Bounded: the reader waits while ``capacity`` items are
queued.
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
        self._closed = False
        self._error: BaseException | None = None
        self._consumer = trio.lowlevel.ParkingLot()
        self._producer = trio.lowlevel.ParkingLot()
        self._taken = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        """True while ``capacity`` items are queued: ``put`` must wait for ``wait_not_full``."""
        return len(self._items) >= self._capacity

    def put(self, item: T) -> None:
        """Append one item (the caller checked ``full``); never blocks, never yields."""
        self._items.append(item)
        if self._consumer:
            self._consumer.unpark_all()

    async def wait_not_full(self) -> None:
        """Wait until the consumer made room (or the queue was closed)."""
        while self.full and not self._closed:
            await self._producer.park()

    def close(self, error: BaseException | None = None) -> None:
        """No more items: the consumer drains what is queued, then gets ``error`` or the end."""
        self._closed = True
        self._error = error
        self._consumer.unpark_all()
        self._producer.unpark_all()

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
            await self._consumer.park()
            self._taken = 0
        item = self._items.popleft()
        if self._producer:
            self._producer.unpark_all()
        return item
