"""A feed socket's bounded outgoing queue (:mod:`._ws`)."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["SendQueue"]


class SendQueue:
    """The socket's bounded outgoing queue; ``put`` waits while it is full.

    Each message taken wakes one waiting producer (not all of them: with thousands of jobs
    waiting on a full queue, waking every one per message taken cost more than the sending).
    """

    def __init__(self, capacity: int) -> None:
        self.items: deque[str] = deque()
        self.capacity = capacity
        self.not_empty = trio.lowlevel.ParkingLot()
        self.not_full = trio.lowlevel.ParkingLot()

    async def put(self, message: str) -> None:
        await self.put_many((message,))

    async def put_many(self, messages: Sequence[str]) -> None:
        """Queue ``messages`` in order, as many at a time as there is room for."""
        # A cancelled producer (an unsubscribed job) must not queue anything more: checked
        # right before appending, since a producer woken from ``not_full`` may have been
        # cancelled (its job re-subscribed) after the wake-up and before it ran.
        items, done, woken = self.items, 0, False
        while done < len(messages):
            try:
                await trio.lowlevel.checkpoint_if_cancelled()
            except trio.Cancelled:
                if woken:  # the slot it was woken for goes to the next waiting producer
                    self._wake_producers(1)
                raise
            room = self.capacity - len(items)
            if room <= 0:
                await self.not_full.park()
                woken = True
                continue
            woken = False
            if done == 0 and len(messages) <= room:
                items.extend(messages)
                done = len(messages)
            else:
                items.extend(messages[done : done + room])
                done = min(len(messages), done + room)
            if self.not_empty:  # (an empty lot's unpark costs more than the append)
                self.not_empty.unpark_all()

    def offer_many(self, messages: Sequence[str]) -> bool:
        """Queue ``messages`` if there is room for all of them now; False (none queued) if not."""
        if self.not_full or len(self.items) + len(messages) > self.capacity:
            return False  # (producers waiting for room go first)
        self.items.extend(messages)
        if self.not_empty:
            self.not_empty.unpark_all()
        return True

    def take(self) -> str:
        """The next message (wakes one waiting producer: a slot was freed)."""
        message = self.items.popleft()
        self._wake_producers(1)
        return message

    def take_batch(self, limit: int, max_bytes: int) -> list[str]:
        """The next message and as many more as fit ``limit`` messages and ``max_bytes``
        (counting a separator each); wakes one waiting producer per message taken."""
        items = self.items
        first = items.popleft()
        parts, size = [first], len(first)
        while items and len(parts) < limit:
            size += len(items[0]) + 1
            if size > max_bytes:
                break
            parts.append(items.popleft())
        self._wake_producers(len(parts))
        return parts

    def _wake_producers(self, count: int) -> None:
        if self.not_full:
            self.not_full.unpark(count=count)
