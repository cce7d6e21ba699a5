"""``EventStream``: a job's event stream as one resumable channel keyed by ``Last-Event-ID``.

A reader task owns the HTTP connection: it decodes frames, drops duplicates and malformed frames,
and queues events on a bounded channel; the consumer iterates the stream. Cuts, stalls, 5xx bursts
and restarts are survived by reconnecting from the id of the last *complete* frame
(:mod:`arkor_trio.stream._reconnect` holds the delay rules). Iteration ends after a terminal event
(completed, failed, cancelled). An ``end`` frame without one makes the stream ask the backend for
the job: a terminal job yields its terminal event, a running one is followed again.

Errors that stop the stream (a permanent status, exhausted reconnects) are raised by the
consumer's next ``__anext__``, as the library's own exception, never an ExceptionGroup.
"""

from __future__ import annotations

import logging
import math
import random
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Self, cast

import attrs
import httpx
import trio

from ._codec import MalformedPayload, decode_event_json
from ._errors import ApiError, ArkorError, FrameTooLarge, ReconnectsExhausted, StreamError
from ._groups import lone_exception
from ._models import (
    JobEvent,
    TrainingCancelled,
    TrainingCompleted,
    TrainingFailed,
    TrainingJob,
    UnknownEvent,
)
from .sse import SSEDecoder, SSEFrame
from .stream._queue import EventQueue
from .stream._reconnect import PERMANENT_STATUSES, Backoff, ReconnectPolicy, parse_retry_after
from .stream._stats import RecentIds, StreamStats, _Counters

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Iterable
    from contextlib import AbstractAsyncContextManager
    from types import TracebackType

    from ._client import ArkorClient

__all__ = ["TERMINAL_EVENTS", "TERMINAL_TYPES", "EventStream", "RecentIds", "StreamStats"]

log = logging.getLogger("arkor_trio.stream")

TERMINAL_EVENTS = (TrainingCompleted, TrainingFailed, TrainingCancelled)
TERMINAL_TYPES: frozenset[type[Any]] = frozenset(TERMINAL_EVENTS)


@attrs.define
class _Outcome:
    """How one connection ended."""

    progress: bool = False
    finished: bool = False
    error: BaseException | None = None
    retry_after: float | None = None


def _terminal_from_job(job: TrainingJob, event_id: str | None) -> JobEvent:
    common: dict[str, Any] = {"job_id": job.id, "timestamp": job.completed_at, "event_id": event_id}
    if job.status == "completed":
        return TrainingCompleted(artifacts=list(job.artifacts or []), **common)
    if job.status == "failed":
        return TrainingFailed(error=job.error or "unknown error", **common)
    return TrainingCancelled(**common)


class EventStream:
    """The events of one job, followed across reconnects; use as ``async with``, then iterate.

    Obtain one with :meth:`ArkorClient.events`. Iteration yields :class:`TrainingStarted`,
    :class:`TrainingLog`, :class:`CheckpointSaved`, :class:`UnknownEvent` and finally one terminal
    event (:class:`TrainingCompleted`, :class:`TrainingFailed` or :class:`TrainingCancelled`), in
    stream order, each id at most once.

    Attributes:
        job_id: The job followed.
        cursor: The id of the last event yielded (starts at ``after``).
        policy: The reconnect policy in force.
    """

    def __init__(
        self,
        client: ArkorClient,
        job_id: str,
        *,
        after: str | None = None,
        policy: ReconnectPolicy | None = None,
        created_at: float | None = None,
        seen: Iterable[str] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.job_id = job_id
        self.cursor = after
        self.policy = policy if policy is not None else ReconnectPolicy()
        self._client = client
        self._created_at = created_at
        self._recent = RecentIds(seen)
        self._rng = rng if rng is not None else random.Random()
        self._decoder = SSEDecoder(self.policy.max_frame_bytes, last_event_id=after or "")
        self._counters = _Counters()
        self._nursery_cm: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._nursery: trio.Nursery | None = None
        self._queue: EventQueue[JobEvent] | None = None
        self._done = False
        self._ended_at: float | None = None

    # --- public surface ------------------------------------------------------------------------

    @property
    def stats(self) -> StreamStats:
        """A snapshot of the counters (see :class:`StreamStats`)."""
        return self._counters.snapshot()

    @property
    def resume_id(self) -> str:
        """The id a reconnect would send as ``Last-Event-ID`` (the last complete frame's)."""
        return self._decoder.last_event_id

    async def __aenter__(self) -> Self:
        if self._nursery_cm is not None:
            raise RuntimeError("an EventStream can be entered only once")
        self._queue = EventQueue(self.policy.buffer_size)
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        self._nursery.start_soon(self._reader, self._queue)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        assert self._nursery is not None
        assert self._nursery_cm is not None
        assert self._queue is not None
        self._nursery.cancel_scope.cancel()
        self._queue.close()
        try:
            return bool(await self._nursery_cm.__aexit__(exc_type, exc, tb))
        except BaseExceptionGroup as group:
            lone = lone_exception(group)
            if lone is None:
                raise
            if lone is exc:
                return False  # the body's own exception propagates untouched
            raise lone from None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> JobEvent:
        if self._queue is None:
            raise RuntimeError("use `async with client.events(...) as stream:` before iterating")
        if self._done:
            await trio.lowlevel.checkpoint()
            raise StopAsyncIteration
        try:
            item = await self._queue.get()
        except trio.EndOfChannel:
            self._done = True
            raise StopAsyncIteration from None
        except ArkorError:
            self._done = True
            raise
        if item.event_id is not None:
            self.cursor = item.event_id
        if type(item) in TERMINAL_TYPES:
            self._done = True
        return item

    # --- the reader task -----------------------------------------------------------------------

    async def _reader(self, queue: EventQueue[JobEvent]) -> None:
        try:
            await self._follow(queue)
        except ArkorError as exc:
            queue.close(exc)
        else:
            queue.close()

    async def _follow(self, queue: EventQueue[JobEvent]) -> None:
        backoff = Backoff(self.policy, self._rng)
        params = await self._client._scope_params()
        url = self._client._url(self._client._job_path(self.job_id, "/events/stream"))
        while True:
            outcome = await self._connection(queue, url, params)
            if outcome.finished:
                return
            if outcome.progress:
                delay = backoff.after_progress(self._decoder.retry)
            else:
                self._counters.failures += 1
                if backoff.exhausted():
                    raise ReconnectsExhausted(
                        f"the event stream of job {self.job_id} failed "
                        f"{backoff.attempt + 1} times in a row without progress; giving up "
                        f"(ReconnectPolicy.max_attempts={self.policy.max_attempts}); "
                        f"last error: {outcome.error}"
                    ) from outcome.error
                delay = backoff.after_failure(outcome.retry_after)
            log.debug(
                "job %s: reconnecting in %.3f s (progress=%s, error=%r, resume=%r)",
                self.job_id,
                delay,
                outcome.progress,
                outcome.error,
                self._decoder.last_event_id,
            )
            if delay > 0:
                await trio.sleep(delay)

    def _request_headers(self) -> dict[str, str]:
        extra = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self._decoder.last_event_id:
            extra["Last-Event-ID"] = self._decoder.last_event_id
        return self._client._headers(extra=extra)

    async def _open(self, url: str, params: dict[str, str]) -> httpx.Response | _Outcome:
        """Open one connection: a 2xx response to read, or how the attempt failed."""
        http = self._client._http()
        timeout = httpx.Timeout(self.policy.connect_timeout, read=None)
        request = http.build_request(
            "GET", url, params=params, headers=self._request_headers(), timeout=timeout
        )
        response: httpx.Response | None = None
        try:
            with trio.move_on_after(self.policy.connect_timeout) as scope:
                response = await http.send(request, stream=True)
        except httpx.TransportError as exc:
            return _Outcome(error=exc)
        if response is None or scope.cancelled_caught:
            return _Outcome(
                error=StreamError(f"no response within {self.policy.connect_timeout} s")
            )
        status = response.status_code
        if 200 <= status < 300:
            await self._client._raise_for_status(response, route=request.url.path)  # deprecations
            content_type = response.headers.get("content-type", "text/event-stream")
            if not content_type.lower().startswith("text/event-stream"):
                await _close(response)
                raise StreamError(
                    f"GET {request.url.path} answered {status} with Content-Type {content_type!r}, "
                    "not text/event-stream: is the base URL an Arkor API?"
                )
            return response
        try:
            if status in PERMANENT_STATUSES or (status == 404 and not self._in_grace()):
                await self._client._raise_for_status(
                    response, route=request.url.path, job_route=True
                )
            retry_after = None
            if status in (429, 503):
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            try:
                with trio.move_on_after(self.policy.connect_timeout):
                    await response.aread()
            except httpx.TransportError:
                pass
            return _Outcome(
                error=ApiError(status, f"HTTP {status} opening the event stream"),
                retry_after=retry_after,
            )
        finally:
            await _close(response)

    def _in_grace(self) -> bool:
        if self._created_at is None:
            return False
        return trio.current_time() - self._created_at < self.policy.not_found_grace

    async def _connection(
        self,
        queue: EventQueue[JobEvent],
        url: str,
        params: dict[str, str],
    ) -> _Outcome:
        opened = await self._open(url, params)
        if isinstance(opened, _Outcome):
            return opened
        response = opened
        counters = self._counters
        counters.connections += 1
        if self._ended_at is not None:
            counters.gaps.append(trio.current_time() - self._ended_at)
        outcome = _Outcome()
        idle = self.policy.idle_timeout
        try:
            with trio.CancelScope(deadline=trio.current_time() + idle) as watchdog:
                raw = cast("AsyncGenerator[bytes, None]", response.aiter_raw())
                async with aclosing(raw) as chunks:
                    async for chunk in chunks:
                        watchdog.deadline = trio.current_time() + idle
                        counters.bytes += len(chunk)
                        for frame in self._decoder.feed(chunk):
                            if frame.event == "end":
                                self._counters.frames += 1
                                await self._end(frame, queue, outcome)
                                return outcome  # terminal, or `end` for a running job
                            event = self._decode(frame)
                            if event is None:
                                continue
                            outcome.progress = True
                            if queue.full:
                                await self._put(queue, event, watchdog)
                            else:
                                queue.put(event)
                            if type(event) in TERMINAL_TYPES:
                                outcome.finished = True
                                return outcome
            if watchdog.cancelled_caught:
                outcome.error = StreamError(f"no data for {idle} s (idle_timeout)")
            elif outcome.error is None:
                outcome.error = StreamError("the server closed the event stream")
        except (httpx.TransportError, httpx.StreamError) as exc:
            outcome.error = exc
        except FrameTooLarge as exc:
            outcome.error = exc
        finally:
            self._decoder.close()
            self._ended_at = trio.current_time()
            await _close(response)
        return outcome

    def _decode(self, frame: SSEFrame) -> JobEvent | None:
        """The event a data frame carries, or None for pings, duplicates and malformed frames."""
        counters = self._counters
        counters.frames += 1
        if frame.event == "ping":
            counters.pings += 1
            return None
        frame_id = frame.id
        if frame_id and frame_id in self._recent:
            counters.duplicates += 1
            return None
        try:
            event = decode_event_json(frame.data, frame_id or None)
        except MalformedPayload:
            counters.skipped += 1
            return None
        if frame_id:
            self._recent.add(frame_id)
        if type(event) is UnknownEvent:
            counters.unknown += 1
        counters.events += 1
        return event

    async def _put(
        self, queue: EventQueue[JobEvent], event: JobEvent, watchdog: trio.CancelScope
    ) -> None:
        """Queue ``event``; while the consumer is behind, the idle watchdog is paused."""
        watchdog.deadline = math.inf
        await queue.wait_not_full()
        watchdog.deadline = trio.current_time() + self.policy.idle_timeout
        queue.put(event)

    async def _end(
        self,
        frame: SSEFrame,
        queue: EventQueue[JobEvent],
        outcome: _Outcome,
    ) -> None:
        """An ``end`` frame: the backend closed the channel; ask it how the job stands."""
        try:
            job = await self._client.get_job(self.job_id)
        except ApiError as exc:
            if exc.status in PERMANENT_STATUSES or exc.status == 404:
                raise
            outcome.error = exc
            return
        if job.is_terminal:
            queue.put(_terminal_from_job(job, frame.id or None))
            outcome.finished = True
            return
        outcome.error = StreamError(f"the stream ended while the job is {job.status}")


async def _close(response: httpx.Response) -> None:
    """Close a response even while being cancelled (it only releases the socket)."""
    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
        await response.aclose()
