"""``SSEChannel``: one Server-Sent Events endpoint followed as a resumable channel.

A reader task owns the HTTP connection: it decodes frames, drops duplicates (and replays of a
server that ignored ``Last-Event-ID``), turns frames into items with an optional decoder, and
queues them on a bounded hand-over queue; the consumer iterates the channel. Cuts, stalls, 5xx
bursts and restarts are survived by reconnecting from the id of the last *complete* frame
(:mod:`._reconnect` holds the delay rules, :mod:`._connect` opening one connection and
:mod:`._reader` reading its body).

Errors that stop the channel (a permanent status, exhausted reconnects, a frame too large twice
at the same resume point) are raised by the consumer's next ``__anext__``, as the library's own
exception, never an ExceptionGroup.
"""

from __future__ import annotations

import logging
import operator
import random
from typing import TYPE_CHECKING, Generic, Self, TypeVar
from urllib.parse import urlsplit

import httpx
import trio

from .._errors import ArkorError, ConfigError, ReconnectsExhausted
from .._groups import lone_exception
from ..sse import SSEDecoder, SSEFrame
from ._connect import (
    FINISHED,
    Failure,
    close_response,
    open_connection,
    resolve_headers,
    status_error,
)
from ._gate import gate_for, unreachable
from ._ledger import Ledger
from ._metrics import METRICS, release, track
from ._queue import EventQueue
from ._reader import ChunkReader, Outcome
from ._reconnect import Backoff, ReconnectPolicy
from ._state import ConnectionState
from ._stats import StreamCounters, StreamStats

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from contextlib import AbstractAsyncContextManager
    from types import TracebackType

    from ._connect import Headers
    from ._cursor import CursorStore
    from ._dedupe import DuplicateFilter
    from ._gate import OriginGate
    from ._state import OnState

__all__ = ["SSEChannel"]

log = logging.getLogger("arkor_trio.stream")

T = TypeVar("T")

_TIMEOUT = httpx.Timeout(30.0, read=None)


_frame_id = operator.attrgetter("last_event_id")


class SSEChannel(Generic[T]):
    """An SSE endpoint followed across reconnects; ``async with`` it, then iterate.

    :func:`~arkor_trio.stream.open_sse` builds one that yields :class:`~arkor_trio.sse.SSEFrame`
    objects; layers above pass ``decode`` to yield their own items (the job stream yields job
    events) and hooks for their own status rules.

    Args:
        url: The endpoint.
        headers: A mapping, or a callable (sync or async) returning one, called for every
            connection (a token refresh goes here). ``Accept``, ``Cache-Control`` and
            ``Last-Event-ID`` are added.
        params: Query parameters of every request: a mapping or, like ``headers``, a callable.
        last_event_id: Resume after this id on the first connection.
        policy: Reconnect rules (:class:`ReconnectPolicy`).
        http: The httpx client to send with (kept open); default: one the channel creates
            and closes.
        decode: Turns a frame into the item to yield, or None to drop it (a keep-alive, a
            malformed payload: not progress). It may count into :attr:`counters`.
        is_final: Iteration ends after yielding an item for which it returns true.
        settle: For a final item, an async hook returning the item to yield in its place, or
            None when the stream is not over after all (the connection ends and the channel
            reconnects by the usual rules). Exceptions it raises stop the channel.
        is_permanent: Which statuses stop the channel (default: ``policy.permanent_statuses``).
        on_response: Called with every response before it is handled (e.g. to log headers).
        make_error: Builds the exception for a non-2xx answer from ``(status, body_text,
            route)``; default an :class:`~arkor_trio.ApiError` with the body's ``error`` text.
        duplicates: The duplicate filter to use (a trainer keeps one across streams).
        item_id: The id an item stands for (default: the frame's ``last_event_id``); it moves
            :attr:`cursor` when the item is yielded.
        cursor_store: Where the cursor is committed: an item's id is saved under
            ``cursor_key`` when the consumer asks for the next item or leaves the block without
            an exception, never when the block's body raised. Without ``last_event_id`` the
            channel resumes from the stored cursor.
        cursor_key: The key in ``cursor_store`` (default: ``url``).
        ledger: The follower's :class:`~arkor_trio.stream.Ledger` (commit rule, dedupe, lease):
            a trainer keeps one across streams; default one for ``cursor_store``/``cursor_key``.
        rng: Randomness for the backoff jitter (tests pass a seeded one).
        method: The request method (default ``GET``).
        content: The request body, sent again on every connection (None: no body).
        on_state: Called with a :class:`ConnectionState` at every state change.

    Attributes:
        cursor: The id of the last item yielded (starts at the resume id, or None).
        committed: The id last committed to ``cursor_store`` (starts at the resume id).
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Headers = None,
        params: Headers = None,
        last_event_id: str | None = None,
        policy: ReconnectPolicy | None = None,
        http: httpx.AsyncClient | None = None,
        decode: Callable[[SSEFrame], T | None] | None = None,
        is_final: Callable[[T], bool] | None = None,
        settle: Callable[[T], Awaitable[T | None]] | None = None,
        is_permanent: Callable[[int], bool] | None = None,
        on_response: Callable[[httpx.Response], None] | None = None,
        make_error: Callable[[int, str, str], Exception] | None = None,
        duplicates: DuplicateFilter | None = None,
        item_id: Callable[[T], str | None] | None = None,
        cursor_store: CursorStore | None = None,
        cursor_key: str | None = None,
        ledger: Ledger | None = None,
        rng: random.Random | None = None,
        method: str = "GET",
        content: bytes | None = None,
        on_state: OnState | None = None,
    ) -> None:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"url must be an http(s) URL with a host, got {url!r}", field="url")
        self.url = url
        if ledger is None:
            key = cursor_key if cursor_key is not None else url
            ledger = Ledger(cursor_store, key)
        self._ledger = ledger
        #: Resume from the store's cursor when entered (no ``last_event_id`` given).
        self._load = last_event_id is None and ledger.store is not None
        if last_event_id is not None:
            ledger.cursor = last_event_id
            if ledger.committed is None:
                ledger.committed = last_event_id
        self._item_id: Callable[[T], str | None] = item_id if item_id is not None else _frame_id
        self.policy = policy if policy is not None else ReconnectPolicy()
        self.counters = StreamCounters()
        self._headers = headers
        self._params = params
        self._method, self._content, self._on_state = method, content, on_state
        self.state = ConnectionState("connecting")
        self._http = http
        permanent = self.policy.permanent_statuses
        self._is_permanent = is_permanent or permanent.__contains__
        self._on_response = on_response
        self._make_error = make_error if make_error is not None else status_error
        self._filter = duplicates if duplicates is not None else ledger.new_filter()
        self._is_final = is_final
        self._rng = rng if rng is not None else random.Random()
        self._gate: OriginGate | None = None
        self._decoder = SSEDecoder(self.policy.max_frame_bytes, last_event_id=last_event_id or "")
        self._nursery_cm: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._nursery: trio.Nursery | None = None
        self._queue: EventQueue[T] | None = None
        self._done = False
        self._ended_at: float | None = None
        self._body: ChunkReader[T] = ChunkReader(
            decoder=self._decoder,
            duplicates=self._filter,
            counters=self.counters,
            policy=self.policy,
            resume_id=lambda: self.resume_id,
            decode=decode,
            is_final=is_final,
            settle=settle,
        )

    # --- public surface ------------------------------------------------------------------------

    @property
    def stats(self) -> StreamStats:
        """A snapshot of the counters (see :class:`StreamStats`)."""
        return self.counters.snapshot()

    @property
    def resume_id(self) -> str:
        """The id a reconnect would send as ``Last-Event-ID`` (the last complete frame's)."""
        if self._filter.skipping:
            return self._filter.resume_id
        return self._decoder.last_event_id

    @property
    def cursor(self) -> str | None:
        """The id of the last item yielded (starts at the resume id, or None)."""
        return self._ledger.cursor

    @property
    def committed(self) -> str | None:
        """The id last committed to the cursor store (starts at the stored cursor)."""
        return self._ledger.committed

    @property
    def ledger(self) -> Ledger:
        """The follower's ledger (the commit rule, dedupe and lease of this key)."""
        return self._ledger

    async def commit(self) -> None:
        """Commit the item being handled now, before asking for the next one.

        For a body that made a side effect it must not repeat: after ``commit()`` a crash
        resumes after this item. Idempotent; the usual commit on the next item is then a no-op.
        """
        await self._ledger.handled()

    @property
    def duplicates(self) -> DuplicateFilter:
        """The duplicate filter (keep it to resume another channel without re-delivering)."""
        return self._filter

    async def __aenter__(self) -> Self:
        if self._nursery_cm is not None:
            raise RuntimeError("a channel can be entered only once")
        if self._load:
            stored = await self._ledger.load()
            if stored.id:
                self._decoder.resume_from(stored.id)
        self._queue = EventQueue(self.policy.buffer_size)
        track(self.counters)
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
        ledger = self._ledger
        if ledger.pending:
            if exc is None:
                await ledger.handled()
            else:
                ledger.abandon()
        self._nursery.cancel_scope.cancel()
        self._queue.close()
        release(self.counters)
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

    async def __anext__(self) -> T:
        ledger = self._ledger
        if ledger.pending and not ledger.handled_nowait():
            await ledger.handled()
        queue = self._queue
        if queue is None:
            raise RuntimeError("enter the channel with `async with` before iterating it")
        if self._done:
            await trio.lowlevel.checkpoint()
            raise StopAsyncIteration
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
        is_final = self._is_final
        ledger.take(self._item_id(item), final=is_final is not None and is_final(item))
        # After a final item the reader closes the queue: the next call ends the iteration.
        return item

    # --- the reader task -----------------------------------------------------------------------

    def _set_state(self, state: ConnectionState) -> None:
        self.state = state
        if self._on_state is not None:
            self._on_state(state)

    async def _reader(self, queue: EventQueue[T]) -> None:
        error: BaseException | None = None
        try:
            if self._http is not None:
                await self._follow(queue, self._http)
            else:
                async with httpx.AsyncClient(timeout=_TIMEOUT) as http:
                    await self._follow(queue, http)
        except ArkorError as exc:
            error = exc
            queue.close(exc)
        else:
            queue.close()
        finally:
            self._set_state(ConnectionState("closed", error=error))

    async def _follow(self, queue: EventQueue[T], http: httpx.AsyncClient) -> None:
        backoff = Backoff(self.policy, self._rng)
        gate = self._gate = gate_for(self.url)
        while True:
            self._set_state(ConnectionState("connecting", backoff.attempt))
            outcome = await self._connection(queue, http)
            if outcome.finished:
                return
            METRICS.reconnect(self.counters.transport, outcome.cause)
            if outcome.progress:
                delay = backoff.after_progress(self._decoder.retry, moved=outcome.moved)
            else:
                self.counters.failures += 1
                if backoff.exhausted():
                    raise ReconnectsExhausted(
                        f"{self.url} failed {backoff.attempt + 1} times in a row without "
                        f"progress; giving up (ReconnectPolicy.max_attempts="
                        f"{self.policy.max_attempts}); last error: {outcome.error}"
                    ) from outcome.error
                delay = backoff.after_failure(outcome.retry_after)
            log.debug(
                "%s: reconnecting in %.3f s (progress=%s, error=%r, resume=%r)",
                self.url,
                delay,
                outcome.progress,
                outcome.error,
                self.resume_id,
            )
            self._set_state(ConnectionState("reconnecting", backoff.attempt, delay, outcome.error))
            if delay > 0 and not outcome.progress and unreachable(outcome.error):
                # Cut short when another stream reaches the origin (a restart's herd: _gate).
                await gate.backoff(delay, self.policy.initial_delay, self._rng)
            elif delay > 0:
                await trio.sleep(delay)

    async def _request_headers(self) -> dict[str, str]:
        headers = await resolve_headers(self._headers)
        headers.setdefault("Accept", "text/event-stream")
        headers.setdefault("Cache-Control", "no-cache")
        resume = self.resume_id
        if resume:
            headers["Last-Event-ID"] = resume
        return headers

    async def _connection(self, queue: EventQueue[T], http: httpx.AsyncClient) -> Outcome:
        opened = await open_connection(
            http,
            self.url,
            params=await resolve_headers(self._params) or None,
            headers=await self._request_headers(),
            policy=self.policy,
            is_permanent=self._is_permanent,
            on_response=self._on_response,
            make_error=self._make_error,
            method=self._method,
            content=self._content,
        )
        if isinstance(opened, Failure):
            cause = "status" if getattr(opened.error, "status", None) else "error"
            return Outcome(error=opened.error, retry_after=opened.retry_after, cause=cause)
        if opened is FINISHED:
            return Outcome(finished=True)
        assert isinstance(opened, httpx.Response)
        response = opened
        if self._gate is not None:
            self._gate.opened()
        self._set_state(ConnectionState("open"))
        counters = self.counters
        counters.connections += 1
        if self._ended_at is not None:
            gap = trio.current_time() - self._ended_at
            counters.gaps.append(gap)
            METRICS.reopened(counters.transport, gap)
        self._decoder.resume_from(self.resume_id)
        self._filter.connection(self.resume_id)
        outcome = Outcome()
        try:
            await self._body.read(response, queue, outcome)
        finally:
            if self._filter.skipping:
                self._decoder.resume_from(self._filter.resume_id)
            if self._decoder.in_block and outcome.cause in ("clean_end", "error"):
                outcome.cause = "cut_mid_frame"
            self._decoder.close()
            self._ended_at = trio.current_time()
            await close_response(response)
        return outcome
