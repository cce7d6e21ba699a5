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

from ._groups import collapse_groups

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from trio_websocket import WebSocketConnection

__all__ = ["MESSAGE_QUEUE_SIZE", "open_ws", "ws_url"]

#: trio-websocket's queue between its socket reader and ``get_message``. Our own drain task
#: never blocks (events go to per-job queues; a full one pauses that job), so this only has to
#: absorb one network read's worth of small messages while the drain task is scheduled; its
#: default of 1 would make the socket reader wait for a task switch after every message.
MESSAGE_QUEUE_SIZE = 256


def ws_url(http_url: str) -> str:
    """The ``ws://``/``wss://`` URL for an ``http://``/``https://`` one."""
    if http_url.startswith("https://"):
        return "wss://" + http_url.removeprefix("https://")
    return "ws://" + http_url.removeprefix("http://")


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
    try:
        with collapse_groups():
            async with trio.open_nursery() as nursery:
                with trio.move_on_after(connect_timeout) as handshake:
                    ws = await wrap_client_stream(
                        nursery,
                        stream,
                        host,
                        resource,
                        extra_headers=headers,
                        message_queue_size=message_queue_size,
                        max_message_size=max_message_size,
                    )
                if handshake.cancelled_caught:
                    raise HandshakeError(f"no WebSocket handshake within {connect_timeout} s")
                try:
                    yield ws
                finally:
                    nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)
