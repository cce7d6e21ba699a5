"""Just enough HTTP/1.1 for the chaos proxy: heads, body framing, chunk encoding, canned answers.

The proxy handles one request per connection. It reads the request head, forwards it with
``Connection: close``, reads the response head and its body framing (``Content-Length``, chunked,
or until close), and re-frames the body downstream itself so it can stop at any byte.
"""

from __future__ import annotations

import http
import json
from typing import TYPE_CHECKING, Literal

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterable

    import trio

__all__ = [
    "LAST_CHUNK",
    "BodyReader",
    "ByteReader",
    "HttpError",
    "RequestHead",
    "ResponseHead",
    "body_framing",
    "encode_chunk",
    "render_head",
    "status_response",
]

MAX_HEAD = 64 * 1024
LAST_CHUNK = b"0\r\n\r\n"
Headers = tuple[tuple[str, str], ...]
Framing = Literal["none", "length", "chunked", "close"]


class HttpError(Exception):
    """Malformed or truncated HTTP from a peer."""


class ByteReader:
    """Buffered reads from a trio receive stream, counting the bytes received."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buf = bytearray()
        self.received = 0
        self.eof = False

    async def _fill(self) -> bool:
        if self.eof:
            return False
        data = await self._stream.receive_some(65536)
        if not data:
            self.eof = True
            return False
        self.received += len(data)
        self._buf += data
        return True

    async def read_head(self) -> bytes | None:
        """Return the next head through its blank line; None on EOF before any byte."""
        start = 0
        while (index := self._buf.find(b"\r\n\r\n", start)) < 0:
            if len(self._buf) > MAX_HEAD:
                raise HttpError(f"HTTP head longer than {MAX_HEAD} bytes")
            start = max(0, len(self._buf) - 3)
            if not await self._fill():
                if self._buf:
                    raise HttpError("connection closed in the middle of an HTTP head")
                return None
        return self.take(index + 4)

    async def read_line(self) -> bytes:
        """Return the next CRLF- (or LF-) terminated line without its terminator."""
        while (index := self._buf.find(b"\n")) < 0:
            if len(self._buf) > MAX_HEAD:
                raise HttpError("HTTP line too long")
            if not await self._fill():
                raise HttpError("connection closed in the middle of a chunked body")
        return self.take(index + 1).rstrip(b"\r\n")

    async def read_some(self, limit: int) -> bytes:
        """Return up to ``limit`` bytes (at least one), or b"" at EOF."""
        if not self._buf and not await self._fill():
            return b""
        return self.take(min(limit, len(self._buf)))

    def take(self, count: int) -> bytes:
        """Remove and return up to ``count`` buffered bytes."""
        data = bytes(self._buf[:count])
        del self._buf[:count]
        return data


def _parse_headers(lines: list[str]) -> Headers:
    headers = []
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(f"malformed header line {line!r}")
        headers.append((name, value.strip()))
    return tuple(headers)


def _get(headers: Headers, name: str) -> str | None:
    lowered = name.lower()
    return next((value for key, value in headers if key.lower() == lowered), None)


@attrs.frozen
class RequestHead:
    """A parsed request line and headers."""

    method: str
    target: str
    version: str
    headers: Headers

    @classmethod
    def parse(cls, raw: bytes) -> RequestHead:
        """Parse a head ending in a blank line; raise :class:`HttpError` when malformed."""
        lines = raw.decode("latin-1").split("\r\n")[:-2]
        parts = lines[0].split(" ") if lines else []
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise HttpError(f"malformed request line {lines[:1]!r}")
        return cls(parts[0], parts[1], parts[2], _parse_headers(lines[1:]))

    def get(self, name: str) -> str | None:
        """Return the first value of header ``name`` (case-insensitive), or None."""
        return _get(self.headers, name)


@attrs.frozen
class ResponseHead:
    """A parsed status line and headers."""

    status: int
    status_line: str
    headers: Headers

    @classmethod
    def parse(cls, raw: bytes) -> ResponseHead:
        """Parse a head ending in a blank line; raise :class:`HttpError` when malformed."""
        lines = raw.decode("latin-1").split("\r\n")[:-2]
        parts = lines[0].split(" ", 2) if lines else []
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HttpError(f"malformed status line {lines[:1]!r}")
        return cls(int(parts[1]), lines[0], _parse_headers(lines[1:]))

    def get(self, name: str) -> str | None:
        """Return the first value of header ``name`` (case-insensitive), or None."""
        return _get(self.headers, name)


def body_framing(head: ResponseHead, method: str) -> tuple[Framing, int]:
    """Return how the response body is delimited (RFC 9112 section 6.3) and its length if known."""
    if method == "HEAD" or head.status < 200 or head.status in (204, 304):
        return "none", 0
    encoding = head.get("transfer-encoding")
    if encoding is not None and "chunked" in encoding.lower():
        return "chunked", 0
    length = head.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise HttpError(f"bad Content-Length {length!r}")
        return "length", int(length)
    return "close", 0


class BodyReader:
    """Yields the payload of a response body piece by piece, whatever its framing."""

    def __init__(self, reader: ByteReader, framing: Framing, length: int) -> None:
        self._reader = reader
        self._framing = framing
        self._left = length if framing == "length" else 0
        self._done = framing == "none" or (framing == "length" and length == 0)

    async def next_piece(self) -> bytes:
        """Return the next payload bytes, or b"" once the body is complete.

        Raises:
            HttpError: The peer closed before the end of a delimited body, or sent bad chunking.
        """
        if self._done:
            return b""
        if self._framing == "close":
            data = await self._reader.read_some(65536)
            self._done = not data
            return data
        if self._framing == "chunked" and self._left == 0 and not await self._next_chunk():
            return b""
        data = await self._reader.read_some(self._left)
        if not data:
            raise HttpError("connection closed in the middle of the response body")
        self._left -= len(data)
        if self._left == 0:
            if self._framing == "length":
                self._done = True
            elif await self._reader.read_line() != b"":
                raise HttpError("chunk not followed by CRLF")
        return data

    async def _next_chunk(self) -> bool:
        """Read a chunk-size line; return False (and consume trailers) at the last chunk."""
        line = (await self._reader.read_line()).split(b";", 1)[0].strip()
        try:
            size = int(line, 16)
        except ValueError:
            raise HttpError(f"bad chunk size line {line!r}") from None
        if size == 0:
            while await self._reader.read_line() != b"":
                pass  # trailers are dropped
            self._done = True
        self._left = size
        return size > 0


def encode_chunk(data: bytes) -> bytes:
    """Frame ``data`` as one HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def render_head(start_line: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """Serialise a start line and headers into a head ending in a blank line."""
    lines = [start_line, *(f"{name}: {value}" for name, value in headers), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def status_response(code: int, *, retry_after: float | None, message: str | None) -> bytes:
    """A complete ``Connection: close`` response with a JSON ``{"error": ...}`` body."""
    try:
        reason = http.HTTPStatus(code).phrase
    except ValueError:
        reason = ""
    body = json.dumps({"error": message or f"chaos proxy: injected {code} {reason}".strip()})
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body.encode()))),
        ("Connection", "close"),
    ]
    if retry_after is not None:
        seconds = float(retry_after)
        headers.append(
            ("Retry-After", str(int(seconds)) if seconds.is_integer() else repr(seconds))
        )
    return render_head(f"HTTP/1.1 {code} {reason}".rstrip(), headers) + body.encode()
