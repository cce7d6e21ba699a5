"""``JobFeed``: many jobs' event streams over one WebSocket (``GET /v1/events/ws``).

``async with client.feed() as feed:`` opens one socket and keeps it open (reconnecting by the
rules of :class:`ReconnectPolicy`); ``feed.subscribe(job_id)`` adds a job at any time and
returns a :class:`FeedSubscription` to iterate; leaving it (or ``feed.remove``) unsubscribes;
``feed.subscribe_many(job_ids)`` follows many jobs from one task (:mod:`._feed_merged`).
After every reconnect each job is subscribed again after the id of the last event the feed
queued for it, so every consumer sees each event once.

The parts, one concern each: :mod:`._feed_loop` (the socket loop and the backoff between
sockets; on each socket a drain task that reads every message at once, so heartbeats count
while consumers are slow), :mod:`._feed_outbox` (the outgoing ``subscribe``/``unsubscribe``
messages and their sender), :mod:`._feed_messages` (the protocol's messages),
:mod:`._feed_router` (the per-job state machine) and :mod:`._feed_retry` (when a waiting job
is subscribed again, with its own backoff); :mod:`._feed_job` holds one job's queue and cursor,
:mod:`._feed_socket` how a socket ended. A job whose bounded queue is full is
unsubscribed and subscribed again from its resume point once its consumer made room: a slow
consumer delays only its own job and loses nothing. ``end`` without a terminal event makes the
feed fetch the job: a terminal job yields a synthesized terminal event, a running one is
subscribed again (at once after progress, else after a backoff).

Close codes: ``4000 + status`` is handled like that HTTP status (400, 401, 403, 404, 410, 422,
426 are final for the whole feed), 1001 and 1012 reconnect at once, anything else is a
failure (or, after progress, an immediate reconnect). See docs/websocket.md.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Self

import trio

from .._errors import ArkorError, ConfigError
from .._groups import lone_exception
from ..stream import Ledger, MemoryCursorStore, ReconnectPolicy, as_cursor_store
from ..stream.lowlevel import release_counters, track_counters
from ._feed_job import STORED, FeedCounters, FeedJob, FeedStats, FeedSubscription, _Stored
from ._feed_loop import FeedLoop
from ._feed_merged import MergedSubscription
from ._feed_messages import MAX_AFTER, MAX_JOB_ID, unsubscribe_message
from ._feed_outbox import Outbox
from ._feed_router import FeedRouter
from ._feed_socket import FeedClient

if TYPE_CHECKING:
    from collections.abc import Iterable
    from contextlib import AbstractAsyncContextManager
    from types import TracebackType

    from ..stream import CursorStore
    from ._feed_job import JobQueue

__all__ = ["FeedClient", "FeedStats", "FeedSubscription", "JobFeed", "MergedSubscription"]


class JobFeed:
    """Follow many jobs over one WebSocket. Use as ``async with client.feed() as feed:``.

    Args:
        client: The client whose base URL, token and scope the socket uses.
        policy: Reconnect rules (``idle_timeout``, backoff, ``max_attempts``,
            ``buffer_size`` per job, ``max_frame_bytes`` per message, ``connect_timeout``).
        cursor_store: Where each job's consumed cursor is committed (default: in memory);
            ``subscribe(job)`` without ``after`` resumes after the stored one.
        single_job: The feed follows one job only (``client.events(job,
            transport="websocket")``): while its queue is full the socket is not read (TCP
            slows the server, as on SSE) instead of the job being paused and its events in
            flight replayed.
    """

    def __init__(
        self,
        client: FeedClient,
        *,
        policy: ReconnectPolicy | None = None,
        cursor_store: CursorStore | None = None,
        rng: random.Random | None = None,
        single_job: bool = False,
    ) -> None:
        self.policy = policy if policy is not None else ReconnectPolicy()
        self.cursor_store: CursorStore = (
            cursor_store if cursor_store is not None else MemoryCursorStore()
        )
        self._store = as_cursor_store(self.cursor_store)
        self._rng = rng if rng is not None else random.Random()
        self._jobs: dict[str, FeedJob] = {}
        self._counters = FeedCounters()
        self._outbox = Outbox()
        self._router = FeedRouter(
            client,
            self.policy,
            self._jobs,
            self._counters,
            self._outbox,
            self._spawn,
            single_job=single_job,
        )
        self._loop = FeedLoop(
            client, self.policy, self._rng, self._counters, self._outbox, self._router
        )
        self._error: ArkorError | None = None
        #: One bound ``remove`` shared by every subscription (not one per followed job).
        self._remove = self.remove
        self._nursery_cm: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._nursery: trio.Nursery | None = None

    # --- public surface ------------------------------------------------------------------------

    @property
    def stats(self) -> FeedStats:
        """A snapshot of the counters (see :class:`FeedStats`)."""
        return self._counters.snapshot(len(self._jobs))

    @property
    def jobs(self) -> list[str]:
        """The jobs followed now, in the order they were added."""
        return list(self._jobs)

    async def __aenter__(self) -> Self:
        if self._nursery_cm is not None:
            raise RuntimeError("a JobFeed can be entered only once")
        track_counters(self._counters)
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        self._nursery.start_soon(self._run)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        assert self._nursery is not None
        assert self._nursery_cm is not None
        self._nursery.cancel_scope.cancel()
        for job in self._jobs.values():
            job.queue.close()
        release_counters(self._counters)
        try:
            return bool(await self._nursery_cm.__aexit__(exc_type, exc, tb))
        except BaseExceptionGroup as group:
            lone = lone_exception(group)
            if lone is None:
                raise
            if lone is exc:
                return False
            raise lone from None

    def subscribe(
        self,
        job_id: str,
        *,
        after: str | _Stored | None = STORED,
        created_at: float | None = None,
        seen: Iterable[str] = (),
        ledger: Ledger | None = None,
    ) -> FeedSubscription:
        """Follow ``job_id`` on this feed, after event ``after`` (default: the stored cursor).

        Args:
            job_id: The job (at most 200 characters, as the server accepts).
            after: Resume after this event id; ``None``: from the job's first event (as
                ``client.events(after=None)``); omitted: after the cursor store's cursor.
            created_at: ``trio.current_time()`` when this process created the job: an
                unknown-job answer is retried for ``policy.not_found_grace`` after it.
            seen: Ids already handled (dropped if the server sends them again).
            ledger: The follower's ledger (a trainer's: its store, lease and handled ids);
                default: one on the feed's cursor store. With a ledger and no ``after``, the
                job resumes after the ledger's cursor, not the feed store's.

        Raises:
            ConfigError: ``job_id`` is not a string of 1 to 200 characters, or ``after`` is
                longer than 200 characters (the server would refuse them).
            RuntimeError: The feed is not running, or already follows ``job_id`` (or a job,
                with ``single_job``).
        """
        job = self._follow(
            job_id, after=after, created_at=created_at, seen=seen, ledger=ledger, queue=None
        )
        return FeedSubscription(job, None, self._remove)

    def subscribe_many(
        self,
        job_ids: Iterable[str] = (),
        *,
        after: str | _Stored | None = STORED,
        buffer_size: int | None = None,
    ) -> MergedSubscription:
        """Follow many jobs from one task: ``async for job_id, event in feed.subscribe_many(ids)``.

        Each job keeps its own cursor, dedupe and ledger (as with :meth:`subscribe`); their
        events share one bounded queue of ``buffer_size`` (default
        :data:`~arkor_trio.wire._feed_merged.MERGED_BUFFER`). See :class:`MergedSubscription`.

        Args:
            job_ids: The jobs to follow now (more with :meth:`MergedSubscription.add`).
            after: As for :meth:`subscribe`, for every job of ``job_ids``.
            buffer_size: How many events the shared queue holds before jobs are paused.

        Raises:
            ConfigError, RuntimeError: As :meth:`subscribe`, for any of ``job_ids``.
        """
        merged = MergedSubscription(self, buffer_size)
        for job_id in job_ids:
            merged.add(job_id, after=after)
        return merged

    def _follow(
        self,
        job_id: str,
        *,
        after: str | _Stored | None,
        created_at: float | None = None,
        seen: Iterable[str] = (),
        ledger: Ledger | None = None,
        queue: JobQueue | None,
    ) -> FeedJob:
        """Start following ``job_id`` (see :meth:`subscribe`); its events go to ``queue``
        (default: a queue of its own)."""
        if not isinstance(job_id, str) or not job_id or len(job_id) > MAX_JOB_ID:
            shown = repr(job_id) if not isinstance(job_id, str) else f"{len(job_id)} characters"
            raise ConfigError(
                f"job_id must be a string of 1 to {MAX_JOB_ID} characters, got {shown}",
                field="job_id",
            )
        if self._nursery is None:
            raise RuntimeError("use `async with client.feed() as feed:` before subscribing")
        if job_id in self._jobs:
            raise RuntimeError(f"this feed already follows job {job_id}")
        if self._jobs and self._router.single_job:
            raise RuntimeError("this feed follows one job only (single_job=True)")
        load = after is STORED and ledger is None
        if ledger is None:
            ledger = Ledger(self._store, job_id, seen=seen)
        if after is STORED:  # with a ledger: after its cursor; else the store's, once read
            after = None if load else ledger.cursor
        if after is not None and (not isinstance(after, str) or len(after) > MAX_AFTER):
            shown = repr(after) if not isinstance(after, str) else f"{len(after)} characters"
            raise ConfigError(
                f"after must be None or an event id of at most {MAX_AFTER} characters, got {shown}",
                field="after",
            )
        job = FeedJob(
            job_id,
            after=after,
            policy=self.policy,
            rng=self._rng,
            created_at=created_at,
            ledger=ledger,
            queue=queue,
        )
        self._jobs[job_id] = job
        if self._error is not None:
            job.finish(self._error)
        elif load:  # resume after the store's cursor, once read
            job.state = "waiting"
            self._spawn(self._load_then_subscribe, job)
        else:
            self._router.send_subscribe(job)
        return job

    async def _load_then_subscribe(self, job: FeedJob) -> None:
        try:
            stored = await job.ledger.load()
        except ArkorError as exc:
            job.finish(exc)
            return
        if job.resume is None:
            job.resume = stored.id
        self._router.resubscribe(job)

    def remove(self, job_id: str) -> None:
        """Stop following ``job_id`` (its subscription ends); unknown ids are ignored."""
        job = self._jobs.pop(job_id, None)
        if job is None:
            return
        if job.state != "done":
            job.finish()
            if self._outbox.connected:
                self._outbox.send(unsubscribe_message(job_id))

    # --- tasks ---------------------------------------------------------------------------------

    def _spawn(self, fn: Any, *args: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(fn, *args)

    async def _run(self) -> None:
        try:
            await self._loop.run()
        except ArkorError as exc:
            self._error = exc
            for job in self._jobs.values():
                if job.state != "done":
                    job.finish(exc)
