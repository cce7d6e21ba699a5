"""Property tests for arkor_trio.sse: chunking never matters, and a spec reference agrees."""

from __future__ import annotations

import itertools
import re

from hypothesis import given
from hypothesis import strategies as st

from arkor_trio._errors import FrameTooLarge
from arkor_trio.sse import SSEDecoder, SSEFrame

# --- a tiny reference: whole body in, the WHATWG steps one line at a time -------------------

_LINE_END = re.compile(r"\r\n|\r|\n")
_ASCII_DIGITS = re.compile(r"[0-9]+")


class Reference:
    """The spec text, transcribed. Slow and obvious; decodes a complete body at once."""

    def __init__(self, body: bytes, max_frame_bytes: int | None = None) -> None:
        self.frames: list[SSEFrame] = []
        self.last_event_id = ""
        self.retry: int | None = None
        self.too_large = False
        text = body.decode("utf-8", errors="replace")
        text = text.removeprefix("\ufeff")
        lines = _LINE_END.split(text)
        complete = lines[:-1]  # the last piece has no line end
        data = ""
        data_bytes = 0  # the data buffer in UTF-8 bytes, as the decoder counts it
        other_bytes = 0  # the block's other field lines (id, event, retry, unknown), ends included
        event = ""
        block_id: str | None = None
        block_retry: int | None = None
        for number, line in enumerate(lines):
            if max_frame_bytes is not None and data_bytes + len(line.encode()) > max_frame_bytes:
                self.too_large = True
                return
            if number == len(complete):
                return  # end of stream: the unfinished line and block are discarded
            if line == "":
                if block_id is not None:
                    self.last_event_id = block_id
                if data:
                    self.frames.append(
                        SSEFrame(
                            event or "message",
                            data[:-1],
                            id=block_id,
                            retry=block_retry,
                            last_event_id=self.last_event_id,
                        )
                    )
                data, data_bytes, event, block_id, block_retry = "", 0, "", None, None
                other_bytes = 0
                continue
            if line.startswith(":"):
                continue
            if ":" in line:
                name, value = line.split(":", 1)
                value = value.removeprefix(" ")
            else:
                name, value = line, ""
            if name != "data":
                other_bytes += len(line.encode()) + 1
                if max_frame_bytes is not None and other_bytes > max_frame_bytes:
                    self.too_large = True
                    return
            if name == "event":
                event = value
            elif name == "data":
                data += value + "\n"
                data_bytes += len(value.encode()) + 1
            elif name == "id":
                if "\x00" not in value:
                    block_id = value
            elif name == "retry" and _ASCII_DIGITS.fullmatch(value):
                block_retry = self.retry = int(value)


# --- a grammar of event streams --------------------------------------------------------------

_TRICKY = [
    "\u2028",
    "\u2029",
    "\x00",
    "\x0b",
    "\x0c",
    "\x85",
    "\ufeff",
    "\u0661",
    "\uff11",
    "\u00b2",
    "0",
    "7",
    " ",
    ":",
    "é",
    "😀",
]
_TRICKY_BYTES = [c.encode() for c in _TRICKY]
# Invalid UTF-8: truncated sequences, stray continuation bytes, a BOM cut short.
_JUNK = [b"\xff", b"\xe2\x82", b"\xc3", b"\xef\xbb", b"\xf0\x9f\x98", b"\x80"]
# Weighted towards the fields that matter; "Data", "data " and "x" are unknown fields.
_NAMES = [b"data", b"data", b"event", b"id", b"id", b"id", b"retry", b"retry"]
_NAMES += [b"Data", b"data ", b"x"]
_any_text = st.text(
    alphabet=st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]),
    min_size=1,
    max_size=4,
).map(str.encode)
_number = st.integers(0, 99_999).map(lambda n: str(n).encode())


def _value(valid_only: bool) -> st.SearchStrategy[bytes]:
    atom = st.sampled_from(_TRICKY_BYTES if valid_only else _TRICKY_BYTES + _JUNK)
    special = st.sampled_from([b"\x00", b" ", b"1", b"\xe2\x80\xa8"])
    mixed = st.lists(atom | special | _any_text | _number, min_size=1, max_size=4).map(b"".join)
    return st.just(b"") | _number | mixed


def _line(valid_only: bool) -> st.SearchStrategy[bytes]:
    value = _value(valid_only)
    name = st.sampled_from(_NAMES) | value
    separator = st.sampled_from([b":", b": ", b":  "])
    return st.one_of(
        st.just(b""),  # blank line: dispatch
        st.just(b""),
        st.builds(lambda n, sep, v: n + sep + v, st.sampled_from(_NAMES), separator, value),
        st.builds(lambda n, sep, v: n + sep + v, st.sampled_from(_NAMES), separator, value),
        st.builds(lambda n, sep, v: n + sep + v, name, separator, value),
        name,  # a field name without a colon
        value.map(lambda v: b":" + v),  # a comment
    )


@st.composite
def streams(draw: st.DrawFn, *, valid_only: bool = False) -> bytes:
    """An event stream: optional BOM, blocks of lines with random line ends, maybe a cut tail."""
    blocks = draw(st.lists(st.lists(_line(valid_only), max_size=5), max_size=8))
    lines = [line for block in blocks for line in [*block, b""]]
    ends = st.sampled_from([b"\n", b"\r", b"\r\n"])
    body = b"".join(line + draw(ends) for line in lines)
    head = draw(st.sampled_from([b"", b"", b"\xef\xbb\xbf", b"\xef\xbb\xbf\xef\xbb\xbf"]))
    tail = draw(st.sampled_from([b"", b"", b"data: cut", b"id: 99", b"\r"]))
    return head + body + tail


@st.composite
def chunkings(draw: st.DrawFn, body: bytes) -> list[bytes]:
    """The body cut at random points, with some empty chunks."""
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=12)))
    bounds = [0, *cuts, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(bounds)]


def _decode(
    chunks: list[bytes], max_frame_bytes: int = 1_048_576
) -> tuple[list[SSEFrame], SSEDecoder]:
    decoder = SSEDecoder(max_frame_bytes)
    frames: list[SSEFrame] = []
    for chunk in chunks:
        frames += decoder.feed(chunk)
    frames += decoder.close()
    return frames, decoder


# --- properties ------------------------------------------------------------------------------


@given(st.data())
def test_chunking_never_matters(data: st.DataObject) -> None:
    body = data.draw(streams())
    chunks = data.draw(chunkings(body))
    whole, whole_decoder = _decode([body])
    expected = (whole, whole_decoder.last_event_id, whole_decoder.retry)
    split, split_decoder = _decode(chunks)
    assert (split, split_decoder.last_event_id, split_decoder.retry) == expected
    single, single_decoder = _decode([body[i : i + 1] for i in range(len(body))])
    assert (single, single_decoder.last_event_id, single_decoder.retry) == expected


@given(st.data())
def test_agrees_with_the_reference(data: st.DataObject) -> None:
    body = data.draw(streams())
    chunks = data.draw(chunkings(body))
    reference = Reference(body)
    frames, decoder = _decode(chunks)
    assert frames == reference.frames
    assert decoder.last_event_id == reference.last_event_id
    assert decoder.retry == reference.retry


@given(st.data(), st.integers(1, 51))
def test_frame_limit_is_chunking_independent(data: st.DataObject, limit: int) -> None:
    body = data.draw(streams(valid_only=True))
    # Often end on a line too long for any limit: the overflow then hits a partial line.
    body += data.draw(st.sampled_from([b"", b": " + b"z" * 50]))
    chunks = data.draw(chunkings(body))
    reference = Reference(body, max_frame_bytes=limit)
    decoder = SSEDecoder(limit)
    frames: list[SSEFrame] = []
    raised = False
    for chunk in chunks:
        id_before = decoder.last_event_id
        try:
            frames += decoder.feed(chunk)
        except FrameTooLarge:
            raised = True
            # Nothing this call decoded was returned, so the resume position did not move.
            assert decoder.last_event_id == id_before
            break
    assert raised == reference.too_large
    if raised:
        assert frames == reference.frames[: len(frames)]
    else:
        assert frames == reference.frames
        assert decoder.last_event_id == reference.last_event_id


# --- the decoder's fast path (whole common blocks) agrees with the reference -----------------

_common_block = st.builds(
    lambda i, e, d: (
        (f"id:{i}\n" if i is not None else "")
        + (f"event: {e}\n" if e is not None else "")
        + f"data: {d}\n\n"
    ),
    st.none() | st.text(alphabet="ab 1\x00é", max_size=4),
    st.none() | st.text(alphabet="xy ", max_size=3),
    st.text(alphabet="pq {}:é", max_size=6),
)
_odd_block = st.sampled_from(
    [
        ": comment\n\n",
        "retry: 7\ndata: r\n\n",
        "data: a\ndata: b\n\n",
        "data: c\nid: 9\n\n",
        "id: only\n\n",
        "\n",
        "event: e\n\n",
        "datum: x\n\n",
        "data\n\n",
    ]
)


@given(
    blocks=st.lists(_common_block | _odd_block, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
)
def test_common_blocks_decode_as_the_reference_does(blocks, cuts, newline):
    body = "".join(blocks).replace("\n", newline).encode()
    expected = Reference(body)
    decoder = SSEDecoder()
    got: list[SSEFrame] = []
    previous = 0
    for cut in [*sorted(c % (len(body) + 1) for c in cuts), len(body)]:
        got += decoder.feed(body[previous:cut])
        previous = cut
    assert got == expected.frames
    assert [f.last_event_id for f in got] == [f.last_event_id for f in expected.frames]
    assert decoder.last_event_id == expected.last_event_id
