"""``EventStream``: a job's event stream = a channel + job-event decoding + ``end`` handling.

The channel (:class:`~arkor_trio.stream.SSEChannel`) does the reconnecting, deduplicating and
buffering; this module adds what is Arkor's: each frame's JSON payload decoded into a job event
(pings, malformed payloads and unknown shapes skipped and counted), iteration ending after a
terminal event, the ``end`` frame (the backend closed the channel: ask it how the job stands; a
terminal job yields its terminal event, a running one is followed again) and the not-found grace
(a 404 is retried for a while after this trainer created the job).

The API client hands the stream a :class:`JobStreamSource`: a URL, headers, params and the few
calls it needs, nothing else; this module does not import the client.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Final, Self

import attrs
import httpx
import trio

from .._errors import ApiError
from ..stream import DuplicateFilter, Ledger, ReconnectPolicy, SSEChannel
from ._codec import MalformedPayload, decode_event_json
from ._models import (
    TERMINAL_TYPES,
    JobEvent,
    TrainingCancelled,
    TrainingCompleted,
    TrainingFailed,
    TrainingJob,
    UnknownEvent,
    terminal_event,
)

if TYPE_CHECKING:
    import random
    from collections.abc import AsyncIterator, Iterable
    from types import TracebackType

    from ..sse import SSEFrame
    from ..stream import StreamStats

__all__ = ["TERMINAL_EVENTS", "TERMINAL_TYPES", "EventStream", "JobStreamSource"]

log = logging.getLogger("arkor_trio.stream")

TERMINAL_EVENTS = (TrainingCompleted, TrainingFailed, TrainingCancelled)


@attrs.frozen
class JobStreamSource:
    """What a job's event stream needs from the API client (see ``ArkorClient.stream_source``).

    Attributes:
        job_id: The job.
        url: The stream's URL.
        headers: Called for every connection: the request headers (auth, client version).
        params: Called for every connection: the query (the org/project scope).
        http: The httpx client to send with.
        get_job: Fetches the job (for the ``end`` frame).
        make_error: Builds the error for a non-2xx answer from ``(status, body_text, route)``.
        on_response: Sees every response (deprecation headers).
        in_use: Called with +1 when a stream of this source is entered and -1 when it is
            left (the client counts its open streams).
    """

    job_id: str
    url: str
    headers: Callable[[], Mapping[str, str]]
    params: Callable[[], Awaitable[Mapping[str, str]]]
    http: httpx.AsyncClient
    get_job: Callable[[str], Awaitable[TrainingJob]]
    make_error: Callable[[int, str, str], Exception]
    on_response: Callable[[httpx.Response], None] | None = None
    in_use: Callable[[int], None] | None = None


@attrs.frozen
class _End:
    """An ``end`` frame: the backend closed the channel without saying how the job ended."""

    event_id: str | None


_PING: Final = "ping"
_END: Final = "end"


class EventStream:
    """The events of one job, followed across reconnects; use as ``async with``, then iterate.

    Obtain one with :meth:`ArkorClient.events`. Iteration yields :class:`TrainingStarted`,
    :class:`TrainingLog`, :class:`CheckpointSaved`, :class:`UnknownEvent` and finally one terminal
    event (:class:`TrainingCompleted`, :class:`TrainingFailed` or :class:`TrainingCancelled`), in
    stream order, each id at most once.

    Attributes:
        job_id: The job followed.
        policy: The reconnect policy in force.
    """

    def __init__(
        self,
        source: JobStreamSource,
        *,
        after: str | None = None,
        policy: ReconnectPolicy | None = None,
        created_at: float | None = None,
        duplicates: DuplicateFilter | None = None,
        seen: Iterable[str] = (),
        rng: random.Random | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self.job_id = source.job_id
        self.policy = policy if policy is not None else ReconnectPolicy()
        self._source = source
        self._created_at = created_at
        self._channel: SSEChannel[JobEvent | _End] = SSEChannel(
            source.url,
            headers=source.headers,
            params=source.params,
            last_event_id=after,
            policy=self.policy,
            http=source.http,
            decode=self._decode,
            is_final=_is_final,
            settle=self._settle,
            is_permanent=self._is_permanent,
            on_response=source.on_response,
            make_error=source.make_error,
            duplicates=duplicates
            if duplicates is not None or ledger is not None
            else (DuplicateFilter(seen)),
            item_id=_event_id,
            ledger=ledger,
            rng=rng,
        )
        self._counters = self._channel.counters

    # --- public surface ------------------------------------------------------------------------

    @property
    def stats(self) -> StreamStats:
        """A snapshot of the counters (see :class:`StreamStats`)."""
        return self._channel.stats

    @property
    def resume_id(self) -> str:
        """The id a reconnect would send as ``Last-Event-ID`` (the last complete frame's)."""
        return self._channel.resume_id

    async def __aenter__(self) -> Self:
        await self._channel.__aenter__()
        if self._source.in_use is not None:
            self._source.in_use(1)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            return await self._channel.__aexit__(exc_type, exc, tb)
        finally:
            if self._source.in_use is not None:
                self._source.in_use(-1)

    @property
    def cursor(self) -> str | None:
        """The id of the last event yielded (starts at ``after``)."""
        return self._channel.cursor

    @property
    def ledger(self) -> Ledger:
        """The follower's ledger (commit rule, dedupe, lease)."""
        return self._channel.ledger

    def __aiter__(self) -> AsyncIterator[JobEvent]:
        # Iterating the channel itself saves a layer per event; it yields what __anext__ does.
        return self._channel  # type: ignore[return-value]  # an _End never reaches the consumer

    async def __anext__(self) -> JobEvent:
        item = await self._channel.__anext__()
        assert not isinstance(item, _End)  # settled into a terminal event by the reader
        return item

    # --- the channel's hooks (run in its reader task) --------------------------------------------

    def _decode(self, frame: SSEFrame) -> JobEvent | _End | None:
        """The event a frame carries; None for pings and malformed frames (counted)."""
        name = frame.event
        if name == _PING:
            self._counters.pings += 1
            return None
        if name == _END:
            return _End(frame.id or None)
        try:
            event = decode_event_json(frame.data, frame.id or None)
        except MalformedPayload:
            self._counters.skipped += 1
            return None
        if type(event) is UnknownEvent:
            self._counters.unknown += 1
        return event

    async def _settle(self, item: JobEvent | _End) -> JobEvent | None:
        """A terminal event stands; an ``end`` frame asks the backend how the job stands."""
        if not isinstance(item, _End):
            return item
        try:
            job = await self._source.get_job(self.job_id)
        except ApiError as exc:
            if exc.status in self.policy.permanent_statuses:
                raise
            log.debug("job %s: `end` frame, and the job could not be fetched: %r", self.job_id, exc)
            return None
        if job.is_terminal:
            return terminal_event(job, item.event_id)
        log.debug("job %s: `end` frame while the job is %s; following again", job.id, job.status)
        return None

    def _is_permanent(self, status: int) -> bool:
        if status not in self.policy.permanent_statuses:
            return False
        return status != 404 or not self._in_grace()

    def _in_grace(self) -> bool:
        if self._created_at is None:
            return False
        return trio.current_time() - self._created_at < self.policy.not_found_grace


_event_id = operator.attrgetter("event_id")


def _is_final(item: JobEvent | _End) -> bool:
    return type(item) in TERMINAL_TYPES or type(item) is _End
