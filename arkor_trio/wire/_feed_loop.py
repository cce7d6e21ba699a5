"""The job feed's socket loop: one socket at a time, and when to open the next.

Each socket runs a drain task that reads every message at once (so heartbeats count while
consumers are slow) and hands it to the :class:`~._feed_router.FeedRouter`, and the outbox's
sender. Between sockets the feed follows :class:`ReconnectPolicy` like the SSE stream: at once
after progress, else the failure backoff up to ``max_attempts``; 1001/1012 reconnect at once
(once in a row without progress). Final close codes and refusals raise (see
:mod:`._feed_socket`). A message over ``max_frame_bytes`` ends its socket (1009); the server
sends it again on every reconnect, so two such sockets in a row without progress raise
``FrameTooLarge``, as two at one resume point do on SSE. Each socket asks for the batch size
:class:`~._feed_batch.BatchSize` holds, so a link that passes only a few KiB per connection
still lets complete messages through.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError

from .._errors import ArkorError, FrameTooLarge, ReconnectsExhausted
from .._groups import collapse_groups
from ..stream import Backoff
from ..stream.lowlevel import METRICS
from ._feed_batch import BatchSize
from ._feed_socket import SocketEnd, end_from_close, end_from_rejection
from ._ws_connect import MESSAGE_QUEUE_SIZE, SINGLE_JOB_QUEUE_SIZE, open_ws

if TYPE_CHECKING:
    import random

    from trio_websocket import WebSocketConnection

    from ..stream import ReconnectPolicy
    from ._feed_job import FeedCounters
    from ._feed_outbox import Outbox
    from ._feed_router import FeedRouter
    from ._feed_socket import FeedClient

__all__ = ["FeedLoop"]

log = logging.getLogger("arkor_trio.feed")


class FeedLoop:
    """Opens the feed's sockets one after another, forever (or until a final error)."""

    def __init__(
        self,
        client: FeedClient,
        policy: ReconnectPolicy,
        rng: random.Random,
        counters: FeedCounters,
        outbox: Outbox,
        router: FeedRouter,
    ) -> None:
        self._client = client
        self._policy = policy
        self._rng = rng
        self._counters = counters
        self._outbox = outbox
        self._router = router
        self._ended_at: float | None = None
        self.batch = BatchSize()

    async def run(self) -> None:
        """Connect, use, reconnect.

        Raises:
            ArkorError: A final close code or refusal, or ``ReconnectsExhausted``.
        """
        backoff = Backoff(self._policy, self._rng)
        router = self._router
        too_large = False  # the previous socket ended on an oversized message, no progress
        while True:
            closed = await self._connection()
            progress, router.socket_progress = router.socket_progress, False
            self.batch.after_socket(progress=progress, broken=closed.broken)
            if closed.too_large and not progress:
                if too_large:
                    raise self._too_large()
                too_large = True
            else:
                too_large = False
            if closed.restart and not progress and backoff.attempt == 0:
                # 1001/1012: the server is going away or restarting: reconnect at once, once.
                # The attempt counts, so a server closing every socket that way right after
                # the handshake gets the failure backoff (and max_attempts) next time.
                backoff.attempt += 1
                delay = 0.0
            elif progress:
                delay = backoff.after_progress(None)
            else:
                self._counters.failures += 1
                if backoff.exhausted():
                    raise ReconnectsExhausted(
                        f"the job feed failed {backoff.attempt + 1} times in a row without "
                        f"progress; giving up (ReconnectPolicy.max_attempts="
                        f"{self._policy.max_attempts}); last error: {closed.error}"
                    ) from closed.error
                delay = backoff.after_failure(closed.retry_after)
            METRICS.reconnect("websocket", closed.cause)
            log.debug("feed: reconnecting in %.3f s after %r", delay, closed.error)
            if delay > 0:
                await trio.sleep(delay)

    def _too_large(self) -> FrameTooLarge:
        limit = self._policy.max_frame_bytes
        error = FrameTooLarge(limit)
        error.add_note(
            f"a job feed message exceeded max_frame_bytes ({limit}) on two sockets in a row: "
            "the server sends it again on every reconnect, so the feed stops; raise "
            "ReconnectPolicy.max_frame_bytes to read it"
        )
        return error

    async def _connection(self) -> SocketEnd:
        url, headers = await self._client.websocket_target("/v1/events/ws")
        try:
            async with open_ws(
                self.batch.url(url),
                headers,
                connect_timeout=self._policy.connect_timeout,
                max_message_size=self._policy.max_frame_bytes,
                message_queue_size=(
                    SINGLE_JOB_QUEUE_SIZE if self._router.single_job else MESSAGE_QUEUE_SIZE
                ),
            ) as ws:
                return await self._use(ws)
        except ConnectionRejected as exc:
            return end_from_rejection(exc, self._policy.permanent_statuses)
        except (HandshakeError, OSError, trio.BrokenResourceError) as exc:
            return SocketEnd(exc)
        finally:
            self._outbox.disconnect()

    async def _use(self, ws: WebSocketConnection) -> SocketEnd:
        counters = self._counters
        counters.connections += 1
        if self._ended_at is not None:
            gap = trio.current_time() - self._ended_at
            counters.gaps.append(gap)
            METRICS.reopened("websocket", gap)
        self._outbox.connected = True
        router = self._router
        router.socket_opened()
        idle = self._policy.idle_timeout
        try:
            with collapse_groups():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._outbox.pump, ws)
                    with trio.CancelScope(deadline=trio.current_time() + idle) as watchdog:
                        while True:
                            raw = await ws.get_message()
                            watchdog.deadline = trio.current_time() + idle
                            router.handle_raw(raw)
                            while router.blocked is not None:  # a single-job or merged consumer
                                watchdog.deadline = math.inf  # is behind: TCP slows the server
                                await router.wait_room()
                                watchdog.deadline = trio.current_time() + idle
                    nursery.cancel_scope.cancel()
            return SocketEnd(
                ArkorError(f"no message for {idle} s (idle_timeout)"),
                broken=True,
                cause="idle_timeout",
            )
        except ConnectionClosed as exc:
            return end_from_close(exc, self._policy.permanent_statuses)
        finally:
            self._ended_at = trio.current_time()
