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
    """A single-producer, single-consumer bounded FIFO for one trio run.

    Nothing is allocated while it is empty and nobody waits: the deque exists only while items
    are queued, and a waiting task is remembered as itself (no parking lot), so a queue that a
    consumer waits on costs a few slots (a feed holds one per followed job).
    """

    __slots__ = (
        "_capacity",
        "_closed",
        "_consumer",
        "_error",
        "_items",
        "_low_water",
        "_producer",
        "_taken",
    )

    def __init__(self, capacity: int) -> None:
        #: The queued items; None while the queue is empty (allocated on demand).
        self._items: deque[T] | None = None
        self._capacity = capacity
        # A waiting producer is woken once the queue has drained to this many items, not at
        # every item taken (which would switch tasks per item when the consumer is the slower).
        self._low_water = capacity // 2
        self._closed = False
        self._error: BaseException | None = None
        #: The task waiting in :meth:`get` / :meth:`wait_not_full`, if any.
        self._consumer: trio.lowlevel.Task | None = None
        self._producer: trio.lowlevel.Task | None = None
        self._taken = 0

    def __len__(self) -> int:
        items = self._items
        return len(items) if items is not None else 0

    @property
    def full(self) -> bool:
        """True while ``capacity`` items are queued: ``put`` must wait for ``wait_not_full``."""
        return len(self) >= self._capacity

    @property
    def room(self) -> int:
        """How many items ``extend`` may add now."""
        return self._capacity - len(self)

    def extend(self, items: list[T]) -> None:
        """Append several items at once (the caller checked ``room``); never blocks."""
        if not items:
            return
        if self._items is None:
            self._items = deque(items)
        else:
            self._items.extend(items)
        self._wake_consumer()

    def put(self, item: T) -> None:
        """Append one item (the caller checked ``full``); never blocks, never yields."""
        if self._items is None:
            self._items = deque((item,))
        else:
            self._items.append(item)
        self._wake_consumer()

    def _wake_consumer(self) -> None:
        task = self._consumer
        if task is not None:
            self._consumer = None
            trio.lowlevel.reschedule(task)

    def _wake_producer(self) -> None:
        task = self._producer
        if task is not None:
            self._producer = None
            trio.lowlevel.reschedule(task)

    def _abort_consumer(self, _: object) -> trio.lowlevel.Abort:
        self._consumer = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _abort_producer(self, _: object) -> trio.lowlevel.Abort:
        self._producer = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def wait_not_full(self) -> None:
        """Wait until the consumer drained the queue to half its capacity (or it was closed)."""
        while self.full and not self._closed:
            self._producer = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort_producer)

    def close(self, error: BaseException | None = None) -> None:
        """No more items: the consumer drains what is queued, then gets ``error`` or the end."""
        self._closed = True
        self._error = error
        self._wake_consumer()
        self._wake_producer()

    def _pop(self, items: deque[T]) -> T:
        item = items.popleft()
        left = len(items)
        if not left:
            self._items = None  # an idle queue holds nothing
        if self._producer is not None and left <= self._low_water:
            self._wake_producer()
        return item

    def take(self) -> T | None:
        """The next item if one is queued and the consumer need not yield yet, else None.

        The consumer's fast path, without a scheduler pass (the consumer still checks for
        cancellation): it takes at most ``YIELD_EVERY - 1`` items in a row this way; then (and
        whenever this returns None) it calls :meth:`get`, which yields to the scheduler. Items
        must not be None.
        """
        items = self._items
        if items is None or self._taken >= YIELD_EVERY - 1:
            return None
        self._taken += 1
        item = items.popleft()  # (_pop inlined: this is the stream's per-item hot path)
        if not items:
            self._items = None
            if self._producer is not None:
                self._wake_producer()
        elif self._producer is not None and len(items) <= self._low_water:
            self._wake_producer()
        return item

    async def get(self) -> T:
        """The next item; raises the close error, or ``trio.EndOfChannel`` after the last item.

        Always a cancellation point; a scheduling point when it waits and every
        ``YIELD_EVERY`` items.
        """
        if self._items is not None:
            self._taken += 1
            if self._taken >= YIELD_EVERY:
                self._taken = 0
                await trio.lowlevel.checkpoint()
            else:
                await trio.lowlevel.checkpoint_if_cancelled()
        while self._items is None:
            if self._closed:
                await trio.lowlevel.checkpoint()
                if self._error is not None:
                    raise self._error
                raise trio.EndOfChannel
            self._consumer = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort_consumer)
            self._taken = 0
        return self._pop(self._items)
