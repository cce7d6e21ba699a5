"""A scriptable fake upstream for the chaos proxy tests, and a downstream fetch helper.

The upstream is a ``trio.serve_tcp`` server on 127.0.0.1:0 that reads one request per connection
and answers with a chunked ``text/event-stream`` of ``training.log`` frames numbered after the
request's ``Last-Event-ID`` (or with whatever body and framing a test sets).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import attrs
import httpx
import trio


def sse_frame(n: int, *, eol: str = "\n", event: str = "training.log") -> bytes:
    """One SSE frame with an id, an event name and a JSON training.log payload."""
    payload = json.dumps({"type": "training.log", "jobId": "j1", "step": n, "loss": 1 / (n + 1)})
    return f"id: {n}{eol}event: {event}{eol}data: {payload}{eol}{eol}".encode()


def frames(first: int, last: int, **kwargs) -> list[bytes]:
    return [sse_frame(n, **kwargs) for n in range(first, last + 1)]


@attrs.define
class UpstreamConn:
    method: str = ""
    path: str = ""
    headers: dict[str, str] = attrs.field(factory=dict)
    body: bytes = b""
    peer_closed: trio.Event = attrs.field(factory=trio.Event)
    done: trio.Event = attrs.field(factory=trio.Event)


def default_body(conn: UpstreamConn, total: int) -> list[bytes]:
    last_id = int(conn.headers.get("last-event-id", "0"))
    return frames(last_id + 1, total)


@attrs.define
class FakeUpstream:
    """Answers every request with ``body(conn)`` pieces, each written (and chunked) separately."""

    total: int = 5
    body: Callable[[UpstreamConn], list[bytes]] | None = None
    status: int = 200
    content_type: str = "text/event-stream"
    framing: str = "chunked"  # or "length" or "close"
    hold_open: bool = False
    port: int = 0
    conns: list[UpstreamConn] = attrs.field(factory=list)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = UpstreamConn()
        self.conns.append(conn)
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                more = await stream.receive_some(65536)
                if not more:
                    return
                data += more
            head, _, rest = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            conn.method, conn.path, _ = lines[0].split(" ")
            conn.headers = {
                k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
            }
            length = int(conn.headers.get("content-length", "0"))
            while len(rest) < length:
                rest += await stream.receive_some(65536)
            while conn.headers.get("transfer-encoding") == "chunked" and b"0\r\n\r\n" not in rest:
                rest += await stream.receive_some(65536)
            conn.body = rest
            pieces = self.body(conn) if self.body else default_body(conn, self.total)
            await self._respond(stream, pieces)
            if self.hold_open:
                while await stream.receive_some(65536):
                    pass
                conn.peer_closed.set()
        except trio.BrokenResourceError:
            conn.peer_closed.set()
        finally:
            await stream.aclose()
            conn.done.set()

    async def _respond(self, stream: trio.SocketStream, pieces: list[bytes]) -> None:
        headers = [f"HTTP/1.1 {self.status} X", f"Content-Type: {self.content_type}"]
        if self.framing == "chunked":
            headers.append("Transfer-Encoding: chunked")
        elif self.framing == "length":
            headers.append(f"Content-Length: {sum(map(len, pieces))}")
        await stream.send_all(("\r\n".join(headers) + "\r\n\r\n").encode())
        for piece in pieces:
            if self.framing == "chunked":
                await stream.send_all(b"%x\r\n%b\r\n" % (len(piece), piece))
            else:
                await stream.send_all(piece)
        if self.framing == "chunked" and not self.hold_open:
            await stream.send_all(b"0\r\n\r\n")


@asynccontextmanager
async def open_upstream(**kwargs) -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream(**kwargs)
    async with trio.open_nursery() as nursery:
        serve = partial(trio.serve_tcp, upstream.handle, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        upstream.port = listeners[0].socket.getsockname()[1]
        yield upstream
        nursery.cancel_scope.cancel()


@attrs.frozen
class Fetched:
    status: int | None
    headers: httpx.Headers | None
    body: bytes
    error: Exception | None


async def fetch(client: httpx.AsyncClient, url: str, *, method: str = "GET", **kwargs) -> Fetched:
    """Stream one response; return what arrived before the end or the transport error."""
    got = bytearray()
    status = headers = None
    try:
        async with client.stream(method, url, **kwargs) as response:
            status, headers = response.status_code, response.headers
            async for chunk in response.aiter_raw():
                got += chunk
    except httpx.TransportError as exc:
        return Fetched(status, headers, bytes(got), exc)
    return Fetched(status, headers, bytes(got), None)
