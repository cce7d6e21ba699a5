"""Admission: how many accepted connections may wait for their first answer at once.

After a restart, a herd of clients reconnects within a second or so. Accepted all at once,
their requests share the one core: every answer comes out near the end (the last at the same
time either way), and the clients, idle until then, get all their work at once. Admitted a
bounded number at a time (:data:`ADMIT`), the rest waiting in the kernel's accept queue in the
order they came, the first answers go out after a few milliseconds and the clients process them
while the server makes the next ones.

A connection is *waiting* from its accept until it sends its first byte (the response headers),
closes, or has waited :data:`ADMIT_TIMEOUT` seconds; the last rule means idle or slow
connections (a keep-alive connection between requests, a client that trickles its request) hold
a place for that long only: accepting never stalls behind them.
"""

from __future__ import annotations

from collections import deque

import attrs
import trio

__all__ = ["ADMIT", "ADMIT_TIMEOUT", "Admission", "AdmittedStream"]

#: Connections at most that were accepted and have not answered yet.
ADMIT = 64
#: Seconds after which a connection that has not answered stops counting towards :data:`ADMIT`.
ADMIT_TIMEOUT = 0.25


@attrs.define(eq=False)
class _Entry:
    at: float
    done: bool = False


class Admission:
    """Counts the accepted connections that have not answered yet; see the module docstring."""

    def __init__(self, limit: int = ADMIT, timeout: float = ADMIT_TIMEOUT) -> None:
        self.limit = limit
        self.timeout = timeout
        self._waiting: deque[_Entry] = deque()
        self._count = 0
        self._changed = trio.Event()

    @property
    def waiting(self) -> int:
        """Connections counted now (expired ones are dropped at the next :meth:`room`)."""
        return self._count

    def _prune(self, now: float) -> None:
        waiting = self._waiting
        while waiting and (waiting[0].done or waiting[0].at + self.timeout <= now):
            entry = waiting.popleft()
            if not entry.done:
                entry.done = True
                self._count -= 1

    def has_room(self) -> bool:
        """True when another connection may be admitted now (no checkpoint)."""
        self._prune(trio.current_time())
        return self._count < self.limit

    async def room(self) -> None:
        """Wait until another connection may be admitted."""
        while not self.has_room():
            changed = self._changed
            with trio.move_on_at(self._waiting[0].at + self.timeout):
                await changed.wait()
        await trio.lowlevel.checkpoint()

    def admit(self) -> _Entry:
        entry = _Entry(trio.current_time())
        self._waiting.append(entry)
        self._count += 1
        return entry

    def answered(self, entry: _Entry) -> None:
        if entry.done:
            return
        entry.done = True
        self._count -= 1
        self._changed.set()
        self._changed = trio.Event()


class AdmittedStream(trio.abc.HalfCloseableStream):
    """A connection's stream that tells :class:`Admission` when it first sends (or closes)."""

    def __init__(self, stream: trio.SocketStream, admission: Admission) -> None:
        self._stream = stream
        self._admission = admission
        self._entry: _Entry | None = admission.admit()

    @property
    def socket(self) -> trio.socket.SocketType:
        """The connection's socket (hypercorn reads the peer's address from it)."""
        return self._stream.socket

    def _answered(self) -> None:
        if self._entry is not None:
            self._admission.answered(self._entry)
            self._entry = None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._answered()
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        self._answered()
        await self._stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        self._answered()
        await self._stream.aclose()
