"""A WHATWG-exact, incremental decoder for ``text/event-stream`` (Server-Sent Events).

Feed it the response body in chunks of any size, split anywhere (inside a multi-byte character,
between the CR and LF of a CRLF, inside the leading BOM); it returns the same frames as if the body
had arrived in one piece. It follows the HTML standard's "event stream interpretation":

* the stream is always UTF-8 (invalid bytes become U+FFFD), whatever the Content-Type says;
* one leading U+FEFF is stripped at stream start; a later one is ordinary text;
* lines end at CR, LF or CRLF, nothing else (U+2028, VT, FF, NEL stay inside values);
* ``:comment`` lines are ignored; ``name:value`` drops one leading space from the value; a line
  without ``:`` is a field name with an empty value; unknown fields are ignored;
* ``id`` values containing U+0000 are ignored; ``retry`` applies only to non-empty ASCII digits;
* a blank line ends a block; a block without ``data`` lines dispatches no frame (its ``id`` and
  ``retry`` still count); an unterminated block at the end of the stream is discarded.

One deliberate deviation: the standard moves the last event ID when the ``id:`` line is parsed;
this decoder moves :attr:`SSEDecoder.last_event_id` only when the block's blank line arrives, so
that a reconnect resumes after the last *complete* block and never skips a half-received one.

Decoding is linear in the input: each byte is scanned for line ends once, a long line arriving
in many small chunks is kept as a list of pieces and joined once, and decoding to text happens
once per field value, after the line is complete. That equals decoding the whole body first: CR,
LF and ``:`` are ASCII, which never occur inside a UTF-8 sequence, and the replacing decoder never
folds an ASCII byte into an invalid sequence, so a line's bytes decode alone as they would in place.
"""

from __future__ import annotations

import json
import re
from typing import Any

import attrs

from ._errors import ConfigError, FrameTooLarge

__all__ = ["SSEDecoder", "SSEFrame"]

_BOM = b"\xef\xbb\xbf"
# The common block, decoded whole in C: an optional ``id:``, an optional ``event:``, one
# ``data:`` line, a blank line (one leading space of each value dropped, as for any field).
# An id holding U+0000 does not match (such an id is ignored, which the line path does).
_FAST_BLOCK = re.compile(rb"(?:id: ?([^\n\x00]*)\n)?(?:event: ?([^\n]*)\n)?data: ?([^\n]*)\n\n")
# int() refuses longer digit strings (sys.int_info.default_max_str_digits); a retry: value
# with more significant digits than this saturates to the largest one it could have had (an
# absurd delay in any case: the reconnect rules cap it at ReconnectPolicy.max_delay).
_MAX_RETRY_DIGITS = 4300
_RETRY_SATURATED = 10**_MAX_RETRY_DIGITS - 1


@attrs.frozen
class SSEFrame:
    """One dispatched Server-Sent Event.

    Attributes:
        event: The block's ``event:`` value, or ``"message"`` when it had none or an empty one.
        data: The block's ``data:`` values joined with LF (no trailing LF).
        id: The block's own last valid ``id:`` value (``""`` for an empty ``id:``), or None
            when the block had no valid ``id:`` line. This is not the persistent last event ID.
        retry: The block's own last valid ``retry:`` value in milliseconds, or None.
        last_event_id: The stream's persistent last event ID when the frame was dispatched (the
            browser's ``MessageEvent.lastEventId``): the latest complete block's ``id:``, which
            for a frame without one is an earlier block's. Frames compare equal on the four
            fields above (the block's own content); this one is stream state, left out of ``==``.
    """

    event: str
    data: str
    id: str | None = None
    retry: int | None = None
    last_event_id: str = attrs.field(default="", eq=False)

    def json(self) -> Any:
        """The frame's ``data`` parsed as JSON (as httpx-sse's ``ServerSentEvent.json()``).

        Raises:
            ValueError: The data is not JSON (:class:`json.JSONDecodeError`).
        """
        return json.loads(self.data)


# SSEFrame's attrs __init__ goes through object.__setattr__ for each field (it is frozen); the
# hot loop fills the slots directly, which makes decoding ~10% faster end to end.
# tests/test_sse.py checks that this stays equal to SSEFrame(...) and covers every field.
_new_frame = object.__new__
_set_event, _set_data, _set_id, _set_retry, _set_last_id = (
    SSEFrame.__dict__[name].__set__ for name in ("event", "data", "id", "retry", "last_event_id")
)


def _frame(
    event: str, data: str, id_: str | None, retry: int | None, last_event_id: str
) -> SSEFrame:
    frame = _new_frame(SSEFrame)
    _set_event(frame, event)
    _set_data(frame, data)
    _set_id(frame, id_)
    _set_retry(frame, retry)
    _set_last_id(frame, last_event_id)
    return frame


def _after_blank(data: bytes, pos: int) -> int:
    """The index just after the first blank line ending a line that starts at or after ``pos``
    (the end of the block in progress), or -1."""
    found = data.find(b"\n\n", pos)
    return -1 if found < 0 else found + 2


class SSEDecoder:
    """Incremental ``text/event-stream`` decoder for one stream at a time.

    Frames come out in stream order. The result never depends on how the bytes were chunked.
    The decoder does no I/O and never blocks; it is not thread-safe.

    Args:
        max_frame_bytes: Bound on the bytes one unfinished block may buffer: the ``data``
            values received so far (each counted with its joining LF) plus the current line,
            field name included. Its other field lines (``id:``, ``event:``, ``retry:``,
            unknown fields; each with its line end, comments not counted) are bounded by it
            too, on their own: an endless block of ``id:`` lines ends. Exceeding either raises
            :class:`~arkor_trio.FrameTooLarge`.
        last_event_id: The initial last event ID, e.g. a cursor to resume from.

    Raises:
        ConfigError: ``max_frame_bytes`` is not a positive integer.
    """

    __slots__ = (
        "_cr",
        "_data",
        "_data_len",
        "_event",
        "_failed",
        "_head",
        "_id",
        "_last_event_id",
        "_line_len",
        "_max",
        "_other_len",
        "_parts",
        "_retry",
        "_retry_block",
    )

    def __init__(self, max_frame_bytes: int = 1_048_576, *, last_event_id: str = "") -> None:
        if isinstance(max_frame_bytes, bool) or not isinstance(max_frame_bytes, int):
            raise ConfigError("max_frame_bytes must be an int", field="max_frame_bytes")
        if max_frame_bytes < 1:
            raise ConfigError(
                f"max_frame_bytes must be positive, got {max_frame_bytes}", field="max_frame_bytes"
            )
        self._max = max_frame_bytes
        self._last_event_id = last_event_id
        self._retry: int | None = None
        self._failed = False
        self._new_stream()

    def _new_stream(self) -> None:
        # Bytes held back while they may still be the start of a BOM; None once past it.
        self._head: bytes | None = b""
        self._cr = False  # the previous chunk ended with CR: skip one LF at the next one
        self._parts: list[bytes] = []  # the unfinished line, in pieces
        self._line_len = 0
        self._data: list[bytes] = []
        self._data_len = 0
        self._other_len = 0  # the block's field lines other than data and comments
        self._event: bytes | None = None
        self._id: bytes | None = None
        self._retry_block: int | None = None

    @property
    def last_event_id(self) -> str:
        """The last event ID: the ``id:`` of the latest complete block that had one.

        Starts as ``""``; an empty ``id:`` resets it to ``""``. Moves only when a block's
        blank line has been decoded, never for a block cut off by the end of the stream.
        """
        return self._last_event_id

    def resume_from(self, last_event_id: str) -> None:
        """Set the last event ID, e.g. back to a resume point while a replay is being skipped."""
        self._last_event_id = last_event_id

    @property
    def retry(self) -> int | None:
        """The latest valid ``retry:`` value in milliseconds, or None if none was seen.

        Applies as soon as its line is complete, even in a block that dispatches nothing.
        """
        return self._retry

    @property
    def in_block(self) -> bool:
        """Whether part of a block was read since the last blank line (a field line or an
        unfinished line): an end of stream now cuts a frame."""
        return bool(
            self._parts
            or self._data
            or self._event is not None
            or self._id is not None
            or self._retry_block is not None
        )

    @property
    def pending_bytes(self) -> int:
        """Bytes buffered for the unfinished block and line (and up to 2 bytes of a split BOM)."""
        return self._data_len + self._line_len + (len(self._head) if self._head else 0)

    def feed(self, data: bytes) -> list[SSEFrame]:
        """Decode the next chunk of the stream.

        Args:
            data: The next bytes of the body, split anywhere.

        Returns:
            The frames completed by this chunk, in stream order (often empty).

        Raises:
            FrameTooLarge: The unfinished block outgrew ``max_frame_bytes``. The frames this
                chunk completed are not returned and :attr:`last_event_id` is rolled back to
                its value before this call, so resuming from it misses nothing. The connection
                must be dropped: until :meth:`close`, every ``feed`` raises again.
        """
        if self._failed:
            raise FrameTooLarge(self._max)
        if self._head is not None:
            data = self._head + data
            if len(data) < len(_BOM) and _BOM.startswith(data):
                self._head = data
                return []
            self._head = None
            data = data.removeprefix(_BOM)
        if not data:
            return []
        if self._cr:
            self._cr = False
            if data[0] == 10:  # LF completing a CRLF split across chunks
                data = data[1:]
                if not data:
                    return []
        if b"\r" in data:
            self._cr = data[-1] == 13
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        start_id = self._last_event_id
        try:
            return self._decode(data)
        except FrameTooLarge:
            # The frames of this call never reach the caller: the resume position must not
            # move past them either.
            self._failed = True
            self._last_event_id = start_id
            raise

    def _decode(self, data: bytes) -> list[SSEFrame]:
        """Decode LF-only ``data``: whole common blocks by the fast path, the rest line by line."""
        frames: list[SSEFrame] = []
        pos = 0
        end = len(data)
        if not self._at_block_start():
            # Finish the block in progress line by line, up to the blank line that ends it.
            stop = 1 if not self._parts and data[:1] == b"\n" else _after_blank(data, 0)
            if stop < 0:
                self._slow(data, frames)
                return frames
            self._slow(data[:stop], frames)
            pos = stop
        fast = _FAST_BLOCK.match
        limit = self._max
        append = frames.append
        while pos < end:
            match = fast(data, pos)
            if match is not None and match.end() - pos <= limit:
                # The fast path, inlined: the hot loop of a stream of common blocks.
                id_, event, value = match.groups()
                if id_ is not None:
                    self._last_event_id = id_ = id_.decode("utf-8", "replace")
                append(
                    _frame(
                        event.decode("utf-8", "replace") if event else "message",
                        value.decode("utf-8", "replace"),
                        id_,
                        None,
                        self._last_event_id,
                    )
                )
                pos = match.end()
                continue
            # One block the fast path does not cover (a comment, retry:, several data lines,
            # other field order, a huge line): the line-by-line path, then the fast path again.
            stop = pos + 1 if data[pos] == 10 else _after_blank(data, pos)
            if stop < 0:
                self._slow(data[pos:], frames)
                return frames
            self._slow(data[pos:stop], frames)
            pos = stop
        return frames

    def _at_block_start(self) -> bool:
        return not (
            self._parts
            or self._data
            or self._event is not None
            or self._id is not None
            or self._retry_block is not None
        )

    def _slow(self, data: bytes, frames: list[SSEFrame]) -> None:
        """Decode ``data`` line by line (the general path), keeping an unfinished line."""
        check = self._data_len + self._other_len + self._line_len + len(data) > self._max
        lines = data.split(b"\n")
        tail = lines.pop()
        if lines and self._parts:
            self._parts.append(lines[0])
            lines[0] = b"".join(self._parts)
            self._parts = []
            self._line_len = 0
        if lines:
            frames.extend(self._lines(lines, check))
        if tail:
            self._parts.append(tail)
            self._line_len += len(tail)
            if check and self._data_len + self._line_len > self._max:
                raise FrameTooLarge(self._max)

    def close(self) -> list[SSEFrame]:
        """End the stream: discard the unfinished block and line.

        The standard dispatches nothing at the end of a stream, so the result is always empty
        (a list, to mirror :meth:`feed`); an unterminated block's ``id:`` does not apply.
        Afterwards the decoder reads a new stream (a leading BOM is stripped again), keeping
        :attr:`last_event_id` and :attr:`retry` as an EventSource does across reconnections;
        this also clears the failed state left by :class:`~arkor_trio.FrameTooLarge`.

        Returns:
            An empty list.
        """
        self._failed = False
        self._new_stream()
        return []

    def _lines(self, lines: list[bytes], check: bool) -> list[SSEFrame]:
        # The hot loop: state lives in locals and is stored back once at the end.
        frames: list[SSEFrame] = []
        data = self._data
        data_len = self._data_len
        other_len = self._other_len
        event = self._event
        id_ = self._id
        retry = self._retry_block
        for line in lines:
            if not line:
                if id_ is not None:
                    self._last_event_id = id_.decode("utf-8", "replace")
                if data:
                    last_id = self._last_event_id
                    frames.append(
                        _frame(
                            event.decode("utf-8", "replace") if event else "message",
                            b"\n".join(data).decode("utf-8", "replace"),
                            None if id_ is None else last_id,
                            retry,
                            last_id,
                        )
                    )
                    data = []
                    data_len = 0
                other_len = 0
                event = id_ = retry = None
                continue
            if check and data_len + len(line) > self._max:
                raise FrameTooLarge(self._max)
            name, _, value = line.partition(b":")
            if name and name != b"data":
                other_len += len(line) + 1
                if check and other_len > self._max:
                    raise FrameTooLarge(self._max)
            if value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                data.append(value)
                data_len += len(value) + 1
            elif name == b"event":
                event = value
            elif name == b"id":
                if b"\x00" not in value:
                    id_ = value
            elif name == b"retry" and value.isdigit():  # bytes.isdigit(): ASCII 0-9 only
                digits = value.lstrip(b"0") or b"0"
                huge = len(digits) > _MAX_RETRY_DIGITS
                retry = self._retry = _RETRY_SATURATED if huge else int(digits)
        self._data = data
        self._data_len = data_len
        self._other_len = other_len
        self._event = event
        self._id = id_
        self._retry_block = retry
        return frames
