"""``WebSocketEventStream``: one job's events over the job feed socket, as ``client.events``.

Same surface and semantics as the SSE ``EventStream`` (design.md section 3): exactly once,
resume after the last event queued, immediate reconnect after progress, backoff for failures,
idle timeout, ``end`` handling, cancellation within one tick. It is a :class:`JobFeed` with one
job (``single_job``: a consumer that is behind slows the socket down, as on SSE, rather than
pausing the job); pass ``feed=`` to follow the job on a feed shared with other jobs instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

from ..stream import Ledger, ReconnectPolicy, StreamStats
from ._feed import JobFeed

if TYPE_CHECKING:
    import random
    from collections.abc import Iterable
    from types import TracebackType

    from ._feed import FeedSubscription
    from ._feed_socket import FeedClient
    from ._models import JobEvent

__all__ = ["WebSocketEventStream"]


class WebSocketEventStream:
    """The events of one job over WebSocket; use as ``async with``, then iterate.

    Attributes:
        job_id: The job followed.
        cursor: The id of the last event yielded (starts at ``after``).
        policy: The reconnect policy in force.
    """

    def __init__(
        self,
        client: FeedClient,
        job_id: str,
        *,
        after: str | None = None,
        policy: ReconnectPolicy | None = None,
        created_at: float | None = None,
        seen: Iterable[str] = (),
        rng: random.Random | None = None,
        feed: JobFeed | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self.job_id = job_id
        self.policy = policy if policy is not None else ReconnectPolicy()
        self._own_feed = feed is None
        self._feed = (
            feed
            if feed is not None
            else JobFeed(client, policy=self.policy, rng=rng, single_job=True)
        )
        self._after = after
        self._created_at = created_at
        self._seen = tuple(seen)
        if ledger is None and self._own_feed:
            # As the SSE stream: no cursor store (the own feed's store would be written per
            # event and never read: the stream resumes after ``after``, not a stored cursor).
            ledger = Ledger(None, job_id, seen=self._seen)
        self._ledger = ledger
        self._sub: FeedSubscription | None = None

    @property
    def stats(self) -> StreamStats:
        """The feed's counters as :class:`StreamStats` (shared-feed numbers cover all jobs)."""
        s = self._feed.stats
        return StreamStats(
            connections=s.connections,
            reconnects=s.reconnects,
            failures=s.failures,
            frames=s.messages,
            events=s.events,
            duplicates=s.duplicates,
            skipped=s.skipped,
            pings=s.pings,
            gaps=s.gaps,
            gap_count=s.gap_count,
            gap_total=s.gap_total,
            gap_max=s.gap_max,
        )

    @property
    def cursor(self) -> str | None:
        """The id of the last event yielded (``after`` before any)."""
        return self._after if self._sub is None else self._sub.cursor

    @property
    def resume_id(self) -> str:
        """The id a reconnect would resume after ("" before any)."""
        resume = None if self._sub is None else self._sub.resume_id
        return resume or self._after or ""

    @property
    def resets(self) -> tuple[str, ...]:
        """Reasons of the ``reset`` messages received for this job (history gone)."""
        return () if self._sub is None else self._sub.resets

    async def __aenter__(self) -> Self:
        if self._sub is not None:
            raise RuntimeError("a WebSocketEventStream can be entered only once")
        if self._own_feed:
            await self._feed.__aenter__()
        self._sub = self._feed.subscribe(
            self.job_id,
            after=self._after,
            created_at=self._created_at,
            seen=self._seen,
            ledger=self._ledger,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        assert self._sub is not None
        await self._sub.__aexit__(exc_type, exc, tb)  # the commit rule: leaving normally commits
        if self._own_feed:
            return await self._feed.__aexit__(exc_type, exc, tb)
        return False

    @property
    def ledger(self) -> Ledger | None:
        """The follower's ledger (commit rule, dedupe, lease), once entered."""
        return None if self._sub is None else self._sub.ledger

    async def commit(self) -> None:
        """Commit the event being handled now (see :meth:`SSEChannel.commit`)."""
        if self._sub is not None:
            await self._sub.commit()

    def __aiter__(self) -> FeedSubscription:
        # ``async for`` iterates the subscription itself: no second coroutine per event.
        if self._sub is None:
            raise RuntimeError("use `async with client.events(...) as stream:` before iterating")
        return self._sub

    async def __anext__(self) -> JobEvent:
        if self._sub is None:
            raise RuntimeError("use `async with client.events(...) as stream:` before iterating")
        return await self._sub.__anext__()
