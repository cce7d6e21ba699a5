"""One job followed by a :class:`~arkor_trio.JobFeed`: its queue, cursor and the consumer's view.

The feed's drain task turns ``event`` messages into decoded events on the job's bounded queue;
the consumer iterates a :class:`FeedSubscription` (or, for a job of ``feed.subscribe_many``, the
queue is the job's lane of a shared queue: :mod:`._feed_merged`). Per job, the feed keeps the
resume position (the id of the last event it queued) and how many of its ``subscribe`` messages
are still unanswered: events are accepted only once the latest ``subscribe`` was answered with
``subscribed``, so nothing of an older subscription can slip in out of order. Dedupe, the
replay guard and the commit rule are the job's :class:`~arkor_trio.stream.Ledger`'s, as on SSE
(a ``reset`` leaves them alone: a replay of handled ids is dropped, design.md section 3 rule 10).
"""

from __future__ import annotations

import enum
from collections import deque
from typing import TYPE_CHECKING, Final, Protocol, Self, cast

import attrs
import trio

from .._errors import ArkorError
from ..stream import Backoff, EventQueue, GapLog, Ledger
from ._models import TERMINAL_TYPES

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Iterable
    from types import TracebackType

    from ..stream import CursorStore, ReconnectPolicy
    from ._models import JobEvent

__all__ = [
    "MAX_RESETS",
    "STORED",
    "FeedJob",
    "FeedStats",
    "FeedSubscription",
    "JobQueue",
]


class _Stored(enum.Enum):
    CURSOR = "the cursor store's cursor"


#: ``subscribe(job)`` without ``after``: resume after the feed's stored cursor.
STORED: Final = _Stored.CURSOR


class JobQueue(Protocol):
    """Where the feed puts one job's events: its own :class:`EventQueue`, or its lane of a
    merged subscription's shared queue (``_feed_merged``)."""

    @property
    def full(self) -> bool: ...

    @property
    def room(self) -> int:
        """How many more items fit (negative: how many are kept past the capacity)."""
        ...

    def put(self, item: JobEvent) -> None: ...

    def close(self, error: BaseException | None = None) -> None: ...

    async def wait_not_full(self) -> None: ...


#: How many ``reset`` reasons a job keeps (a misbehaving server could send them without end).
MAX_RESETS = 64


@attrs.frozen(kw_only=True)
class FeedStats:
    """A snapshot of a job feed's counters.

    Attributes:
        connections: Sockets opened (handshake completed).
        reconnects: ``connections - 1`` when positive.
        failures: Connection attempts or sockets that counted as failures.
        messages: Messages received (pings included).
        events: Events queued for consumers, over all jobs.
        duplicates: Events dropped because their id was already queued for that job.
        stale: Events dropped because they belonged to an unanswered or paused subscription.
        skipped: Messages dropped as malformed: not JSON (or nested too deeply to parse), not
            a message object, or an event whose payload does not decode.
        pings: Server heartbeats.
        resets: ``reset`` messages (history the server no longer had).
        pauses: Times a job's queue was full and the job was unsubscribed until it drained.
        kept: Events that were in flight for a paused job, queued rather than dropped and sent
            again (a paused job keeps up to ``buffer_size`` beyond its full queue).
        jobs: Jobs followed right now.
        gaps: Seconds from a socket's end to the next successful open: the last 64.
        gap_count: How many gaps there were in all.
        gap_total: Their sum, seconds.
        gap_max: The longest, seconds.
    """

    connections: int = 0
    reconnects: int = 0
    failures: int = 0
    messages: int = 0
    events: int = 0
    duplicates: int = 0
    stale: int = 0
    skipped: int = 0
    pings: int = 0
    resets: int = 0
    pauses: int = 0
    kept: int = 0
    jobs: int = 0
    gaps: tuple[float, ...] = ()
    gap_count: int = 0
    gap_total: float = 0.0
    gap_max: float = 0.0


@attrs.define
class FeedCounters:
    connections: int = 0
    failures: int = 0
    messages: int = 0
    events: int = 0
    duplicates: int = 0
    stale: int = 0
    skipped: int = 0
    pings: int = 0
    resets: int = 0
    pauses: int = 0
    kept: int = 0
    gaps: GapLog = attrs.field(factory=GapLog)
    #: The attribute of the feed's OpenTelemetry metrics (stream.lowlevel.track_counters).
    transport: str = attrs.field(default="websocket", kw_only=True)

    def snapshot(self, jobs: int) -> FeedStats:
        fields = attrs.asdict(self, recurse=False)
        del fields["transport"]
        gaps = self.gaps
        fields["gaps"] = tuple(gaps.recent)
        return FeedStats(
            reconnects=max(0, self.connections - 1),
            jobs=jobs,
            gap_count=gaps.count,
            gap_total=gaps.total,
            gap_max=gaps.longest,
            **fields,
        )


class FeedJob:
    """The feed's state for one job (internal to the feed; consumers see FeedSubscription).

    Slots, and nothing allocated that an idle job does not use (its queue's deque, its backoff,
    its resets): a feed following 100,000 jobs pays for each only what it holds.
    """

    __slots__ = (
        "_backoff",
        "_policy",
        "_resets",
        "_rng",
        "created_at",
        "duplicates",
        "holds_socket",
        "job_id",
        "ledger",
        "progress",
        "queue",
        "resume",
        "state",
    )

    def __init__(
        self,
        job_id: str,
        *,
        after: str | None,
        policy: ReconnectPolicy,
        rng: random.Random,
        created_at: float | None,
        seen: Iterable[str] = (),
        ledger: Ledger | None = None,
        queue: JobQueue | None = None,
    ) -> None:
        self.job_id = job_id
        self.resume = after
        self.queue: JobQueue = queue if queue is not None else EventQueue(policy.buffer_size)
        #: A job whose queue is shared (a lane of ``subscribe_many``) is not paused when it is
        #: full: pausing one job frees no room another job's event will not take at once (a
        #: replay of 100,000 jobs paused 200,000 times); the feed stops reading instead.
        self.holds_socket = queue is not None
        self.ledger = ledger if ledger is not None else Ledger(None, job_id, seen=seen)
        #: This subscription's duplicate filter (from the ledger: handled ids, no read-ahead).
        self.duplicates = self.ledger.new_filter()
        self._policy = policy
        self._rng = rng
        self._backoff: Backoff | None = None
        self.created_at = created_at
        #: "active" (subscribed or to subscribe on the next socket), "paused" (queue full:
        #: unsubscribed, keeping what is in flight), "waiting" (a task of the feed decides when
        #: to subscribe again: ``end``, a per-job error, overflow while paused) or "done".
        self.state = "active"
        self.progress = False
        self._resets: deque[str] | None = None

    @property
    def backoff(self) -> Backoff:
        """The job's own backoff between subscriptions (made when first needed)."""
        if self._backoff is None:
            self._backoff = Backoff(self._policy, self._rng)
        return self._backoff

    @property
    def resets(self) -> tuple[str, ...]:
        """The reasons of the last ``reset`` messages (at most :data:`MAX_RESETS`)."""
        return tuple(self._resets) if self._resets is not None else ()

    def reset(self, reason: str) -> None:
        """A ``reset`` message for this job."""
        if self._resets is None:
            self._resets = deque(maxlen=MAX_RESETS)
        self._resets.append(reason)

    def subscribing(self) -> None:
        """A ``subscribe`` after :attr:`resume` goes out: a connection of the replay guard."""
        self.duplicates.connection(self.resume or "")

    def is_duplicate(self, event_id: str) -> bool:
        """Whether the event with this id must be dropped (handled, queued, or a replay)."""
        return self.duplicates.seen(event_id)

    def accept(self, event: JobEvent) -> None:
        """Queue an event the caller checked (not full, not a duplicate)."""
        self.queue.put(event)
        if event.event_id is not None:
            self.resume = event.event_id
            self.duplicates.add(event.event_id)
        self.progress = True
        if type(event) in TERMINAL_TYPES:
            self.finish()

    def finish(self, error: ArkorError | None = None) -> None:
        """No more events: the consumer drains the queue, then ends (or gets ``error``)."""
        self.state = "done"
        self.queue.close(error)


class FeedSubscription:
    """One job's events from a feed: ``async for event in sub`` (or ``async with sub``).

    Yields the same decoded events as :class:`EventStream`, each id at most once, ending after
    the terminal event. A permanent error for this job (unknown job, refused scope) or for the
    feed (bad token, exhausted reconnects) is raised by the next ``__anext__``. With the feed's
    cursor store, an event's id is committed when the consumer asks for the next one or leaves
    the ``async with`` block normally.

    Attributes:
        job_id: The job followed.
        cursor: The id of the last event yielded.
    """

    __slots__ = ("_done", "_job", "_ledger", "_remove", "job_id")

    def __init__(
        self, job: FeedJob, store: CursorStore | None, remove: Callable[[str], None]
    ) -> None:
        self.job_id = job.job_id
        self._job = job
        self._ledger = job.ledger
        self._remove = remove
        self._done = False
        del store  # commits go through the job's ledger (its store)

    @property
    def cursor(self) -> str | None:
        """The id of the last event yielded (starts at the resume id)."""
        return self._ledger.cursor or self._job.resume

    @property
    def ledger(self) -> Ledger:
        """The follower's ledger (commit rule, dedupe, lease)."""
        return self._ledger

    async def commit(self) -> None:
        """Commit the event being handled now (see :meth:`SSEChannel.commit`)."""
        await self._ledger.handled()

    @property
    def resume_id(self) -> str | None:
        """The id a new subscription would resume after (the last event queued)."""
        return self._job.resume

    @property
    def resets(self) -> tuple[str, ...]:
        """The reasons of the last ``reset`` messages this job received (at most MAX_RESETS)."""
        return self._job.resets

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._remove(self.job_id)
        ledger = self._ledger
        if exc_type is None:
            await ledger.handled()
        else:
            ledger.abandon()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> JobEvent:
        ledger = self._ledger
        if ledger.pending and not ledger.handled_nowait():
            await ledger.handled()
        if self._done:
            await trio.lowlevel.checkpoint()
            raise StopAsyncIteration
        queue = cast("EventQueue[JobEvent]", self._job.queue)
        item = queue.take()  # no scheduler pass while items are queued (see EventQueue.take)
        if item is not None:
            # Still a cancellation point: a body that cancelled its scope gets no further item.
            await trio.lowlevel.checkpoint_if_cancelled()
        else:
            try:
                item = await queue.get()
            except trio.EndOfChannel:
                self._done = True
                raise StopAsyncIteration from None
            except ArkorError:
                self._done = True
                raise
        final = type(item) in TERMINAL_TYPES
        ledger.take(item.event_id, final=final)
        if final:
            self._done = True
        return item
