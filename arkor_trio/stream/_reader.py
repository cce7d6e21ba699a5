"""Reading one connection of a channel: body bytes in, items on the hand-over queue.

``ChunkReader`` decodes each network chunk into frames, drops duplicates (and a replay's frames
before the resume point), turns frames into items with the channel's ``decode``, settles a final
item and queues the rest in one batch per chunk. The idle watchdog is reset by every chunk and
paused while the consumer is behind. A frame too large at the same resume point on two
connections in a row is raised instead of retried.
"""

from __future__ import annotations

import math
from contextlib import aclosing
from typing import TYPE_CHECKING, Generic, TypeVar, cast

import attrs
import httpx
import trio

from .._errors import FrameTooLarge, StreamError
from .._inflate import UnsafeBody, iter_body

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable

    from ..sse import SSEDecoder, SSEFrame
    from ._dedupe import DuplicateFilter
    from ._queue import EventQueue
    from ._reconnect import ReconnectPolicy
    from ._stats import StreamCounters

__all__ = ["ChunkReader", "Outcome"]

T = TypeVar("T")


@attrs.define
class Outcome:
    """How one connection ended."""

    progress: bool = False
    #: The connection moved the resume point (``Last-Event-ID``): progress a reconnect keeps.
    moved: bool = False
    finished: bool = False
    error: BaseException | None = None
    retry_after: float | None = None


class ChunkReader(Generic[T]):
    """The reading half of an :class:`~arkor_trio.stream.SSEChannel`, shared by its connections.

    Args:
        decoder: The channel's SSE decoder (it keeps the resume position).
        duplicates: The channel's duplicate filter.
        counters: The channel's counters.
        policy: Its reconnect policy (idle timeout, frame size).
        resume_id: Returns what a reconnect would send as ``Last-Event-ID``.
        decode, is_final, settle: The channel's item hooks (see ``SSEChannel``).
    """

    def __init__(
        self,
        *,
        decoder: SSEDecoder,
        duplicates: DuplicateFilter,
        counters: StreamCounters,
        policy: ReconnectPolicy,
        resume_id: Callable[[], str],
        decode: Callable[[SSEFrame], T | None] | None,
        is_final: Callable[[T], bool] | None,
        settle: Callable[[T], Awaitable[T | None]] | None,
    ) -> None:
        self._decoder = decoder
        self._filter = duplicates
        self._counters = counters
        self._policy = policy
        self._resume_id = resume_id
        self._decode = decode
        self._is_final = is_final
        self._settle = settle
        self._too_large_at: str | None = None

    async def read(self, response: httpx.Response, queue: EventQueue[T], outcome: Outcome) -> None:
        """Read one connection's body to its end, queueing items; ``outcome`` says how it ended."""
        counters = self._counters
        idle = self._policy.idle_timeout
        decoder = self._decoder
        seen = self._filter.seen
        remember = self._filter.add
        decode = self._decode
        is_final = self._is_final
        start = self._resume_id()
        try:
            with trio.CancelScope(deadline=trio.current_time() + idle) as watchdog:
                # Inflated in bounded slices, a checkpoint between two (a gzip bomb is refused).
                raw = cast("AsyncGenerator[bytes, None]", iter_body(response))
                async with aclosing(raw) as chunks:
                    async for chunk in chunks:
                        watchdog.deadline = trio.current_time() + idle
                        counters.bytes += len(chunk)
                        frames = decoder.feed(chunk)
                        counters.frames += len(frames)
                        batch: list[T] = []
                        for frame in frames:
                            frame_id = frame.id
                            if seen(frame_id):
                                counters.duplicates += 1
                                continue
                            if decode is None:
                                item = cast("T", frame)
                            else:
                                decoded = decode(frame)
                                if decoded is None:
                                    continue
                                item = decoded
                            if is_final is not None and is_final(item):
                                await self._queue_all(queue, batch, outcome, watchdog)
                                await self._final(item, frame_id, queue, outcome, watchdog)
                                return
                            if frame_id:
                                remember(frame_id)
                            batch.append(item)
                        if batch:
                            await self._queue_all(queue, batch, outcome, watchdog)
            if watchdog.cancelled_caught:
                outcome.error = StreamError(f"no data for {idle} s (idle_timeout)")
            else:
                outcome.error = StreamError("the server closed the event stream")
        except (httpx.TransportError, httpx.StreamError, httpx.DecodingError) as exc:
            outcome.error = exc
        except UnsafeBody as exc:
            outcome.error = StreamError(f"the event stream's body was refused: {exc}")
        except FrameTooLarge as exc:
            self._frame_too_large(exc)
            outcome.error = exc
        finally:
            outcome.moved = self._resume_id() != start

    def _frame_too_large(self, exc: FrameTooLarge) -> None:
        """The same frame too large twice at one resume point is permanent: raise it."""
        at = self._resume_id()
        if self._too_large_at == at:
            exc.add_note(
                f"the frame after id {at!r} exceeded max_frame_bytes "
                f"({self._policy.max_frame_bytes}) on two connections in a row: the server sends "
                "it again on every reconnect, so the channel stops; raise "
                "ReconnectPolicy.max_frame_bytes to read it"
            )
            raise exc
        self._too_large_at = at

    async def _final(
        self,
        item: T,
        frame_id: str | None,
        queue: EventQueue[T],
        outcome: Outcome,
        watchdog: trio.CancelScope,
    ) -> None:
        """A final item: settle it, queue it and end the channel (or go on reconnecting).

        The connection has nothing more to say, so the idle watchdog no longer applies.
        """
        watchdog.deadline = math.inf
        if self._settle is not None:
            settled = await self._settle(item)
            if settled is None:
                outcome.error = StreamError("the stream ended, but it is not over; reconnecting")
                return
            item = settled
        if frame_id:
            self._filter.add(frame_id)
        self._counters.events += 1
        outcome.progress = outcome.finished = True
        if queue.full:
            await queue.wait_not_full()
        queue.put(item)

    async def _queue_all(
        self, queue: EventQueue[T], batch: list[T], outcome: Outcome, watchdog: trio.CancelScope
    ) -> None:
        """Queue the items of one chunk; while the consumer is behind, the watchdog is paused."""
        if not batch:
            return
        self._counters.events += len(batch)
        outcome.progress = True
        if queue.room >= len(batch):
            queue.extend(batch)
            return
        for item in batch:
            if queue.full:
                watchdog.deadline = math.inf
                await queue.wait_not_full()
                watchdog.deadline = trio.current_time() + self._policy.idle_timeout
            queue.put(item)
