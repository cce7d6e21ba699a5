"""The job feed's outgoing messages: a queue that outlives sockets and the task that sends it.

Messages are queued only while a socket is open (``connected``); a socket's end clears the
queue (every job is subscribed again on the next socket). The sender writes what is queued,
several messages at once as one batch (:func:`~._feed_socket.take_batch`).
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import TYPE_CHECKING

import trio
from trio_websocket import ConnectionClosed

from ._feed_socket import take_batch

if TYPE_CHECKING:
    from trio_websocket import WebSocketConnection

__all__ = ["Outbox"]


class Outbox:
    """Queued client messages, and whether a socket is open to send them on."""

    def __init__(self) -> None:
        self.connected = False
        self._messages: deque[str] = deque()
        self._ready = trio.lowlevel.ParkingLot()

    def send(self, message: str) -> None:
        """Queue ``message`` (JSON text, see :mod:`._feed_messages`) for the sender."""
        self._messages.append(message)
        if self._ready:
            self._ready.unpark_all()

    def disconnect(self) -> None:
        """The socket ended: what was not sent is dropped."""
        self.connected = False
        self._messages.clear()

    async def pump(self, ws: WebSocketConnection) -> None:
        """Send queued messages on ``ws`` until cancelled or the socket closes."""
        # A closed socket ends this task quietly: the reader reports how it closed.
        with contextlib.suppress(ConnectionClosed):
            while True:
                while not self._messages:
                    await self._ready.park()
                await ws.send_message(take_batch(self._messages))
