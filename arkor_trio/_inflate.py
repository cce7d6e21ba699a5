"""Reading an HTTP response body with bounded decompression (a gzip bomb is refused, not inflated).

httpx inflates each network read (up to 64 KiB) in one call, into up to ~64 MiB, and a body of
1 MiB can inflate to 1 GiB: the event loop is frozen while it inflates and memory follows.
:func:`iter_body` reads the *raw* body instead and inflates it itself, in slices of at most
:data:`SLICE_BYTES`, with a scheduling checkpoint between two slices of one read (so a cancel
scope fires on time), and stops with :class:`UnsafeBody` when

* the decoded body outgrows ``max_bytes`` (plain requests: :data:`MAX_BODY_BYTES`), or
* once more than :data:`RATIO_FLOOR` bytes came out, the decoded bytes exceed ``max_ratio``
  (:data:`MAX_RATIO`) times the raw bytes read (deflate itself reaches ~1030:1; JSON and event
  streams compress 3-20:1), or
* the body has a ``Content-Encoding`` this reader does not decode (anything but ``gzip``,
  ``x-gzip``, ``deflate`` and ``identity``, or more than one coding stacked): the requests of
  this library ask only for :data:`ACCEPT_ENCODING`.

Every layer that reads a body (the channel, the Arkor session, the chat stream) uses it; each
turns :class:`UnsafeBody` into its own typed error.
"""

from __future__ import annotations

import math
import zlib
from contextlib import aclosing
from typing import TYPE_CHECKING, Protocol, cast

import httpx
import trio

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator

__all__ = [
    "ACCEPT_ENCODING",
    "MAX_BODY_BYTES",
    "MAX_RATIO",
    "RATIO_FLOOR",
    "SLICE_BYTES",
    "UnsafeBody",
    "iter_body",
    "read_body",
]

#: What the library's requests send as ``Accept-Encoding``: the codings :func:`iter_body` decodes.
ACCEPT_ENCODING = "gzip, deflate"
#: The largest piece handed on at once (what one network read of an uncompressed body holds).
SLICE_BYTES = 64 * 1024
#: Decoded bytes per raw byte allowed, once :data:`RATIO_FLOOR` bytes have been decoded.
MAX_RATIO = 100
#: The ratio is not judged before this many bytes came out (a tiny body may compress a lot).
RATIO_FLOOR = 1 << 20
#: The default cap of a plain (non-streaming) response body, decoded.
MAX_BODY_BYTES = 64 << 20


class UnsafeBody(Exception):
    """The body was refused: too large decoded, too compressed, or an unknown encoding."""


class _Inflater(Protocol):
    @property
    def unconsumed_tail(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = ...) -> bytes: ...

    def flush(self, length: int = ...) -> bytes: ...


class _Deflate:
    """``deflate`` as servers send it: zlib-wrapped as the RFC says, or raw as some do."""

    def __init__(self) -> None:
        self._inner = zlib.decompressobj()
        self._first = True

    @property
    def unconsumed_tail(self) -> bytes:
        return self._inner.unconsumed_tail

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        if self._first:
            self._first = False
            try:
                return self._inner.decompress(data, max_length)
            except zlib.error:
                self._inner = zlib.decompressobj(-zlib.MAX_WBITS)
        return self._inner.decompress(data, max_length)

    def flush(self, length: int = zlib.DEF_BUF_SIZE) -> bytes:
        return self._inner.flush(length)


def _inflater(response: httpx.Response) -> _Inflater | None:
    header = response.headers.get("content-encoding", "")
    codings = [c.strip().lower() for c in header.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    if len(codings) > 1:
        raise UnsafeBody(f"Content-Encoding {header!r} stacks codings (one is accepted)")
    if codings[0] in ("gzip", "x-gzip"):
        return cast("_Inflater", zlib.decompressobj(zlib.MAX_WBITS | 16))
    if codings[0] == "deflate":
        return _Deflate()
    raise UnsafeBody(
        f"Content-Encoding {header!r} was not asked for (Accept-Encoding: {ACCEPT_ENCODING})"
    )


async def iter_body(
    response: httpx.Response,
    *,
    max_bytes: int | None = None,
    max_ratio: float = MAX_RATIO,
    slice_bytes: int = SLICE_BYTES,
) -> AsyncIterator[bytes]:
    """Yield the decoded body of a streamed ``response`` in pieces of at most ``slice_bytes``.

    Args:
        response: A response opened with ``stream=True``, not read yet.
        max_bytes: Bound on the decoded body (None: unbounded, for event streams).
        max_ratio: Bound on decoded bytes per raw byte, past :data:`RATIO_FLOOR`.
        slice_bytes: The largest piece yielded.

    Raises:
        UnsafeBody: See the module docstring. httpx's transport errors pass through.
    """
    try:
        content = response.content  # already in memory (a test's mock transport reads it)
    except httpx.ResponseNotRead:
        pass
    else:
        for start in range(0, len(content), slice_bytes):
            if start:
                await trio.lowlevel.checkpoint()
            _check(min(start + slice_bytes, len(content)), len(content), max_bytes, math.inf)
            yield content[start : start + slice_bytes]
        return
    inflater = _inflater(response)
    raw_total = 0
    out_total = 0
    raw = cast("AsyncGenerator[bytes, None]", response.aiter_raw())
    async with aclosing(raw) as chunks:
        async for chunk in chunks:
            raw_total += len(chunk)
            pending = chunk
            first = True
            while pending:
                if not first:
                    await trio.lowlevel.checkpoint()  # between two slices of one read
                first = False
                if inflater is None:
                    piece, pending = pending[:slice_bytes], pending[slice_bytes:]
                else:
                    try:
                        piece = inflater.decompress(pending, slice_bytes)
                    except zlib.error as exc:
                        raise UnsafeBody(f"the compressed body is corrupt ({exc})") from None
                    pending = inflater.unconsumed_tail
                if not piece:
                    continue
                out_total += len(piece)
                _check(out_total, raw_total, max_bytes, max_ratio)
                yield piece
        if inflater is not None:
            try:
                piece = inflater.flush(slice_bytes)
            except zlib.error as exc:
                raise UnsafeBody(f"the compressed body is corrupt ({exc})") from None
            if piece:
                _check(out_total + len(piece), raw_total, max_bytes, max_ratio)
                yield piece


def _check(out_total: int, raw_total: int, max_bytes: int | None, max_ratio: float) -> None:
    if max_bytes is not None and out_total > max_bytes:
        raise UnsafeBody(f"the body exceeds {max_bytes} bytes")
    if out_total > RATIO_FLOOR and out_total > max_ratio * raw_total:
        raise UnsafeBody(
            f"the body inflates more than {max_ratio:g} times ({raw_total} compressed bytes "
            f"gave over {out_total}): refused as a decompression bomb"
        )


async def read_body(response: httpx.Response, *, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """The whole decoded body of a streamed ``response``, bounded as :func:`iter_body` says."""
    body = bytearray()
    pieces = cast("AsyncGenerator[bytes, None]", iter_body(response, max_bytes=max_bytes))
    async with aclosing(pieces):
        async for piece in pieces:
            body += piece
    return bytes(body)
