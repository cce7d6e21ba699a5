"""The proxy's SSE boundary scanner and its minimal HTTP/1.1 framing, without sockets."""

from __future__ import annotations

import json

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from arkor_trio.testing._frames import FrameScanner, Mark
from arkor_trio.testing._http import (
    MAX_HEAD,
    BodyReader,
    ByteReader,
    HttpError,
    RequestHead,
    ResponseHead,
    body_framing,
    status_response,
)


def scan(*pieces: bytes) -> list[Mark]:
    scanner = FrameScanner()
    marks = [m for piece in pieces for m in scanner.feed(piece)]
    return marks + scanner.flush()


def test_frame_and_id_marks_are_just_past_their_terminators():
    data = b"id: 1\ndata: x\n\n"
    assert scan(data) == [Mark("id", 6), Mark("frame", len(data))]


def test_crlf_split_across_pieces_is_not_split_by_a_mark():
    assert scan(b"id: 1\r", b"\ndata: x\r\n\r", b"\n") == [Mark("id", 7), Mark("frame", 18)]


def test_bare_cr_terminators_and_a_held_final_cr():
    scanner = FrameScanner()
    assert scanner.feed(b"data: x\r\r") == []  # the last CR may still be followed by LF
    assert scanner.flush() == [Mark("frame", 9)]
    assert scan(b"data: x\r\rdata: y\r\r") == [Mark("frame", 9), Mark("frame", 18)]


def test_blank_lines_between_frames_are_not_frames():
    assert scan(b"\n\ndata: a\n\n\n") == [Mark("frame", 11)]


@pytest.mark.parametrize(
    ("line", "is_id"),
    [(b"id: 7", True), (b"id:7", True), (b"id", True), (b"identity: 1", False), (b"idx", False)],
)
def test_only_the_id_field_is_an_id_line(line, is_id):
    marks = scan(line + b"\ndata: 1\n\n")
    assert (Mark("id", len(line) + 1) in marks) is is_id


def test_a_leading_bom_does_not_hide_the_first_id_line():
    assert scan("\ufeffid: 1\n\n".encode())[0] == Mark("id", 9)


def test_comment_only_blocks_count_as_frames():
    assert scan(b": keepalive\n\n") == [Mark("frame", 13)]


_LINE = st.sampled_from([b"id: 4", b"event: training.log", b'data: {"step": 1}', b": c", b"data"])


@st.composite
def streams(draw):
    """A stream of frames (one line terminator per frame) and the marks it must produce."""
    data, marks = b"", []
    for _ in range(draw(st.integers(0, 6))):
        eol = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
        for line in draw(st.lists(_LINE, min_size=1, max_size=4)):
            data += line + eol
            if line.startswith(b"id:"):
                marks.append(Mark("id", len(data)))
        data += eol
        marks.append(Mark("frame", len(data)))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    return data, pieces, marks


@given(streams())
def test_marks_do_not_depend_on_how_the_body_is_split(case):
    data, pieces, marks = case
    assert scan(data) == marks
    assert scan(*pieces) == marks


class PieceStream(trio.abc.ReceiveStream):
    """Returns the given pieces one per receive_some call, then EOF."""

    def __init__(self, pieces: tuple[bytes, ...]) -> None:
        self.pieces = list(pieces)

    async def receive_some(self, max_bytes=None) -> bytes:
        await trio.lowlevel.checkpoint()
        return self.pieces.pop(0) if self.pieces else b""

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def reader_over(*pieces: bytes) -> ByteReader:
    await trio.lowlevel.checkpoint()
    return ByteReader(PieceStream(pieces))


async def read_body(reader: ByteReader, framing, length=0) -> bytes:
    body, out = BodyReader(reader, framing, length), b""
    while piece := await body.next_piece():
        out += piece
    return out


async def test_chunked_body_with_extensions_and_trailers_byte_by_byte():
    raw = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT"
    reader = await reader_over(*(raw[i : i + 1] for i in range(len(raw))))
    assert await read_body(reader, "chunked") == b"hello, world"
    assert await reader.read_some(100) == b"N"  # the reader stops at the end of the body


async def test_length_and_close_delimited_bodies():
    assert await read_body(await reader_over(b"abc", b"defXYZ"), "length", 6) == b"abcdef"
    assert await read_body(await reader_over(b"abc", b"def"), "close") == b"abcdef"
    assert await read_body(await reader_over(b"ignored"), "none") == b""


@pytest.mark.parametrize(
    ("raw", "framing", "length", "message"),
    [
        (b"5\r\nhel", "chunked", 0, "middle of the response body"),
        (b"zz\r\nhello\r\n", "chunked", 0, "bad chunk size"),
        (b"5\r\nhelloXX0\r\n\r\n", "chunked", 0, "not followed by CRLF"),
        (b"3\r\nabc\r\n", "chunked", 0, "middle of a chunked body"),
        (b"abc", "length", 10, "middle of the response body"),
    ],
)
async def test_truncated_or_bad_bodies_raise_http_error(raw, framing, length, message):
    with pytest.raises(HttpError, match=message):
        await read_body(await reader_over(raw), framing, length)


async def test_heads():
    reader = await reader_over(b"GET /x HTTP/1.1\r\nLast-Event-ID: 3\r\n", b"Host: h\r\n\r\nbody")
    head = await reader.read_head()
    assert head is not None
    request = RequestHead.parse(head)
    assert (request.method, request.target, request.get("last-event-id")) == ("GET", "/x", "3")
    assert request.get("missing") is None
    assert await reader.read_some(100) == b"body"
    assert await (await reader_over()).read_head() is None
    with pytest.raises(HttpError, match="in the middle of an HTTP head"):
        await (await reader_over(b"GET / HTTP/1.1\r\n")).read_head()
    with pytest.raises(HttpError, match="longer than"):
        await (await reader_over(b"x" * (MAX_HEAD + 10))).read_head()
    for bad in (b"GET /\r\n\r\n", b"GET / HTTP/1.1\r\nno colon\r\n\r\n", b"\r\n\r\n"):
        with pytest.raises(HttpError):
            RequestHead.parse(bad)
    with pytest.raises(HttpError, match="status line"):
        ResponseHead.parse(b"HTTP/1.1 OK\r\n\r\n")


@pytest.mark.parametrize(
    ("head", "method", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", ("chunked", 0)),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", "GET", ("length", 12)),
        (b"HTTP/1.1 200 OK\r\n\r\n", "GET", ("close", 0)),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", "HEAD", ("none", 0)),
        (b"HTTP/1.1 204 No Content\r\n\r\n", "DELETE", ("none", 0)),
    ],
)
def test_body_framing(head, method, expected):
    assert body_framing(ResponseHead.parse(head), method) == expected


def test_status_response_is_complete_json():
    raw = status_response(429, retry_after=2.0, message=None)
    head, _, body = raw.partition(b"\r\n\r\n")
    response = ResponseHead.parse(head + b"\r\n\r\n")
    assert response.status_line == "HTTP/1.1 429 Too Many Requests"
    assert response.get("retry-after") == "2"
    assert response.get("content-length") == str(len(body))
    assert "429" in json.loads(body)["error"]
    assert b"Retry-After" not in status_response(503, retry_after=None, message="x")
    assert ResponseHead.parse(status_response(599, retry_after=0.5, message="m")).status == 599
