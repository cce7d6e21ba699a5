"""Opening one WebSocket with trio-websocket, owning the TCP stream.

trio-websocket leaves the client's TCP socket open when the *server* starts the close
handshake (it waits for the server's TCP close and then never closes its own end), so this
opens the stream itself, hands it to :func:`trio_websocket.wrap_client_stream`, and always
closes it on exit.
"""

from __future__ import annotations

import ssl
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import trio
from trio_websocket import HandshakeError, wrap_client_stream

from .._groups import collapse_groups

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from trio_websocket import WebSocketConnection

__all__ = ["MESSAGE_QUEUE_SIZE", "SINGLE_JOB_QUEUE_SIZE", "open_ws", "ws_url"]

#: trio-websocket's queue between its socket reader and ``get_message``. A shared feed's drain
#: task never blocks (events go to per-job queues; a full one pauses that job), so this only has
#: to absorb one network read's worth of small messages while the drain task is scheduled; its
#: default of 1 would make the socket reader wait for a task switch after every message.
MESSAGE_QUEUE_SIZE = 256
#: The same queue for a feed that follows one job: its drain task waits while the job's queue
#: is full, and then this queue fills too before TCP slows the server down, so it is short (a
#: server batch is at most 256 KiB: 4 MiB at most, beside the job's own bounded queue).
SINGLE_JOB_QUEUE_SIZE = 16


def ws_url(http_url: str) -> str:
    """The ``ws://``/``wss://`` URL for an ``http://``/``https://`` one."""
    if http_url.startswith("https://"):
        return "wss://" + http_url.removeprefix("https://")
    return "ws://" + http_url.removeprefix("http://")


#: Bytes asked of the TCP stream per read (trio-websocket's default is 4 KiB: a 256 KiB batch
#: then costs 64 reads, each a pass of wsproto's parser and of trio's scheduler).
RECEIVE_BYTES = 64 * 1024

#: Bytes read before the handshake completes (response head and a refusal's body) at most.
MAX_HANDSHAKE_BYTES = 1 << 20


class _Watched(trio.abc.Stream):
    """The TCP stream, reporting EOF or a reset (trio-websocket's handshake would wait on)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.closed_by_peer = trio.Event()
        self.handshaken = False
        self.oversized = False
        self._before_handshake = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            data = await self.inner.receive_some(max_bytes)
        except trio.BrokenResourceError:
            self.closed_by_peer.set()
            raise
        if not data:
            self.closed_by_peer.set()
        elif not self.handshaken:
            # trio-websocket keeps a refused handshake's whole body in memory: bound it here.
            self._before_handshake += len(data)
            if self._before_handshake > MAX_HANDSHAKE_BYTES:
                self.oversized = True
                self.closed_by_peer.set()
                return b""  # as an EOF: trio-websocket stops reading
        return bytes(data)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _handshake(
    nursery: trio.Nursery,
    stream: _Watched,
    host: str,
    resource: str,
    headers: list[tuple[bytes, bytes]],
    connect_timeout: float,
    message_queue_size: int,
    max_message_size: int,
) -> WebSocketConnection:
    """``wrap_client_stream`` bounded by ``connect_timeout`` and ended by the peer's close.

    (trio-websocket waits for the handshake until its own timeout even after an EOF.)
    """
    result: list[WebSocketConnection] = []

    async def open_it(cancel: trio.CancelScope) -> None:
        result.append(
            await wrap_client_stream(
                nursery,
                stream,  # type: ignore[arg-type]  # a Stream, as trio-websocket uses it
                host,
                resource,
                extra_headers=headers,
                message_queue_size=message_queue_size,
                max_message_size=max_message_size,
                receive_buffer_size=RECEIVE_BYTES,
            )
        )
        cancel.cancel()

    async def watch(cancel: trio.CancelScope) -> None:
        await stream.closed_by_peer.wait()
        cancel.cancel()

    with trio.move_on_after(connect_timeout):
        async with trio.open_nursery() as race:
            race.start_soon(open_it, race.cancel_scope)
            race.start_soon(watch, race.cancel_scope)
    if result:
        stream.handshaken = True
        return result[0]
    if stream.oversized:
        raise HandshakeError(
            f"the server's answer to the WebSocket handshake exceeded {MAX_HANDSHAKE_BYTES} bytes"
        )
    if stream.closed_by_peer.is_set():
        raise HandshakeError("the server closed the connection during the WebSocket handshake")
    raise HandshakeError(f"no WebSocket handshake within {connect_timeout} s")


@asynccontextmanager
async def open_ws(
    url: str,
    headers: list[tuple[bytes, bytes]],
    *,
    connect_timeout: float,
    max_message_size: int,
    message_queue_size: int = MESSAGE_QUEUE_SIZE,
) -> AsyncIterator[WebSocketConnection]:
    """Connect (TCP, TLS for ``wss``, handshake within ``connect_timeout``) and yield the socket.

    Raises:
        HandshakeError: The handshake failed or timed out (``ConnectionRejected`` carries the
            HTTP status of a refusal).
        OSError: The TCP connection failed.
    """
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    with trio.move_on_after(connect_timeout) as connecting:
        tcp = await trio.open_tcp_stream(host, port)
    if connecting.cancelled_caught:
        raise HandshakeError(f"no TCP connection within {connect_timeout} s")
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] = tcp
    if secure:
        stream = trio.SSLStream(tcp, ssl.create_default_context(), server_hostname=host)
    watched = _Watched(stream)
    try:
        with collapse_groups():
            async with trio.open_nursery() as nursery:
                ws = await _handshake(
                    nursery, watched, host, resource, headers,
                    connect_timeout, message_queue_size, max_message_size,
                )  # fmt: skip
                try:
                    yield ws
                finally:
                    nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)
