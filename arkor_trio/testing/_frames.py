"""Finding SSE frame boundaries and ``id`` lines in a de-chunked ``text/event-stream`` body.

The proxy cuts streams at exact points, so it must know where each frame ends without decoding
it: a frame is a run of non-empty lines closed by an empty line, lines end with CR, LF or CRLF
(WHATWG). A blank line with no frame before it belongs to the gap before the next frame.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

__all__ = ["FrameScanner", "Mark"]

_LINE_END = re.compile(rb"\r\n|\r|\n")
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
        size, base = len(data), self._offset
        for match in _LINE_END.finditer(data, pos):
            start, end = match.span()
            mark: Mark | None = None
            if self._line_len or self._first_line:  # slow path: a line begun earlier, or a BOM
                self._extend_line(data[pos:start])
                mark = self._end_line(base + end)
            elif start == pos:
                if self._in_block:
                    self._in_block = False
                    mark = Mark("frame", base + end)
            else:
                self._in_block = True
                if data.startswith(b"id:", pos) or (start - pos == 2 and data[pos:start] == b"id"):
                    mark = Mark("id", base + end)
            pos = end
            if end == size and data[end - 1] == 0x0D:  # is an LF coming next?
                self._held = [] if mark is None else [mark]
                self._after_cr = True
            elif mark is not None:
                out.append(mark)
        self._extend_line(data[pos:])
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

    def _end_line(self, at: int) -> Mark | None:
        head, length = self._line_head, self._line_len
        self._line_head, self._line_len = b"", 0
        if self._first_line:
            self._first_line = False
            if head.startswith(_BOM):
                head, length = head[3:], length - 3
        if length == 0:
            if self._in_block:
                self._in_block = False
                return Mark("frame", at)
            return None
        self._in_block = True
        if head.startswith(b"id:") or (length == 2 and head == b"id"):
            return Mark("id", at)
        return None
