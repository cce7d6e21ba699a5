"""``GroupCommit``: the calls waiting at the same moment go out as one request (group commit).

A store whose every call is one round trip to a server (``RedisCursorStore``) pays that round
trip, and the client library's per-call overhead, once per call. When many followers of one
process commit at about the same time (their events came in on the same read, their callbacks
returned in the same scheduler pass), :class:`GroupCommit` sends their calls together:

* every caller queues its item and waits for its own answer: a call is reported done only after
  the request that carried it was answered, and each caller gets its own answer (e.g. a fenced
  commit refused for one key raises for that key's caller only);
* one caller at a time is the *leader*: it lets the other tasks that are ready now queue their
  items (one scheduler pass), sends everything queued (at most ``max_batch``) in one request,
  hands each caller its answer, and goes on until its own item was answered; it then passes the
  lead to the oldest waiting caller, so a leader never works for others past its own answer;
* items are sent in the order they were queued and one request is in flight at a time, so two
  calls of one key keep their order;
* a request that fails fails every item it carried, with the same exception (the callers retry
  as they would a call of their own).

With nothing else waiting, a call costs one scheduler pass more than calling ``send`` directly.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


class _Entry(Generic[T]):
    __slots__ = ("done", "error", "finished", "item", "result")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = trio.Event()  # answered, or made the leader
        self.finished = False
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommit(Generic[T, R]):
    """Send the items submitted at the same moment together (see the module docstring).

    Args:
        send: One request for a batch of items; returns one answer per item, in order.
        max_batch: The most items one request carries.

    Attributes:
        requests: Requests sent so far.
        items: Items sent so far (``items / requests`` is the mean batch size).
    """

    def __init__(
        self, send: Callable[[list[T]], Awaitable[list[R]]], *, max_batch: int = 256
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch!r}")
        self._send = send
        self.max_batch = max_batch
        self._queue: deque[_Entry[T]] = deque()
        self._leading = False
        self.requests = 0
        self.items = 0

    async def submit(self, item: T) -> R:
        """Send ``item`` (with whatever else is waiting) and return its answer.

        Raises:
            Exception: What the request that carried ``item`` raised.
        """
        entry: _Entry[T] = _Entry(item)
        self._queue.append(entry)
        if self._leading:
            try:
                await entry.done.wait()
            except BaseException:
                self._abandon(entry)
                raise
        else:
            self._leading = True
        if not entry.finished:
            await self._lead(entry)
        if entry.error is not None:
            raise entry.error
        return entry.result  # type: ignore[no-any-return]

    async def _lead(self, own: _Entry[T]) -> None:
        batch: list[_Entry[T]] = []
        try:
            while not own.finished:
                # Let the tasks that are ready now queue their items first (one scheduler pass).
                await trio.lowlevel.cancel_shielded_checkpoint()
                queue = self._queue
                batch = [queue.popleft() for _ in range(min(len(queue), self.max_batch))]
                self.requests += 1
                self.items += len(batch)
                try:
                    answers = await self._send([e.item for e in batch])
                    if len(answers) != len(batch):
                        raise RuntimeError(f"{len(answers)} answers for {len(batch)} items")
                except Exception as exc:
                    for e in batch:
                        e.error = exc
                else:
                    for e, answer in zip(batch, answers, strict=True):
                        e.result = answer
                self._settle(batch, own)
                batch = []
        except BaseException:  # the leader itself is cancelled: its batch must not wait forever
            interrupted = ConnectionError("the request carrying this call was interrupted")
            for e in batch:
                e.error = interrupted
            self._settle(batch, own)
            raise
        finally:
            if self._queue:
                self._queue[0].done.set()  # the oldest waiting caller leads next
            else:
                self._leading = False

    def _abandon(self, entry: _Entry[T]) -> None:
        """A waiting caller is cancelled: drop its item if not sent; pass the lead on if it had
        just been given it."""
        if entry.finished:
            return
        try:
            self._queue.remove(entry)
        except ValueError:  # in the request in flight: its answer goes nowhere
            return
        if entry.done.is_set():
            if self._queue:
                self._queue[0].done.set()
            else:
                self._leading = False

    @staticmethod
    def _settle(batch: list[_Entry[T]], own: _Entry[T]) -> None:
        for e in batch:
            e.finished = True
            if e is not own:
                e.done.set()
