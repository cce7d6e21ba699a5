"""Finding SSE frame boundaries and ``id`` lines in a de-chunked ``text/event-stream`` body.

The proxy cuts streams at exact points, so it must know where each frame ends without decoding
it: a frame is a run of non-empty lines closed by an empty line, lines end with CR, LF or CRLF
(WHATWG). A blank line with no frame before it belongs to the gap before the next frame.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

__all__ = ["FrameScanner", "Mark"]

_LINE_END = re.compile(rb"[\r\n]")
_BOM = b"\xef\xbb\xbf"


class Mark(NamedTuple):
    """A cut point in the body: ``offset`` is just past the line terminator of the marked line.

    ``kind`` is ``"frame"`` for the blank line that ends a frame and ``"id"`` for an ``id`` line.
    """

    kind: Literal["frame", "id"]
    offset: int


class FrameScanner:
    """Incremental scanner: feed body bytes in any split, get marks at absolute offsets, in order.

    A mark whose line ends with CR at the end of a piece is held until the next byte shows whether
    an LF follows (then the mark moves past it) or until :meth:`flush` at the end of the body, so
    the offsets never split a CRLF.
    """

    def __init__(self) -> None:
        self._offset = 0
        self._line_len = 0
        self._line_head = b""
        self._in_block = False
        self._first_line = True
        self._held: list[Mark] = []
        self._after_cr = False

    def feed(self, data: bytes) -> list[Mark]:
        """Scan the next piece of the body and return the marks it completes."""
        out: list[Mark] = []
        pos = 0
        if self._after_cr and data:
            self._after_cr = False
            shift = 1 if data[0] == 0x0A else 0
            pos = shift
            out.extend(Mark(m.kind, m.offset + shift) for m in self._held)
            self._held = []
        size = len(data)
        while True:
            match = _LINE_END.search(data, pos)
            if match is None:
                self._extend_line(data[pos:])
                break
            end = match.start()
            self._extend_line(data[pos:end])
            term_end = end + 1
            held = False
            if data[end] == 0x0D:
                if term_end == size:
                    held = True
                elif data[term_end] == 0x0A:
                    term_end += 1
            marks = self._end_line(self._offset + term_end)
            if held:
                self._held = marks
                self._after_cr = True
            else:
                out.extend(marks)
            pos = term_end
        self._offset += size
        return out

    def flush(self) -> list[Mark]:
        """End of body: release a mark held on a final CR."""
        out, self._held, self._after_cr = self._held, [], False
        return out

    def _extend_line(self, chunk: bytes) -> None:
        if chunk:
            self._line_len += len(chunk)
            if len(self._line_head) < 6:
                self._line_head += chunk[: 6 - len(self._line_head)]

    def _end_line(self, at: int) -> list[Mark]:
        head, length = self._line_head, self._line_len
        self._line_head, self._line_len = b"", 0
        if self._first_line:
            self._first_line = False
            if head.startswith(_BOM):
                head, length = head[3:], length - 3
        if length == 0:
            if self._in_block:
                self._in_block = False
                return [Mark("frame", at)]
            return []
        self._in_block = True
        if head.startswith(b"id:") or (length == 2 and head == b"id"):
            return [Mark("id", at)]
        return []
