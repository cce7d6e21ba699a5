"""The job event stream: ``GET /v1/jobs/:id/events/stream`` (replay, tail, pings, end).

Frames are ``id: <seq>\\nevent: <type>\\ndata: <json>\\n\\n``. The stream first replays the
events after ``Last-Event-ID`` in pages, each page written as one body chunk, then waits for new
ones; while idle it writes ``event: ping`` every ``ping_interval`` seconds. After the job's
terminal event it writes ``event: end`` and closes. A client disconnect or the backend shutting
down ends the stream at once.

Where a stream starts for a ``Last-Event-ID`` and the replay-then-tail loop are
:mod:`._replay`'s, shared with the WebSocket feed; new-event wake-ups come from
:class:`~._hub.EventHub`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio
from starlette.responses import Response

from ._http import fail, require_project_scope
from ._hub import EventHub
from ._replay import PAGE_SIZE, TERMINAL_TYPES, Rows, cursor_id, follow_log, resolve_cursor

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request
    from starlette.types import Receive, Scope, Send

    from ._store import Store

__all__ = [
    "END_FRAME",
    "PAGE_SIZE",
    "PING_FRAME",
    "TERMINAL_TYPES",
    "EventHub",
    "SSEStream",
    "encode_rows",
    "follow_job",
    "stream_events_route",
]

log = logging.getLogger("arkor_trio.server")

PING_FRAME = b"event: ping\ndata: {}\n\n"
END_FRAME = b"event: end\ndata: {}\n\n"
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def encode_rows(rows: Rows) -> tuple[bytes, bool]:
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
    ``after`` is a resolved start (:func:`~._replay.resolve_cursor`).
    """

    async def deliver(rows: Rows) -> None:
        chunk, terminal = encode_rows(rows)
        await send(chunk + END_FRAME if terminal else chunk)  # the last page and end: one write

    async def ping() -> None:
        await send(PING_FRAME)

    hub._count_follower(+1)
    try:
        ended = await follow_log(
            store, hub, job_id, after, deliver, page_size=page_size, idle=ping_interval,
            on_idle=ping,
        )  # fmt: skip
        if not ended:
            await send(END_FRAME)
    finally:
        hub._count_follower(-1)


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
        cursor = cursor_id(raw) if raw else None
        if raw and cursor is None:
            fail(
                400, f"Last-Event-ID must be an event id of this backend (an integer), got {raw!r}"
            )
        if store.job_status(job_id) is None:
            fail(404, f"job {job_id} not found")
        # One resolution for every transport; SSE has no `reset` and replays what is kept.
        after = resolve_cursor(store, job_id, cursor).after

        async def produce(send_chunk: Callable[[bytes], Awaitable[None]]) -> None:
            await follow_job(store, hub, job_id, after, send_chunk, ping_interval=ping_interval)

        return SSEStream(produce, closing=hub.closing)

    return endpoint
