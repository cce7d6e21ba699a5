"""A plain Server-Sent Events endpoint for the channel's tests (not the Arkor API; real sockets).

``FeedServer`` listens on 127.0.0.1 (over TLS when given an ``ssl.SSLContext``) and answers
``GET /feed`` with the events after the request's ``Last-Event-ID``: blocks ``id: n`` /
``data: <payload(n)>`` for ``n = start+1 .. total``, optionally led by a ``retry:`` block and
interleaved with ``: ping`` comments, in a chunked body that then ends (or is held open). A
request whose ``Last-Event-ID`` is ``total`` gets ``done_status`` (204: the stream is over).
``ignore_last_event_id`` replays from event 1 whatever the header says (a server that does not
honour it).

The next ``/feed`` connections can be scripted (``server.script``): a :class:`Reply` (any status,
headers and body, e.g. 503 with ``Retry-After``, a redirect, a non-SSE page) or a :class:`Feed`
overriding the feed's parameters for that connection (stop after ``limit`` events, oversized
events). ``server.routes`` answers other paths with a fixed :class:`Reply` (redirect chains).
Every request is recorded in ``server.requests``.

:meth:`FeedServer.blocks` is the exact list of blocks a ``/feed`` request gets, so a test can
compute what a client that saw the first ``k`` of them must resume from.
"""

from __future__ import annotations

import ssl
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl, urlsplit

import attrs
import trio

#: Largest request head read (the client's requests are small).
MAX_HEAD = 64 * 1024
#: Blocks are written in chunks of about this size (one ``send_all`` each).
CHUNK = 16 * 1024


def payload(n: int, size: int = 0) -> str:
    """The data of event ``n``: its number, padded with ``x`` up to ``size`` characters."""
    text = f"event {n}"
    return text + "x" * max(0, size - len(text))


@attrs.frozen
class Reply:
    """A fixed answer: status, headers, body (sent with Content-Length)."""

    status: int = 200
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body: bytes = b""


@attrs.frozen
class Feed:
    """One ``/feed`` connection's parameters, overriding the server's (None: the server's).

    Attributes:
        limit: Send at most this many events, then end the body (a server-side cut).
        big: Event numbers whose data is ``big_size`` characters long.
        ignore_last_event_id: Replay from event 1 on this connection.
        wait_before: Before event ``n`` is written (in a write of its own), the server waits
            for ``wait_before[n]`` (set by the test, e.g. once the client got event ``n - 1``).
        quiet_before: Before event ``n``, the server sends no event for ``quiet_before[n]``
            seconds: nothing at all, or a ``: ping`` comment every ``ping_interval`` seconds.
        ping_interval: See ``quiet_before``.
    """

    limit: int | None = None
    big: frozenset[int] = frozenset()
    big_size: int = 0
    ignore_last_event_id: bool | None = None
    wait_before: Mapping[int, trio.Event] = attrs.field(factory=dict)
    quiet_before: Mapping[int, float] = attrs.field(factory=dict)
    ping_interval: float | None = None


@attrs.frozen
class Request:
    """One request as the server read it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: float
    body: bytes = b""

    @property
    def last_event_id(self) -> str | None:
        """The ``Last-Event-ID`` header, None when absent."""
        return self.headers.get("last-event-id")


@attrs.define(eq=False)
class FeedServer:
    """See the module docstring; ``port`` is set once it listens (:func:`open_feed_server`)."""

    total: int = 20
    ignore_last_event_id: bool = False
    retry_ms: int | None = None
    ping_every: int = 0
    payload_size: int = 0
    hold: bool = False
    done_status: int = 204
    ssl_context: ssl.SSLContext | None = None
    script: deque[Reply | Feed] = attrs.field(factory=deque)
    routes: dict[str, Reply] = attrs.field(factory=dict)
    requests: list[Request] = attrs.field(factory=list)
    port: int = 0
    #: Connections accepted (a TLS client that refuses the certificate was still accepted).
    accepted: int = 0

    @property
    def url(self) -> str:
        """The server's origin, ``http(s)://127.0.0.1:PORT``."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def feed_url(self) -> str:
        """The feed's URL."""
        return f"{self.url}/feed"

    def feed_requests(self) -> list[Request]:
        """The requests for ``/feed``, in order."""
        return [r for r in self.requests if r.path == "/feed"]

    def last_event_ids(self) -> list[str | None]:
        """The ``Last-Event-ID`` of every ``/feed`` request, in order."""
        return [r.last_event_id for r in self.feed_requests()]

    def start(self, last_event_id: str | None, feed: Feed | None = None) -> int:
        """The number of the last event before the first one a ``/feed`` request gets."""
        ignore = self.ignore_last_event_id
        if feed is not None and feed.ignore_last_event_id is not None:
            ignore = feed.ignore_last_event_id
        if ignore or not last_event_id:
            return 0
        return int(last_event_id)

    def blocks(self, last_event_id: str | None, feed: Feed | None = None) -> list[str | None]:
        """The blocks a ``/feed`` request gets, in order: each event's id, None for id-less ones."""
        return [block_id for block_id, _ in self._blocks(last_event_id, feed)]

    def _blocks(
        self, last_event_id: str | None, feed: Feed | None
    ) -> list[tuple[str | None, bytes]]:
        out: list[tuple[str | None, bytes]] = []
        if self.retry_ms is not None:
            out.append((None, b"retry: %d\n\n" % self.retry_ms))
        first = self.start(last_event_id, feed) + 1
        for sent, n in enumerate(range(first, self.total + 1), 1):
            if feed is not None and feed.limit is not None and sent > feed.limit:
                break
            size = feed.big_size if feed is not None and n in feed.big else self.payload_size
            out.append((str(n), f"id: {n}\ndata: {payload(n, size)}\n\n".encode()))
            if self.ping_every and sent % self.ping_every == 0:
                out.append((None, b": ping\n\n"))
        return out

    # --- serving -------------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on 127.0.0.1 (port 0 picks one) and serve until cancelled."""
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started()
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, raw: trio.SocketStream) -> None:
        self.accepted += 1
        stream: trio.abc.Stream = raw
        try:
            if self.ssl_context is not None:
                stream = trio.SSLStream(raw, self.ssl_context, server_side=True)
                await stream.do_handshake()
            request = await self._read_request(stream)
            if request is None:
                return
            self.requests.append(request)
            await self._answer(stream, request)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async def _read_request(self, stream: trio.abc.Stream) -> Request | None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(65536)
            if not chunk or len(head) > MAX_HEAD:
                return None
            head += chunk
        head, _, body = head.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = min(int(headers.get("content-length", "0") or 0), MAX_HEAD)
        while len(body) < length:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return None
            body += chunk
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query))
        return Request(method, parts.path, query, headers, trio.current_time(), body)

    async def _answer(self, stream: trio.abc.Stream, request: Request) -> None:
        if request.path != "/feed":
            await _send_reply(stream, self.routes.get(request.path, Reply(404, body=b"no route")))
            return
        step = self.script.popleft() if self.script else None
        if isinstance(step, Reply):
            await _send_reply(stream, step)
            return
        if request.last_event_id == str(self.total):
            await _send_reply(stream, Reply(self.done_status))
            return
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        await stream.send_all(head.encode())
        batch = bytearray()
        for block_id, block in self._blocks(request.last_event_id, step):
            number = int(block_id) if block_id is not None else None
            if step is not None and number in {*step.wait_before, *step.quiet_before}:
                if batch:
                    await stream.send_all(b"%x\r\n%b\r\n" % (len(batch), batch))
                    batch.clear()
                await _hold_back(stream, step, number)
            batch += block
            if len(batch) >= CHUNK:
                await stream.send_all(b"%x\r\n%b\r\n" % (len(batch), batch))
                batch.clear()
        if batch:
            await stream.send_all(b"%x\r\n%b\r\n" % (len(batch), batch))
        if self.hold:
            while await stream.receive_some(65536):
                pass  # until the client leaves
            return
        await stream.send_all(b"0\r\n\r\n")


async def _hold_back(stream: trio.abc.Stream, feed: Feed, number: int | None) -> None:
    """What happens before event ``number`` is written (see :class:`Feed`)."""
    gate = feed.wait_before.get(number) if number is not None else None
    if gate is not None:
        await gate.wait()
    quiet = feed.quiet_before.get(number, 0.0) if number is not None else 0.0
    if quiet and feed.ping_interval is None:
        await trio.sleep(quiet)
    elif quiet:
        assert feed.ping_interval is not None
        until = trio.current_time() + quiet
        while trio.current_time() < until:
            await trio.sleep(min(feed.ping_interval, until - trio.current_time()))
            await stream.send_all(b"8\r\n: ping\n\n\r\n")


async def _send_reply(stream: trio.abc.Stream, reply: Reply) -> None:
    lines = [f"HTTP/1.1 {reply.status} X"]
    lines += [f"{name}: {value}" for name, value in reply.headers.items()]
    if reply.status not in (204, 304):
        lines.append(f"Content-Length: {len(reply.body)}")
    lines.append("Connection: close")
    await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + reply.body)


@asynccontextmanager
async def open_feed_server(**kwargs: object) -> AsyncIterator[FeedServer]:
    """Run a :class:`FeedServer` (keyword arguments as its fields) for the ``async with`` body."""
    server = FeedServer(**kwargs)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()
