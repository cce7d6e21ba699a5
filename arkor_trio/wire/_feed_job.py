"""One job followed by a :class:`~arkor_trio.JobFeed`: its queue, cursor and the consumer's view.

The feed's drain task turns ``event`` messages into decoded events on the job's bounded queue;
the consumer iterates a :class:`FeedSubscription`. Per job, the feed keeps the resume position
(the id of the last event it queued), a bounded set of recent ids for dedupe, and how many of
its ``subscribe`` messages are still unanswered: events are accepted only once the latest
``subscribe`` was answered with ``subscribed``, so nothing of an older subscription can slip
in out of order.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Self

import attrs
import trio

from .._errors import ArkorError
from ..stream import Backoff, EventQueue, RecentIds
from ._models import TERMINAL_TYPES

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Iterable
    from types import TracebackType

    from ..stream import CursorStore, ReconnectPolicy
    from ._models import JobEvent

__all__ = [
    "MAX_RESETS",
    "FeedJob",
    "FeedStats",
    "FeedSubscription",
]

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
        jobs: Jobs followed right now.
        gaps: Seconds from each socket's end to the next successful open.
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
    jobs: int = 0
    gaps: tuple[float, ...] = ()


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
    gaps: list[float] = attrs.field(factory=list)

    def snapshot(self, jobs: int) -> FeedStats:
        fields = attrs.asdict(self, recurse=False)
        fields["gaps"] = tuple(self.gaps)
        return FeedStats(reconnects=max(0, self.connections - 1), jobs=jobs, **fields)


class FeedJob:
    """The feed's state for one job (internal to the feed; consumers see FeedSubscription)."""

    def __init__(
        self,
        job_id: str,
        *,
        after: str | None,
        policy: ReconnectPolicy,
        rng: random.Random,
        created_at: float | None,
        seen: Iterable[str],
    ) -> None:
        self.job_id = job_id
        self.resume = after
        self.queue: EventQueue[JobEvent] = EventQueue(policy.buffer_size)
        self.recent = RecentIds(seen)
        self.backoff = Backoff(policy, rng)
        self.created_at = created_at
        #: "active" (subscribed or to subscribe on the next socket), "waiting" (a task of the
        #: feed decides when to subscribe again: queue full, ``end``, a per-job error) or "done".
        self.state = "active"
        self.progress = False
        self.resets: deque[str] = deque(maxlen=MAX_RESETS)

    def accept(self, event: JobEvent) -> None:
        """Queue an event the caller checked (not full, not a duplicate)."""
        self.queue.put(event)
        if event.event_id is not None:
            self.resume = event.event_id
            self.recent.add(event.event_id)
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

    def __init__(self, job: FeedJob, store: CursorStore, remove: Callable[[str], None]) -> None:
        self.job_id = job.job_id
        self.cursor = job.resume
        self._job = job
        self._store = store
        self._remove = remove
        self._uncommitted: str | None = None
        self._done = False

    @property
    def resume_id(self) -> str | None:
        """The id a new subscription would resume after (the last event queued)."""
        return self._job.resume

    @property
    def resets(self) -> tuple[str, ...]:
        """The reasons of the last ``reset`` messages this job received (at most MAX_RESETS)."""
        return tuple(self._job.resets)

    def _commit(self) -> None:
        if self._uncommitted is not None:
            self._store.save(self.job_id, self._uncommitted)
            self._uncommitted = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._remove(self.job_id)
        if exc_type is None:
            self._commit()
            await trio.lowlevel.checkpoint()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> JobEvent:
        self._commit()
        if self._done:
            await trio.lowlevel.checkpoint()
            raise StopAsyncIteration
        try:
            item = await self._job.queue.get()
        except trio.EndOfChannel:
            self._done = True
            raise StopAsyncIteration from None
        except ArkorError:
            self._done = True
            raise
        if item.event_id is not None:
            self.cursor = self._uncommitted = item.event_id
        if type(item) in TERMINAL_TYPES:
            self._done = True
        return item
