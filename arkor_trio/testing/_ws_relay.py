"""The chaos proxy's WebSocket relay: after a ``101`` it forwards frames and cuts at exact points.

Server-to-client bytes are scanned for WebSocket frame boundaries (RFC 6455 section 5.2); a
*message* ends with a data frame (text, binary or continuation) that has FIN set; control frames
(ping, pong, close) are forwarded but not counted. The step's action applies to messages as
:class:`CutAfterEvents` applies to SSE frames: ``clean`` closes right after message ``k`` (a TCP
close without a close frame), ``mid_frame`` sends half of the bytes of message ``k + 1`` (a cut
inside a frame) then closes, ``reset`` does the same with a TCP RST, ``after_id`` behaves like
``clean``; :class:`Stall` goes silent after ``after_events`` messages; :class:`CutAfterBytes`
(``byte_limit``) closes after that many bytes, wherever they end. Client-to-server bytes are
pumped unchanged by the caller.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import trio

from ._plan import CutAfterEvents, Stall
from ._records import CutKind

if TYPE_CHECKING:
    from ._http import ByteReader
    from ._plan import Fault
    from ._records import ConnState

__all__ = ["Downstream", "WsScanner", "is_upgrade", "relay_websocket"]

_KINDS = {
    "clean": CutKind.CLEAN,
    "after_id": CutKind.CLEAN,
    "mid_frame": CutKind.MID_FRAME,
    "reset": CutKind.RESET,
}


class Downstream(Protocol):
    """Where the relay writes (the proxy's client side)."""

    reset_on_close: bool

    async def send(self, data: bytes) -> None:
        """Write bytes to the client."""
        ...


def is_upgrade(upgrade_header: str | None) -> bool:
    """True for a request asking for a WebSocket (``Upgrade: websocket``)."""
    return upgrade_header is not None and upgrade_header.strip().lower() == "websocket"


class WsScanner:
    """Incremental frame scanner: feed bytes in any split, get the offsets where messages end."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._offset = 0

    def feed(self, data: bytes) -> list[int]:
        """Scan the next bytes; return the absolute offsets just past each completed message."""
        self._buf += data
        buf, ends = self._buf, []
        while len(buf) >= 2:
            length, pos = buf[1] & 0x7F, 2
            if length == 126:
                if len(buf) < 4:
                    break
                length, pos = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                if len(buf) < 10:
                    break
                length, pos = int.from_bytes(buf[2:10], "big"), 10
            if buf[1] & 0x80:
                pos += 4  # masking key
            total = pos + length
            if len(buf) < total:
                break
            first = buf[0]
            del buf[:total]
            self._offset += total
            if first & 0x80 and first & 0x0F in (0, 1, 2):
                ends.append(self._offset)
        return ends


async def relay_websocket(
    up: ByteReader,
    state: ConnState,
    down: Downstream,
    action: Fault | None,
    *,
    byte_limit: int | None = None,
) -> None:
    """Forward the upstream's frames to the client until it closes or the action cuts.

    ``byte_limit``: close (no close frame) once that many bytes were forwarded.
    """
    planned = isinstance(action, CutAfterEvents | Stall)
    k = 0
    mode = "clean"
    if isinstance(action, CutAfterEvents):
        k, mode = action.k, action.mode
    elif isinstance(action, Stall):
        k = action.after_events
    scanner = WsScanner()
    held = bytearray()
    forwarded = received = messages = 0
    boundary: int | None = 0 if k == 0 else None
    cut_at: int | None = 0 if planned and k == 0 and mode in ("clean", "after_id") else None
    ends: list[int] = []
    while True:
        if planned and cut_at is not None and forwarded == cut_at:
            await _cut(action, mode, state, down)
            return
        if byte_limit is not None and forwarded >= byte_limit:
            state.cut(CutKind.BYTES)
            return
        piece = await up.read_some(65536)
        if not piece:
            state.finish("upstream")
            return
        received += len(piece)
        held += piece
        for end in scanner.feed(piece):
            messages += 1
            ends.append(end)
            if messages == k:
                boundary = end
                if mode in ("clean", "after_id"):
                    cut_at = end
            elif messages == k + 1 and mode in ("mid_frame", "reset") and boundary is not None:
                cut_at = boundary + max(1, (end - boundary) // 2)
        if not planned:
            limit = received
        elif cut_at is not None:
            limit = cut_at
        elif boundary is not None and mode in ("mid_frame", "reset"):
            limit = boundary
        else:
            limit = received
        if byte_limit is not None:
            limit = min(limit, byte_limit)
        if limit > forwarded:
            await down.send(bytes(held[: limit - forwarded]))
            del held[: limit - forwarded]
            forwarded = limit
            while ends and ends[0] <= forwarded:
                ends.pop(0)
                state.events_passed += 1


async def _cut(action: Fault | None, mode: str, state: ConnState, down: Downstream) -> None:
    if isinstance(action, Stall):
        state.cut(CutKind.STALL)
        await trio.sleep(action.seconds)
        return
    down.reset_on_close = mode == "reset"
    state.cut(_KINDS[mode])
