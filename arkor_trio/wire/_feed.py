"""``JobFeed``: many jobs' event streams over one WebSocket (``GET /v1/events/ws``).

``async with client.feed() as feed:`` opens one socket and keeps it open (reconnecting by the
rules of :class:`ReconnectPolicy`); ``feed.subscribe(job_id)`` adds a job at any time and
returns a :class:`FeedSubscription` to iterate; leaving it (or ``feed.remove``) unsubscribes.
After every reconnect each job is subscribed again after the id of the last event the feed
queued for it, so every consumer sees each event once.

Tasks: the connection loop (one socket at a time), and on each socket a drain task that reads
every message at once (so heartbeats count while consumers are slow) and a sender for the
outgoing ``subscribe``/``unsubscribe`` messages. A job whose bounded queue is full is
unsubscribed and subscribed again from its resume point once its consumer made room: a slow
consumer delays only its own job and loses nothing. ``end`` without a terminal event makes the
feed fetch the job: a terminal job yields a synthesized terminal event, a running one is
subscribed again (at once after progress, else after a backoff).

Close codes: ``4000 + status`` is handled like that HTTP status (400, 401, 403, 404, 410, 422,
426 are final for the whole feed), 1001 and 1012 reconnect at once, anything else is a
failure (or, after progress, an immediate reconnect). See docs/websocket.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from collections import deque
from typing import TYPE_CHECKING, Any, Self

import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError

from .._errors import (
    ApiError,
    ArkorError,
    ConfigError,
    JobNotFound,
    ReconnectsExhausted,
)
from .._groups import collapse_groups, lone_exception
from ..stream import Backoff, Ledger, MemoryCursorStore, ReconnectPolicy, as_cursor_store
from ._codec import MalformedPayload, decode_event
from ._feed_job import FeedCounters, FeedJob, FeedStats, FeedSubscription
from ._feed_socket import FeedClient, SocketEnd, end_from_close, end_from_rejection, take_batch
from ._models import terminal_event
from ._ws_connect import open_ws

if TYPE_CHECKING:
    from collections.abc import Iterable
    from contextlib import AbstractAsyncContextManager
    from types import TracebackType

    from trio_websocket import WebSocketConnection

    from ..stream import CursorStore

__all__ = ["FeedClient", "FeedStats", "FeedSubscription", "JobFeed"]

log = logging.getLogger("arkor_trio.feed")


class JobFeed:
    """Follow many jobs over one WebSocket. Use as ``async with client.feed() as feed:``.

    Args:
        client: The client whose base URL, token and scope the socket uses.
        policy: Reconnect rules (``idle_timeout``, backoff, ``max_attempts``,
            ``buffer_size`` per job, ``max_frame_bytes`` per message, ``connect_timeout``).
        cursor_store: Where each job's consumed cursor is committed (default: in memory);
            ``subscribe(job)`` without ``after`` resumes after the stored one.
    """

    def __init__(
        self,
        client: FeedClient,
        *,
        policy: ReconnectPolicy | None = None,
        cursor_store: CursorStore | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy if policy is not None else ReconnectPolicy()
        self.cursor_store: CursorStore = (
            cursor_store if cursor_store is not None else MemoryCursorStore()
        )
        self._store = as_cursor_store(self.cursor_store)
        self._client = client
        self._rng = rng if rng is not None else random.Random()
        self._jobs: dict[str, FeedJob] = {}
        self._counters = FeedCounters()
        self._outbox: deque[str] = deque()
        self._outbox_ready = trio.lowlevel.ParkingLot()
        self._connected = False
        self._error: ArkorError | None = None
        self._nursery_cm: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._nursery: trio.Nursery | None = None
        self._ended_at: float | None = None
        self._socket_progress = False

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
        after: str | None = None,
        created_at: float | None = None,
        seen: Iterable[str] = (),
        ledger: Ledger | None = None,
    ) -> FeedSubscription:
        """Follow ``job_id`` on this feed, after event ``after`` (default: the stored cursor).

        Args:
            job_id: The job.
            after: Resume after this event id; None uses the cursor store's.
            created_at: ``trio.current_time()`` when this process created the job: an
                unknown-job answer is retried for ``policy.not_found_grace`` after it.
            seen: Ids already handled (dropped if the server sends them again).
            ledger: The follower's ledger (a trainer's: its store, lease and handled ids);
                default: one on the feed's cursor store. With a ledger and no ``after``, the
                job resumes after the ledger's cursor, not the feed store's.

        Raises:
            ConfigError: ``job_id`` is not a non-empty string.
            RuntimeError: The feed is not running, or already follows ``job_id``.
        """
        if not isinstance(job_id, str) or not job_id:
            raise ConfigError(f"job_id must be a non-empty string, got {job_id!r}", field="job_id")
        if self._nursery is None:
            raise RuntimeError("use `async with client.feed() as feed:` before subscribing")
        if job_id in self._jobs:
            raise RuntimeError(f"this feed already follows job {job_id}")
        load = after is None and ledger is None
        if ledger is None:
            ledger = Ledger(self._store, job_id, seen=seen)
        elif after is None:
            after = ledger.cursor
        job = FeedJob(
            job_id,
            after=after,
            policy=self.policy,
            rng=self._rng,
            created_at=created_at,
            ledger=ledger,
        )
        self._jobs[job_id] = job
        if self._error is not None:
            job.finish(self._error)
        elif load:  # resume after the store's cursor, once read
            job.state = "waiting"
            self._spawn(self._load_then_subscribe, job)
        else:
            self._send_subscribe(job)
        return FeedSubscription(job, None, self.remove)

    async def _load_then_subscribe(self, job: FeedJob) -> None:
        try:
            stored = await job.ledger.load()
        except ArkorError as exc:
            job.finish(exc)
            return
        if job.resume is None:
            job.resume = stored.id
        self._resubscribe(job)

    def remove(self, job_id: str) -> None:
        """Stop following ``job_id`` (its subscription ends); unknown ids are ignored."""
        job = self._jobs.pop(job_id, None)
        if job is None:
            return
        if job.state != "done":
            job.finish()
            if self._connected:
                self._send({"type": "unsubscribe", "job": job_id})

    # --- outgoing ------------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        self._outbox.append(json.dumps(message, separators=(",", ":")))
        self._outbox_ready.unpark_all()

    def _send_subscribe(self, job: FeedJob) -> None:
        job.state = "active"
        job.progress = False
        job.subscribing()
        if self._connected:
            job.pending += 1
            self._send({"type": "subscribe", "job": job.job_id, "after": job.resume})

    async def _sender(self, ws: WebSocketConnection) -> None:
        # A closed socket ends this task quietly: the reader reports how it closed.
        with contextlib.suppress(ConnectionClosed):
            while True:
                while not self._outbox:
                    await self._outbox_ready.park()
                await ws.send_message(take_batch(self._outbox))

    # --- the connection loop -------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff(self.policy, self._rng)
        try:
            while True:
                closed = await self._connection()
                progress, self._socket_progress = self._socket_progress, False
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
                            f"{self.policy.max_attempts}); last error: {closed.error}"
                        ) from closed.error
                    delay = backoff.after_failure(closed.retry_after)
                log.debug("feed: reconnecting in %.3f s after %r", delay, closed.error)
                if delay > 0:
                    await trio.sleep(delay)
        except ArkorError as exc:
            self._error = exc
            for job in self._jobs.values():
                if job.state != "done":
                    job.finish(exc)

    async def _connection(self) -> SocketEnd:
        client = self._client
        url, headers = await client.websocket_target("/v1/events/ws")
        try:
            async with open_ws(
                url,
                headers,
                connect_timeout=self.policy.connect_timeout,
                max_message_size=self.policy.max_frame_bytes,
            ) as ws:
                return await self._use(ws)
        except ConnectionRejected as exc:
            return end_from_rejection(exc)
        except (HandshakeError, OSError, trio.BrokenResourceError) as exc:
            return SocketEnd(exc)
        finally:
            self._connected = False
            self._outbox.clear()

    async def _use(self, ws: WebSocketConnection) -> SocketEnd:
        counters = self._counters
        counters.connections += 1
        if self._ended_at is not None:
            counters.gaps.append(trio.current_time() - self._ended_at)
        self._connected = True
        for job in self._jobs.values():
            job.pending = 0
            if job.state == "active":
                self._send_subscribe(job)
        idle = self.policy.idle_timeout
        try:
            with collapse_groups():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._sender, ws)
                    with trio.CancelScope(deadline=trio.current_time() + idle) as watchdog:
                        while True:
                            raw = await ws.get_message()
                            watchdog.deadline = trio.current_time() + idle
                            self._handle_raw(raw)
                    nursery.cancel_scope.cancel()
            return SocketEnd(ArkorError(f"no message for {idle} s (idle_timeout)"))
        except ConnectionClosed as exc:
            return end_from_close(exc)
        finally:
            self._ended_at = trio.current_time()

    # --- incoming ------------------------------------------------------------------------------

    def _handle_raw(self, raw: str | bytes) -> None:
        try:
            decoded = json.loads(raw)
        except ValueError:
            log.debug("feed: skipped a message that is not JSON")
            return
        if isinstance(decoded, list):  # a batch: several messages in queue order
            for message in decoded:
                self._handle(message)
        else:
            self._handle(decoded)

    def _handle(self, message: Any) -> None:
        counters = self._counters
        counters.messages += 1
        kind = message.get("type") if isinstance(message, dict) else None
        if not isinstance(kind, str):
            log.debug("feed: skipped a malformed message")
            return
        if kind == "ping":
            counters.pings += 1
            return
        key = message.get("job")
        job = self._jobs.get(key) if isinstance(key, str) else None
        if job is None:
            if kind == "error":
                log.warning("feed: the server refused a message: %s", message.get("error"))
            return
        if kind == "event":
            self._on_event(job, message)
        elif kind == "subscribed":
            job.pending = max(0, job.pending - 1)
        elif kind == "reset":
            counters.resets += 1  # dedupe stays: the ledger's rule drops a replay of handled ids
            job.resets.append(str(message.get("reason")))
            log.warning("feed: job %s: %s", job.job_id, message.get("reason"))
        elif kind == "end":
            if job.pending == 0 and job.state == "active":
                job.state = "waiting"
                self._spawn(self._after_end, job)
        elif kind == "error":
            job.pending = max(0, job.pending - 1)
            if job.pending == 0 and job.state == "active":
                job.state = "waiting"
                self._spawn(self._after_error, job, message)

    def _on_event(self, job: FeedJob, message: dict[str, Any]) -> None:
        counters = self._counters
        if job.pending or job.state != "active":
            counters.stale += 1
            return
        event_id = message.get("id")
        if not isinstance(event_id, str) or job.is_duplicate(event_id):
            counters.duplicates += 1
            return
        if job.queue.full:  # before decoding: the event comes again after the resubscribe
            counters.pauses += 1
            job.state = "waiting"
            self._send({"type": "unsubscribe", "job": job.job_id})
            self._spawn(self._after_room, job)
            return
        try:
            event = decode_event(message.get("data"), event_id)
        except MalformedPayload:
            return
        job.accept(event)
        counters.events += 1
        self._socket_progress = True

    # --- per-job tasks (they outlive sockets) --------------------------------------------------

    def _spawn(self, fn: Any, *args: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(fn, *args)

    def _resubscribe(self, job: FeedJob) -> None:
        if job.state == "waiting" and self._jobs.get(job.job_id) is job:
            self._send_subscribe(job)

    async def _after_room(self, job: FeedJob) -> None:
        await job.queue.wait_not_full()
        job.backoff.after_progress(None)
        self._resubscribe(job)

    async def _after_end(self, job: FeedJob) -> None:
        progress = job.progress
        try:
            current = await self._client.get_job(job.job_id)
        except ApiError as exc:
            if exc.status in self.policy.permanent_statuses:
                job.finish(exc)
                return
            await self._job_backoff(job, progress=False)
            return
        if current.is_terminal:
            if job.state == "waiting":
                job.accept(terminal_event(current, None))
                self._counters.events += 1
            return
        await self._job_backoff(job, progress=progress)

    async def _after_error(self, job: FeedJob, message: dict[str, Any]) -> None:
        status = message.get("status")
        status = status if isinstance(status, int) else 0
        text = str(message.get("error") or f"status {status}")
        grace = (
            job.created_at is not None
            and trio.current_time() - job.created_at < self.policy.not_found_grace
        )
        if status == 404 and not grace:
            job.finish(JobNotFound(404, text))
            return
        if status != 404 and status in self.policy.permanent_statuses:  # 404: the grace above
            job.finish(ApiError(status, text))
            return
        await self._job_backoff(job, progress=False)

    async def _job_backoff(self, job: FeedJob, *, progress: bool) -> None:
        if progress:
            delay = job.backoff.after_progress(None)
        else:
            if job.backoff.exhausted():
                job.finish(
                    ReconnectsExhausted(
                        f"job {job.job_id}: the feed could not follow it "
                        f"{job.backoff.attempt + 1} times in a row; giving up"
                    )
                )
                return
            delay = job.backoff.after_failure()
        if delay > 0:
            await trio.sleep(delay)
        self._resubscribe(job)
