"""The job event stream: ``GET /v1/jobs/:id/events/stream`` (replay, tail, pings, end).

Frames are ``id: <seq>\\nevent: <type>\\ndata: <json>\\n\\n``. The stream first replays the
events after ``Last-Event-ID`` in pages, each page written as one body chunk, then waits for new
ones; while idle it writes ``event: ping`` every ``ping_interval`` seconds. After the job's
terminal event it writes ``event: end`` and closes. A client disconnect or the backend shutting
down ends the stream at once.

New-event wake-ups come from :class:`EventHub`: the store calls :meth:`EventHub.notify` after
each committed append, from whichever thread appended. Off the loop it schedules one
``run_sync_soon`` callback per job at a time (coalesced, never blocking the training thread).
"""

from __future__ import annotations

import logging
import re
import threading
from contextlib import suppress
from typing import TYPE_CHECKING

import trio
from starlette.responses import Response

from ._http import fail, require_project_scope

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request
    from starlette.types import Receive, Scope, Send

    from ._store import Store

__all__ = [
    "END_FRAME",
    "PING_FRAME",
    "EventHub",
    "SSEStream",
    "encode_rows",
    "follow_job",
    "stream_events_route",
]

log = logging.getLogger("arkor_trio.server")

PING_FRAME = b"event: ping\ndata: {}\n\n"
END_FRAME = b"event: end\ndata: {}\n\n"
TERMINAL_TYPES = frozenset({"training.completed", "training.failed", "training.cancelled"})
#: Rows fetched (and written as one body chunk) per replay page.
PAGE_SIZE = 1000
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_LAST_EVENT_ID = re.compile(r"[0-9]{1,18}")


class EventHub:
    """Wakes the streams following a job when an event is appended to it.

    Create it inside the trio run that serves the streams. ``closing`` is set when the backend
    shuts down; every open stream then ends.
    """

    def __init__(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._loop_thread = threading.get_ident()
        self._changed: dict[str, trio.Event] = {}
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self.closing = trio.Event()
        #: How many event streams are following a job right now.
        self.followers = 0
        self._followers_changed = trio.Event()

    def _count_follower(self, delta: int) -> None:
        self.followers += delta
        self._followers_changed.set()
        self._followers_changed = trio.Event()

    async def wait_followers(self, count: int) -> None:
        """Return once exactly ``count`` streams are following jobs (statistics and tests)."""
        while self.followers != count:
            await self._followers_changed.wait()

    def changed(self, job_id: str) -> trio.Event:
        """An event set by the next append to ``job_id`` (call on the loop, before reading)."""
        event = self._changed.get(job_id)
        if event is None:
            event = self._changed[job_id] = trio.Event()
        return event

    def notify(self, job_id: str) -> None:
        """Record that ``job_id`` has a new event; callable from any thread, never blocks."""
        if threading.get_ident() == self._loop_thread:
            self._fire(job_id)
            return
        with self._lock:
            if job_id in self._pending:
                return  # a wake-up is already scheduled and will run after this commit
            self._pending.add(job_id)
        with suppress(trio.RunFinishedError):  # the loop is gone: nobody is listening
            self._token.run_sync_soon(self._fire_pending, job_id)

    def _fire_pending(self, job_id: str) -> None:
        with self._lock:
            self._pending.discard(job_id)
        self._fire(job_id)

    def _fire(self, job_id: str) -> None:
        event = self._changed.pop(job_id, None)
        if event is not None:
            event.set()


def encode_rows(rows: list[tuple[int, str, str]]) -> tuple[bytes, bool]:
    """SSE frames for event rows as one chunk, and whether the last one is terminal."""
    text = "".join([f"id: {seq}\nevent: {typ}\ndata: {data}\n\n" for seq, typ, data in rows])
    return text.encode(), rows[-1][1] in TERMINAL_TYPES


async def follow_job(
    store: Store,
    hub: EventHub,
    job_id: str,
    after: int,
    send: Callable[[bytes], Awaitable[None]],
    *,
    ping_interval: float,
    page_size: int = PAGE_SIZE,
) -> None:
    """Write a job's events after ``after`` to ``send``, then tail it until its terminal event.

    Returns after writing the terminal event (or finding it at or before ``after``) followed by
    the ``end`` frame. While no event arrives it writes a ping every ``ping_interval`` seconds.
    """
    hub._count_follower(+1)
    try:
        await _follow(store, hub, job_id, after, send, ping_interval, page_size)
    finally:
        hub._count_follower(-1)


async def _follow(
    store: Store,
    hub: EventHub,
    job_id: str,
    after: int,
    send: Callable[[bytes], Awaitable[None]],
    ping_interval: float,
    page_size: int,
) -> None:
    cursor = after
    last_sent = trio.current_time()
    while True:
        changed = hub.changed(job_id)  # taken before reading: no append can slip between
        rows = store.events_after(job_id, cursor, page_size)
        if not rows and store.job_status(job_id) in (None, "completed", "failed", "cancelled"):
            # Terminal status => its event is committed: one more read tells if we still owe it.
            rows = store.events_after(job_id, cursor, page_size)
            if not rows:
                await send(END_FRAME)
                return
        if rows:
            chunk, terminal = encode_rows(rows)
            cursor = rows[-1][0]
            if terminal:
                await send(chunk + END_FRAME)
                return
            await send(chunk)
            last_sent = trio.current_time()
            continue
        with trio.move_on_at(last_sent + ping_interval):
            await changed.wait()
            continue
        await send(PING_FRAME)
        last_sent = trio.current_time()


class SSEStream(Response):
    """A streaming ``text/event-stream`` response written by ``produce(send_chunk)``.

    Each chunk becomes one ASGI body message. The producer is cancelled when the client
    disconnects or ``closing`` is set; in the latter case (and when it returns) the response is
    finished cleanly. A producer error is logged and ends the stream.
    """

    def __init__(
        self,
        produce: Callable[[Callable[[bytes], Awaitable[None]]], Awaitable[None]],
        *,
        closing: trio.Event,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.status_code = 200
        self.produce = produce
        self.closing = closing
        self.sse_headers = SSE_HEADERS if headers is None else headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the producer as an ASGI response."""
        await send({"type": "http.response.start", "status": 200, "headers": self.sse_headers})
        disconnected = False

        async def send_chunk(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        async def watch_client(cancel: trio.CancelScope) -> None:
            nonlocal disconnected
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected = True
            cancel.cancel()

        async def watch_closing(cancel: trio.CancelScope) -> None:
            await self.closing.wait()
            cancel.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_client, nursery.cancel_scope)
            nursery.start_soon(watch_closing, nursery.cancel_scope)
            try:
                await self.produce(send_chunk)
            except Exception:
                log.exception("event stream %s failed", scope.get("path"))
            nursery.cancel_scope.cancel()
        if not disconnected:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def stream_events_route(
    store: Store, hub: EventHub, ping_interval: float
) -> Callable[[Request], Awaitable[Response]]:
    """The ``GET /v1/jobs/{job_id}/events/stream`` endpoint.

    Errors (before any byte is streamed): 400 for a bad scope or ``Last-Event-ID`` (which must
    be a non-negative integer, our event ids), 404 for an unknown job.
    """

    async def endpoint(request: Request) -> Response:
        require_project_scope(request)
        job_id = request.path_params["job_id"]
        raw = request.headers.get("last-event-id", "").strip()
        if raw and not _LAST_EVENT_ID.fullmatch(raw):
            fail(
                400, f"Last-Event-ID must be an event id of this backend (an integer), got {raw!r}"
            )
        after = int(raw) if raw else 0
        if store.job_status(job_id) is None:
            fail(404, f"job {job_id} not found")

        async def produce(send_chunk: Callable[[bytes], Awaitable[None]]) -> None:
            await follow_job(store, hub, job_id, after, send_chunk, ping_interval=ping_interval)

        return SSEStream(produce, closing=hub.closing)

    return endpoint
