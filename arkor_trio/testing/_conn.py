"""One proxied connection: read the request, apply the step's faults, relay or cut the response.

The proxy serves one request per connection: it sends ``Connection: close`` both ways and closes
after the response, so an HTTP client opens a new connection for its next request. Response bodies
are de-framed and re-sent downstream as chunks (or with the upstream's ``Content-Length``), which
lets a fault stop at any byte of a ``text/event-stream`` body. Once the request head is read,
everything else the client sends is pumped upstream as is; a client EOF (even a half-close) ends
the exchange at once, which is how a client's disconnect reaches the upstream promptly.
"""

from __future__ import annotations

import random
import socket
import struct
from collections import deque
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

import trio

from ._frames import FrameScanner
from ._http import (
    LAST_CHUNK,
    BodyReader,
    ByteReader,
    HttpError,
    RequestHead,
    ResponseHead,
    body_framing,
    encode_chunk,
    render_head,
    status_response,
)
from ._plan import (
    CutAfterBytes,
    CutAfterEvents,
    DropInHeaders,
    Fault,
    Latency,
    Refuse,
    Stall,
    Status,
    Step,
    Throttle,
    action_of,
)
from ._records import ConnState, CutKind
from ._ws_relay import is_upgrade, relay_websocket

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["serve_connection"]

_DRAIN_SECONDS = 2.0
# Request bodies are pumped as is, so the request keeps its Transfer-Encoding; responses are
# re-framed, so theirs is replaced.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection"})
_RESPONSE_DROPPED = _HOP_BY_HOP | {"transfer-encoding"}
_CUT_KINDS = {
    "clean": CutKind.CLEAN,
    "mid_frame": CutKind.MID_FRAME,
    "reset": CutKind.RESET,
    "after_id": CutKind.AFTER_ID,
}


class _ClientGone(Exception):
    """The downstream peer closed or reset the connection."""


class _UpstreamGone(Exception):
    """The upstream was unreachable, or closed or broke its response."""


@contextmanager
def _ending(state: ConnState) -> Iterator[None]:
    try:
        yield
    except _ClientGone:
        state.finish("client")
    except (_UpstreamGone, HttpError, trio.BrokenResourceError):
        state.finish("upstream")


class _Downstream:
    """Writes to the client through the step's latency and throttle, counting bytes."""

    def __init__(self, stream: trio.SocketStream, state: ConnState, rng: random.Random) -> None:
        self._stream = stream
        self._state = state
        self.rng = rng
        self.shape(state.faults)
        self.reset_on_close = False

    def shape(self, faults: tuple[Fault, ...]) -> None:
        """Take the latency and throttle of ``faults`` (from the next write on)."""
        self._latency = next((f for f in faults if isinstance(f, Latency)), None)
        self._throttle = next((f for f in faults if isinstance(f, Throttle)), None)

    async def send(self, data: bytes) -> None:
        if self._latency is not None:
            jitter = self._latency.jitter_ms
            delay = self._latency.ms + (self.rng.uniform(-jitter, jitter) if jitter else 0.0)
            await trio.sleep(max(0.0, delay) / 1000)
        if self._throttle is None:
            await self._send(data)
            return
        rate = self._throttle.bytes_per_s
        step = max(1, int(rate / 20))
        for start in range(0, len(data), step):
            piece = data[start : start + step]
            await trio.sleep(len(piece) / rate)
            await self._send(piece)

    async def _send(self, data: bytes) -> None:
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _ClientGone from exc
        self._state.bytes_down += len(data)

    async def close(self) -> None:
        if self.reset_on_close:
            with suppress(OSError):
                linger = struct.pack("ii", 1, 0)
                self._stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        await self._stream.aclose()


async def serve_connection(
    stream: trio.SocketStream,
    state: ConnState,
    upstream: tuple[str, int],
    seed: int,
    choose: Callable[[str], Step] | None = None,
) -> None:
    """Serve one accepted connection under ``state.faults``; always closes ``stream``.

    With ``choose``, ``state.faults`` is replaced by ``choose(request_target)`` once the
    request head is read (a plan aimed at some paths). Peer failures end the connection and are
    recorded in ``state``; they are not raised.
    """
    down = _Downstream(stream, state, random.Random(f"{seed}:{state.index}"))
    action = action_of(state.faults)
    try:
        if isinstance(action, Refuse):
            state.cut(CutKind.REFUSED)
            down.reset_on_close = action.reset
            return
        with _ending(state):
            await _exchange(stream, state, down, upstream, choose)
    finally:
        state.mark_closed()
        with trio.CancelScope(shield=True):
            await down.close()


async def _exchange(
    stream: trio.SocketStream,
    state: ConnState,
    down: _Downstream,
    upstream: tuple[str, int],
    choose: Callable[[str], Step] | None,
) -> None:
    client = ByteReader(stream)
    try:
        raw = await client.read_head()
        request = None if raw is None else RequestHead.parse(raw)
    except (trio.BrokenResourceError, OSError) as exc:
        raise _ClientGone from exc
    except HttpError:
        state.status = 400
        state.finish("error")
        await down.send(status_response(400, retry_after=None, message="chaos proxy: bad request"))
        return
    if raw is None or request is None:
        raise _ClientGone
    state.method, state.path = request.method, request.target
    state.last_event_id = request.get("last-event-id")
    if choose is not None:
        state.faults = choose(request.target)
        down.shape(state.faults)
        if isinstance(refuse := action_of(state.faults), Refuse):
            state.cut(CutKind.REFUSED)
            down.reset_on_close = refuse.reset
            return
    action = action_of(state.faults)
    if isinstance(action, Status):
        state.status = action.code
        answer = status_response(
            action.code, retry_after=action.retry_after, message=action.message
        )
        await down.send(answer)
        state.cut(CutKind.STATUS)
        await _drain(stream)
        return
    try:
        up = await trio.open_tcp_stream(*upstream)
    except OSError as exc:
        state.status = 502
        state.finish("upstream")
        message = f"chaos proxy: upstream {upstream[0]}:{upstream[1]} unreachable: {exc}"
        await down.send(status_response(502, retry_after=None, message=message))
        return
    async with up:
        headers = [(k, v) for k, v in request.headers if k.lower() not in _HOP_BY_HOP]
        start_line = f"{request.method} {request.target} {request.version}"
        if is_upgrade(request.get("upgrade")):  # a WebSocket keeps its Connection: Upgrade
            head = render_head(start_line, list(request.headers))
        else:
            head = render_head(start_line, [*headers, ("Connection", "close")])
        await up.send_all(head)
        state.bytes_up += len(head)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pump_up, client, up, state, nursery.cancel_scope)
            with _ending(state):
                await _relay(ByteReader(up), request, state, down)
            nursery.cancel_scope.cancel()


async def _drain(stream: trio.SocketStream) -> None:
    """Half-close and read until the client closes, so unread request bytes do not cause a RST."""
    with trio.move_on_after(_DRAIN_SECONDS), suppress(trio.BrokenResourceError, OSError):
        await stream.send_eof()
        while await stream.receive_some(65536):
            pass


async def _pump_up(
    client: ByteReader, up: trio.SocketStream, state: ConnState, scope: trio.CancelScope
) -> None:
    """Forward the request body (and anything after it) upstream; a client EOF ends the exchange."""
    forwarding = True
    with suppress(trio.BrokenResourceError, OSError):
        while data := await client.read_some(65536):
            if forwarding:
                try:
                    await up.send_all(data)
                    state.bytes_up += len(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    forwarding = False
    state.finish("client")
    scope.cancel()


async def _relay(up: ByteReader, request: RequestHead, state: ConnState, down: _Downstream) -> None:
    raw = await up.read_head()
    if raw is None:
        raise _UpstreamGone
    response = ResponseHead.parse(raw)
    state.status = response.status
    action = action_of(state.faults)
    if isinstance(action, DropInHeaders):
        await down.send(raw[: int(len(raw) * action.fraction)])
        state.cut(CutKind.HEADERS_DROP)
        return
    byte_limit = action.draw(down.rng) if isinstance(action, CutAfterBytes) else None
    if response.status == 101:
        await down.send(raw)
        await relay_websocket(up, state, down, action, byte_limit=byte_limit)
        return
    framing, length = body_framing(response, request.method)
    chunked = framing in ("chunked", "close")
    headers = [(k, v) for k, v in response.headers if k.lower() not in _RESPONSE_DROPPED]
    if chunked:
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.append(("Transfer-Encoding", "chunked"))
    await down.send(render_head(response.status_line, [*headers, ("Connection", "close")]))
    if framing == "none":
        state.finish("complete")
        return
    sse = (response.get("content-type") or "").lower().startswith("text/event-stream")
    planner = _CutPlanner(action) if sse and isinstance(action, CutAfterEvents | Stall) else None
    body = BodyReader(up, framing, length)
    await _relay_body(body, state, down, planner, sse=sse, chunked=chunked, byte_limit=byte_limit)


class _CutPlanner:
    """Decides from the SSE marks seen how far the body may be forwarded, and where to cut."""

    def __init__(self, action: CutAfterEvents | Stall) -> None:
        self.action = action
        self.mode = action.mode if isinstance(action, CutAfterEvents) else "clean"
        self.k = action.k if isinstance(action, CutAfterEvents) else action.after_events
        self.frames = 0
        self.boundary: int | None = 0 if self.k == 0 else None
        self.cut_at: int | None = 0 if self.k == 0 and self.mode == "clean" else None

    def observe(self, kind: str, offset: int) -> None:
        if self.cut_at is not None:
            return
        if kind == "frame":
            self.frames += 1
            if self.frames == self.k:
                self.boundary = offset
                if self.mode == "clean":
                    self.cut_at = offset
            elif self.frames == self.k + 1 and self.mode in ("mid_frame", "reset"):
                assert self.boundary is not None
                self.cut_at = self.boundary + max(1, (offset - self.boundary) // 2)
        elif self.mode == "after_id" and self.boundary is not None:
            self.cut_at = offset

    def limit(self, received: int) -> int:
        if self.cut_at is not None:
            return self.cut_at
        if self.mode in ("mid_frame", "reset") and self.boundary is not None:
            return self.boundary
        return received


async def _relay_body(
    body: BodyReader,
    state: ConnState,
    down: _Downstream,
    planner: _CutPlanner | None,
    *,
    sse: bool,
    chunked: bool,
    byte_limit: int | None = None,
) -> None:
    scanner = FrameScanner() if sse else None
    held = bytearray()
    forwarded = received = 0
    frame_ends: deque[int] = deque()
    ended = False
    while True:
        if planner is not None and planner.cut_at == forwarded:
            await _cut(planner, state, down, chunked=chunked)
            return
        if ended:
            break
        if byte_limit is not None and forwarded >= byte_limit:
            state.cut(CutKind.BYTES)  # no last chunk: the body ends where the link gave up
            return
        piece = await body.next_piece()
        ended = not piece
        received += len(piece)
        held += piece
        marks = [] if scanner is None else scanner.feed(piece) if piece else scanner.flush()
        for kind, offset in marks:
            if kind == "frame":
                frame_ends.append(offset)
            if planner is not None:
                planner.observe(kind, offset)
        if planner is None or (ended and planner.cut_at is None):
            limit = received
        else:
            limit = planner.limit(received)
        if byte_limit is not None:
            limit = min(limit, byte_limit)
        if limit > forwarded:
            data = bytes(held[: limit - forwarded])
            del held[: limit - forwarded]
            await down.send(encode_chunk(data) if chunked else data)
            forwarded = limit
            while frame_ends and frame_ends[0] <= forwarded:
                frame_ends.popleft()
                state.events_passed += 1
    if chunked:
        await down.send(LAST_CHUNK)
    state.finish("complete")


async def _cut(planner: _CutPlanner, state: ConnState, down: _Downstream, *, chunked: bool) -> None:
    if isinstance(planner.action, Stall):
        state.cut(CutKind.STALL)
        await trio.sleep(planner.action.seconds)
        return
    if planner.mode == "clean" and planner.action.graceful and chunked:
        await down.send(LAST_CHUNK)
    down.reset_on_close = planner.mode == "reset"
    state.cut(_CUT_KINDS[planner.mode])
