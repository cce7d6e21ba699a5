"""WebSocket limits hypercorn leaves open, for the local backend's own servers only.

hypercorn (0.17, 0.18) buffers a message part before it compares the message's length with
``websocket_max_message_size``, keeps the buffer after it answered 1009, and keeps reading (and,
with permessage-deflate, inflating) whatever the client goes on sending: one 500 MiB frame, or a
1 MB compressed frame that inflates to 1 GB, lands in memory. For a server whose config is a
:class:`GuardedConfig`:

- permessage-deflate is never negotiated (the ``Sec-WebSocket-Extensions`` offer is ignored):
  a compressed frame is then a protocol error, so nothing is ever inflated;
- a message part that would take the message over the limit is refused *before* it is kept,
  the message kept so far is dropped, the socket is closed with 1009 and the connection ends:
  nothing more the client sends is read.

So memory per socket stays within the limit plus one read (64 KiB). :func:`install` puts the
guarded stream class in hypercorn's HTTP/1.1 and HTTP/2 protocols; for any other config (another
hypercorn server in the same process) it behaves exactly as hypercorn's own.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import hypercorn.protocol.h2
import hypercorn.protocol.h11
from hypercorn.config import Config
from hypercorn.protocol.events import Body, Data, Request, StreamClosed
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.ws_stream import FrameTooLargeError, WebsocketBuffer, WSStream

if TYPE_CHECKING:
    from wsproto.events import Message

__all__ = ["GuardedConfig", "install"]

_EXTENSIONS = b"sec-websocket-extensions"


class GuardedConfig(Config):
    """A hypercorn ``Config`` whose WebSocket streams are guarded (see the module docstring)."""


class _BoundedBuffer(WebsocketBuffer):
    """hypercorn's message buffer, checking the limit before it keeps anything."""

    def __init__(self, max_length: int) -> None:
        super().__init__(max_length)
        self.overflowed = False

    def extend(self, event: Message[Any]) -> None:
        if self.overflowed or self.length + len(event.data) > self.max_length:
            self.overflowed = True
            self.value = None
            raise FrameTooLargeError
        super().extend(event)


class _GuardedWSStream(WSStream):
    def __init__(self, app: Any, config: Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(app, config, *args, **kwargs)
        self._bounded = (
            _BoundedBuffer(config.websocket_max_message_size)
            if isinstance(config, GuardedConfig)
            else None
        )
        if self._bounded is not None:
            self.buffer = self._bounded

    async def handle(self, event: StreamEvent) -> None:
        bounded = self._bounded
        if bounded is None:
            await super().handle(event)
            return
        if isinstance(event, Request):
            headers = [(n, v) for n, v in event.headers if n.lower() != _EXTENSIONS]
            event = dataclasses.replace(event, headers=headers)
        elif isinstance(event, Body | Data) and bounded.overflowed:
            return  # the connection is ending: nothing more is read into memory
        await super().handle(event)
        if isinstance(event, Body | Data) and bounded.overflowed and not self.closed:
            await self.send(StreamClosed(stream_id=self.stream_id))  # hypercorn sent the 1009


def install() -> None:
    """Make hypercorn's protocols build guarded WebSocket streams (idempotent)."""
    hypercorn.protocol.h11.WSStream = _GuardedWSStream  # type: ignore[attr-defined]
    hypercorn.protocol.h2.WSStream = _GuardedWSStream  # type: ignore[attr-defined]
