"""The scripted SSE source of ``arkor-trio bench``: N checksummed events, resumable, restartable.

Every request gets the same deterministic body for a given ``Last-Event-ID`` (:func:`layout`):
a ``retry:`` frame, then the events after that id (all of them when the id is absent or unknown),
with comment frames, a comment line inside some blocks, data split over two lines in some and
CRLF line ends in others, so a client's decoder meets what real servers send. Event ``i`` (1..N)
carries ``{"n": i, "pad": ..., "check": crc32("i:pad")}``; event N+1 is ``{"final": true}``.

The body is chunked, so a source that drops a connection is seen as a cut, not as an end. In
restart mode the source restarts after a seeded 4..16 events of each connection: it drops every
connection and stops listening for ``down_s`` seconds (the proxy answers 502 meanwhile).
"""

from __future__ import annotations

import json
import random
import zlib
from typing import TYPE_CHECKING

import attrs
import trio

from ._profiles import K_RANGE

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Frame", "SentEvent", "Source", "layout", "script"]

_MAX_HEAD = 16384
#: Event names on the wire: most are ``tick``; every 5th has no ``event:`` line (``message``).
TICK = "tick"


@attrs.frozen
class SentEvent:
    """One event of the script: id, name (``message`` when the frame has no ``event:``), data."""

    id: str
    event: str
    data: str

    @property
    def final(self) -> bool:
        return self.data == FINAL_DATA


FINAL_DATA = '{"final": true}'


@attrs.frozen
class Frame:
    """One block of the body as bytes, with the id it carries (None for comments and ``retry:``)."""

    raw: bytes
    id: str | None


def script(events: int, seed: int = 7) -> list[SentEvent]:
    """The ``events`` checksummed events and the final one; the same for the same arguments."""
    rng = random.Random(seed)
    out = []
    for n in range(1, events + 1):
        pad = rng.randbytes(rng.randint(8, 40)).hex()
        check = zlib.crc32(f"{n}:{pad}".encode())
        if n % 10 == 0:  # a data field over two lines: the client must join them with "\n"
            data = f'{{"n": {n},\n"pad": "{pad}", "check": {check}}}'
        else:
            data = json.dumps({"n": n, "pad": pad, "check": check})
        out.append(SentEvent(str(n), "message" if n % 5 == 0 else TICK, data))
    out.append(SentEvent(str(events + 1), TICK, FINAL_DATA))
    return out


def _encode(event: SentEvent, index: int) -> bytes:
    lines = [f"id: {event.id}"]
    if event.event != "message":
        lines.append(f"event: {event.event}")
    if index % 6 == 3:
        lines.append(": a comment inside the block")
    lines += [f"data: {part}" for part in event.data.split("\n")]
    end = "\r\n" if index % 13 == 12 else "\n"
    return (end.join(lines) + end + end).encode()


def layout(events: Sequence[SentEvent], last_event_id: str | None, retry_ms: int) -> list[Frame]:
    """The frames of the body answering a request with ``last_event_id``, in order."""
    start = 0
    for index, event in enumerate(events):
        if event.id == last_event_id:
            start = index + 1
            break
    frames = [Frame(f"retry: {retry_ms}\n\n".encode(), None)]
    for index in range(start, len(events)):
        if index % 8 == 7:
            frames.append(Frame(b": keep-alive\n\n", None))
        frames.append(Frame(_encode(events[index], index), events[index].id))
    return frames


class Source:
    """The source's HTTP server; run with ``await nursery.start(source.run)``."""

    def __init__(
        self,
        events: Sequence[SentEvent],
        *,
        retry_ms: int = 100,
        seed: int = 1,
        down_s: float = 0.2,
    ) -> None:
        self.events = list(events)
        self.retry_ms = retry_ms
        self.port = 0
        self.restart = False
        self.restarts = 0
        self._rng = random.Random(seed)
        self._down_s = down_s
        self._restart_now = trio.Event()
        self._up = trio.Event()
        self._generation = 0

    async def wait_up(self) -> None:
        """Return once the source is listening (not in the middle of a restart)."""
        await self._up.wait()

    def reset(self, *, restart: bool, seed: int) -> None:
        """Set the mode for the next profile: restart or not, and the seed of the draws."""
        self.restart = restart
        self.restarts = 0
        self._generation += 1
        self._rng = random.Random(seed)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen (restarting when asked) until cancelled; ``started`` gets the port."""
        while True:
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            task_status.started(self.port)
            task_status = trio.TASK_STATUS_IGNORED
            self._up.set()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.serve_listeners, self._handle, listeners)
                await self._restart_now.wait()
                self._up = trio.Event()
                nursery.cancel_scope.cancel()
            self._restart_now = trio.Event()
            self.restarts += 1
            await trio.sleep(self._down_s)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                head = await _read_head(stream)
                if head is None:
                    return
                method, _target, headers = head
                if method != "GET":
                    await stream.send_all(_plain(405, "only GET"))
                    return
                leid = headers.get("last-event-id")
                await stream.send_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n"
                    b"Connection: close\r\n\r\n"
                )
                budget = self._rng.randint(*K_RANGE) if self.restart else None
                generation = self._generation
                sent = 0
                for frame in layout(self.events, leid, self.retry_ms):
                    if budget is not None and frame.id is not None and sent == budget:
                        if generation == self._generation:  # not a previous profile's connection
                            self._restart_now.set()
                        await trio.sleep_forever()
                    await stream.send_all(b"%x\r\n%s\r\n" % (len(frame.raw), frame.raw))
                    sent += frame.id is not None
                await stream.send_all(b"0\r\n\r\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError, ValueError):
                return


def _plain(status: int, text: str) -> bytes:
    body = text.encode()
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


async def _read_head(stream: trio.SocketStream) -> tuple[str, str, dict[str, str]] | None:
    buffer = bytearray()
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > _MAX_HEAD:
            raise ValueError("request head too large")
        chunk = await stream.receive_some(4096)
        if not chunk:
            return None
        buffer += chunk
    lines = bytes(buffer).split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    method, target, *_ = [*lines[0].split(" "), "", ""]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return method, target, headers
