"""``MergedSubscription``: many jobs of a :class:`~arkor_trio.JobFeed` followed from one task.

``async for job_id, event in feed.subscribe_many(job_ids)`` yields every job's events, each
job's in its own order, from one bounded queue shared by the jobs. A consumer task per job
(``feed.subscribe``) costs about 2 KiB while it waits; one merged subscription costs its jobs
only the feed's state for each (docs/websocket.md).

Every job stays a job of the feed, with the same guarantees as a subscription of its own: its
own cursor in the feed's cursor store, its own dedupe and its ledger
(:class:`~arkor_trio.stream.Ledger`, where the commit rule lives: the item handed out is
committed when the consumer asks for the next item or leaves the ``async with`` block normally,
and abandoned when it leaves with an exception), its ``reset`` reasons, and its end: after its
terminal event (or a permanent error of its own, kept in :attr:`MergedSubscription.errors`) the
job leaves the stream. An error of the whole feed (bad token, reconnects exhausted) is raised.

Backpressure is the feed's own: each job's queue is a :class:`_Lane` of the shared queue, full
when the shared queue is; the feed's router then stops reading the socket until the consumer made
room (half the shared queue), as on a single-job feed (``FeedJob.holds_socket``), rather than
pausing jobs one by one: a full shared queue has no room for the next job's event either.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol, Self

import trio

from .._errors import ArkorError
from ..stream import EventQueue
from ._feed_job import STORED, _Stored
from ._models import TERMINAL_TYPES

if TYPE_CHECKING:
    from types import TracebackType

    from ..stream import Ledger
    from ._feed_job import FeedJob, JobQueue
    from ._models import JobEvent

__all__ = ["MERGED_BUFFER", "MergedSubscription"]

log = logging.getLogger("arkor_trio.feed")

#: The default size of a merged subscription's shared queue (events of all its jobs).
MERGED_BUFFER = 16_384


class _Feed(Protocol):
    """What a merged subscription uses of its :class:`~arkor_trio.JobFeed`."""

    _error: ArkorError | None
    _jobs: dict[str, FeedJob]

    def _follow(self, job_id: str, *, after: str | _Stored | None, queue: JobQueue) -> FeedJob: ...

    def remove(self, job_id: str) -> None: ...


class _Ended:
    """Put on the shared queue when a job's queue is closed (after its last event)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class _Lane:
    """One job's queue as the feed sees it: a lane of the merged subscription's shared queue."""

    __slots__ = ("_merged", "job_id")

    def __init__(self, merged: MergedSubscription, job_id: str) -> None:
        self._merged = merged
        self.job_id = job_id

    @property
    def full(self) -> bool:
        return self._merged._queue.full

    @property
    def room(self) -> int:
        return self._merged._queue.room

    def put(self, item: JobEvent) -> None:
        self._merged._queue.put((self, item))

    def close(self, error: BaseException | None = None) -> None:
        self._merged._queue.put((self, _Ended(error)))

    async def wait_not_full(self) -> None:
        await self._merged._wait_room()


class MergedSubscription:
    """Many jobs' events from one feed, to one task: ``async for job_id, event in merged``.

    Made by :meth:`JobFeed.subscribe_many`; use it as ``async with``: leaving the block
    unsubscribes every job still followed (and commits the last item if it is left normally).
    Iteration ends once every job has left (after its terminal event or its own permanent
    error); jobs can be added (:meth:`add`) and removed (:meth:`remove`) at any time.

    Attributes:
        errors: The permanent error of each job that ended with one (unknown job, refused
            scope), by job id.
    """

    def __init__(self, feed: _Feed, buffer_size: int | None = None) -> None:
        self._feed = feed
        size = MERGED_BUFFER if buffer_size is None else buffer_size
        if size < 1:
            raise ValueError(f"buffer_size must be at least 1, got {size}")
        self._queue: EventQueue[tuple[_Lane, JobEvent | _Ended]] = EventQueue(size)
        self._low_water = size // 2
        #: The jobs followed now, by id.
        self._jobs: dict[str, FeedJob] = {}
        #: Set (and dropped) when the shared queue drained to half: the paused jobs' wait.
        self._room: trio.Event | None = None
        #: The ledger of the item handed out last (pending until the next ``__anext__``).
        self._pending: Ledger | None = None
        self._closed = False
        self.errors: dict[str, ArkorError] = {}

    # --- the jobs ------------------------------------------------------------------------------

    @property
    def jobs(self) -> list[str]:
        """The jobs in the stream now, in the order they were added."""
        return list(self._jobs)

    def add(self, job_id: str, *, after: str | _Stored | None = STORED) -> None:
        """Follow ``job_id`` in this stream too (``after`` as for :meth:`JobFeed.subscribe`).

        Raises:
            ConfigError, RuntimeError: As :meth:`JobFeed.subscribe`; RuntimeError also when
                this subscription was left.
        """
        if self._closed:
            raise RuntimeError("this merged subscription was left")
        job = self._feed._follow(job_id, after=after, queue=_Lane(self, job_id))
        self._jobs[job_id] = job

    def remove(self, job_id: str) -> None:
        """Stop following ``job_id`` here (its queued events are dropped, not committed)."""
        job = self._jobs.pop(job_id, None)
        if job is not None and self._feed._jobs.get(job_id) is job:
            self._feed.remove(job_id)

    def cursor(self, job_id: str) -> str | None:
        """The id of the last event of ``job_id`` handed out (or its resume id)."""
        job = self._jobs[job_id]
        return job.ledger.cursor or job.resume

    def resets(self, job_id: str) -> tuple[str, ...]:
        """The reasons of the last ``reset`` messages ``job_id`` received."""
        return self._jobs[job_id].resets

    # --- backpressure --------------------------------------------------------------------------

    async def _wait_room(self) -> None:
        """The blocked router's wait (``wait_not_full``): until half the queue is free."""
        while self._queue.full and not self._closed:
            if self._room is None:
                self._room = trio.Event()
            await self._room.wait()

    def _wake_room(self) -> None:
        room = self._room
        if room is not None and (self._closed or len(self._queue) <= self._low_water):
            self._room = None
            room.set()

    # --- iteration -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        self._wake_room()
        for job_id in list(self._jobs):
            self.remove(job_id)
        ledger, self._pending = self._pending, None
        if ledger is not None:
            if exc_type is None:
                await ledger.handled()
            else:
                ledger.abandon()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> tuple[str, JobEvent]:
        ledger = self._pending
        if ledger is not None:  # the consumer is done with the last item: the ledger's rule
            self._pending = None
            if ledger.pending and not ledger.handled_nowait():
                await ledger.handled()
        queue, jobs = self._queue, self._jobs
        while True:
            if not jobs or self._closed:
                await trio.lowlevel.checkpoint()
                raise StopAsyncIteration
            lane, item = await queue.get()
            self._wake_room()
            job = jobs.get(lane.job_id)
            if job is None or job.queue is not lane:
                continue  # removed (or followed again since): not handed out, not committed
            if isinstance(item, _Ended):
                self._leave(job, item.error)
                continue
            final = type(item) in TERMINAL_TYPES
            job.ledger.take(item.event_id, final=final)
            self._pending = job.ledger
            return job.job_id, item

    def _leave(self, job: FeedJob, error: BaseException | None) -> None:
        """``job`` ended: it leaves the stream; the feed's own error is raised."""
        del self._jobs[job.job_id]
        if self._feed._jobs.get(job.job_id) is job:  # (not a later subscription of that id)
            self._feed.remove(job.job_id)
        if error is None:
            return
        if not isinstance(error, ArkorError) or error is self._feed._error:
            raise error
        log.warning("feed: job %s left the merged stream: %s", job.job_id, error)
        self.errors[job.job_id] = error
