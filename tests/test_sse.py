"""Unit tests for arkor_trio.sse: one group per WHATWG event-stream rule."""

from __future__ import annotations

import attrs
import pytest

import arkor_trio.sse as sse_module
from arkor_trio._errors import ConfigError, FrameTooLarge
from arkor_trio.sse import SSEDecoder, SSEFrame


def decode(*chunks: bytes, max_frame_bytes: int = 1_048_576) -> tuple[list[SSEFrame], SSEDecoder]:
    decoder = SSEDecoder(max_frame_bytes)
    frames: list[SSEFrame] = []
    for chunk in chunks:
        frames += decoder.feed(chunk)
    return frames, decoder


def frames_of(*chunks: bytes) -> list[SSEFrame]:
    return decode(*chunks)[0]


def test_all_is_sorted_and_public() -> None:
    assert sse_module.__all__ == sorted(sse_module.__all__)
    assert set(sse_module.__all__) == {"SSEDecoder", "SSEFrame"}


def test_frame_defaults_and_immutability() -> None:
    frame = SSEFrame("message", "x")
    assert (frame.id, frame.retry) == (None, None)
    with pytest.raises(AttributeError):
        frame.data = "y"  # type: ignore[misc]  # frozen on purpose: this must fail


def test_fast_frame_constructor_matches_attrs() -> None:
    # The decoder builds frames without SSEFrame.__init__; a new field or a validator must
    # show up here first.
    fields = attrs.fields(SSEFrame)
    assert [f.name for f in fields] == ["event", "data", "id", "retry", "last_event_id"]
    assert all(f.validator is None and f.converter is None for f in fields)
    assert not hasattr(SSEFrame, "__attrs_post_init__")
    for args in [("e", "d", "i", 5, "i"), ("message", "", None, None, "")]:
        fast = sse_module._frame(*args)
        assert type(fast) is SSEFrame
        assert fast == SSEFrame(*args)
        assert fast.last_event_id == SSEFrame(*args).last_event_id
        assert hash(fast) == hash(SSEFrame(*args))
        assert repr(fast) == repr(SSEFrame(*args))


def test_last_event_id_is_the_persistent_id_at_dispatch() -> None:
    frames, _ = decode(b"id: 7\ndata: a\n\ndata: b\n\nid\ndata: c\n\nid: 9\n\ndata: d\n\n")
    assert [(f.data, f.id, f.last_event_id) for f in frames] == [
        ("a", "7", "7"),
        ("b", None, "7"),
        ("c", "", ""),
        ("d", None, "9"),  # an id-only block moves it without a frame
    ]
    # positional construction keeps working, and equality is about the block's own fields
    assert SSEFrame("message", "b") == frames[1]
    assert SSEFrame("message", "b", None, None, "7").last_event_id == "7"


# --- field parsing ---------------------------------------------------------------------------


def test_simple_frame() -> None:
    assert frames_of(b"data: hello\n\n") == [SSEFrame("message", "hello")]


@pytest.mark.parametrize(
    ("line", "data"),
    [
        (b"data:x", "x"),
        (b"data: x", "x"),
        (b"data:  x", " x"),
        (b"data: x ", "x "),
        (b"data:", ""),
        (b"data: ", ""),
        (b"data", ""),
        (b"data::x", ":x"),
        (b"data: a: b", "a: b"),
    ],
)
def test_one_leading_space_is_removed(line: bytes, data: str) -> None:
    assert frames_of(line + b"\n\n") == [SSEFrame("message", data)]


def test_data_alone_dispatches_an_empty_frame() -> None:
    assert frames_of(b"data\n\n") == [SSEFrame("message", "")]


def test_multi_line_data_is_joined_with_lf() -> None:
    assert frames_of(b"data: a\ndata: b\ndata:c\n\n") == [SSEFrame("message", "a\nb\nc")]
    # Only one trailing LF is stripped: an empty last data line keeps its separator.
    assert frames_of(b"data: a\ndata\n\n") == [SSEFrame("message", "a\n")]
    assert frames_of(b"data\ndata\n\n") == [SSEFrame("message", "\n")]


def test_comments_are_ignored() -> None:
    assert frames_of(b": hello\ndata: x\n:\n: data: y\n\n") == [SSEFrame("message", "x")]
    assert frames_of(b": only a comment\n\n") == []
    assert frames_of(b":\n\n:ping\n\n") == []


def test_unknown_fields_are_ignored() -> None:
    stream = b"foo: bar\nDATA: no\ndata : no\nDat: no\n data: no\nevent2: no\ndata: yes\n\n"
    assert frames_of(stream) == [SSEFrame("message", "yes")]
    assert frames_of(b"foo: bar\n\n") == []


def test_field_name_without_colon_has_empty_value() -> None:
    frames, decoder = decode(b"event\nid\ndata\n\n")
    assert frames == [SSEFrame("message", "", id="")]
    assert decoder.last_event_id == ""


# --- event type ------------------------------------------------------------------------------


def test_event_type_and_default() -> None:
    assert frames_of(b"event: add\ndata: 1\n\n") == [SSEFrame("add", "1")]
    assert frames_of(b"event:\ndata: 1\n\n") == [SSEFrame("message", "1")]
    assert frames_of(b"event: a\nevent: b\ndata: 1\n\n") == [SSEFrame("b", "1")]


def test_event_type_resets_after_every_block() -> None:
    assert frames_of(b"event: a\ndata: 1\n\ndata: 2\n\n") == [
        SSEFrame("a", "1"),
        SSEFrame("message", "2"),
    ]
    # Also after a block that dispatched nothing.
    assert frames_of(b"event: a\n\ndata: 2\n\n") == [SSEFrame("message", "2")]


# --- id --------------------------------------------------------------------------------------


def test_id_only_block_moves_last_event_id_without_a_frame() -> None:
    frames, decoder = decode(b"id: 42\n\n")
    assert frames == []
    assert decoder.last_event_id == "42"


def test_last_event_id_persists_but_frame_id_is_the_blocks_own() -> None:
    frames, decoder = decode(b"id: 1\ndata: a\n\ndata: b\n\n")
    assert frames == [SSEFrame("message", "a", id="1"), SSEFrame("message", "b")]
    assert decoder.last_event_id == "1"


def test_last_valid_id_of_a_block_wins() -> None:
    frames, decoder = decode(b"id: 1\nid: 2\ndata: a\n\n")
    assert frames == [SSEFrame("message", "a", id="2")]
    assert decoder.last_event_id == "2"


def test_empty_id_resets_last_event_id() -> None:
    frames, decoder = decode(b"id: 1\n\nid:\ndata: a\n\n")
    assert frames == [SSEFrame("message", "a", id="")]
    assert decoder.last_event_id == ""


def test_id_with_nul_is_ignored() -> None:
    frames, decoder = decode(b"id: 1\n\nid: a\x00b\ndata: x\n\n")
    assert frames == [SSEFrame("message", "x")]
    assert decoder.last_event_id == "1"
    # A valid id earlier in the same block survives an invalid later one.
    frames, decoder = decode(b"id: 2\nid: \x00\ndata: y\n\n")
    assert frames == [SSEFrame("message", "y", id="2")]
    assert decoder.last_event_id == "2"


def test_id_of_an_unfinished_block_does_not_apply() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 1\ndata: a\n\nid: 2\ndata: b\n") == [SSEFrame("message", "a", id="1")]
    assert decoder.last_event_id == "1"  # deliberate: not "2" until the blank line
    assert decoder.close() == []
    assert decoder.last_event_id == "1"


# --- retry -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("1000", 1000), ("0", 0), ("007", 7)])
def test_retry_valid(value: str, expected: int) -> None:
    frames, decoder = decode(f"retry: {value}\ndata: x\n\n".encode())
    assert frames == [SSEFrame("message", "x", retry=expected)]
    assert decoder.retry == expected


@pytest.mark.parametrize(
    "value",
    ["+1", " 1", "1 ", "-1", "1_0", "1.5", "", "1e3", "0x10", "\u0661\u0662", "\uff11", "\u00b2"],
)
def test_retry_invalid_is_ignored(value: str) -> None:
    frames, decoder = decode(f"retry: {value}\ndata: x\n\n".encode())
    assert frames == [SSEFrame("message", "x")]
    assert decoder.retry is None


def test_retry_without_colon_is_ignored() -> None:
    assert decode(b"retry\ndata\n\n")[1].retry is None


def test_retry_only_block_sets_retry_without_a_frame() -> None:
    frames, decoder = decode(b"retry: 2500\n\n")
    assert frames == []
    assert decoder.retry == 2500


def test_retry_applies_when_its_line_is_parsed() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"retry: 5") == []
    assert decoder.retry is None  # line not finished yet
    assert decoder.feed(b"\n") == []
    assert decoder.retry == 5  # no blank line needed
    assert decoder.close() == []
    assert decoder.retry == 5


def test_invalid_retry_keeps_the_last_valid_one() -> None:
    frames, decoder = decode(b"retry: 5\nretry: x\ndata\n\ndata\n\n")
    assert frames == [SSEFrame("message", "", retry=5), SSEFrame("message", "")]
    assert decoder.retry == 5


def test_absurdly_long_retry_saturates_not_an_error() -> None:
    # More digits than int() accepts: the largest value it could hold (the reconnect rules cap
    # any retry at ReconnectPolicy.max_delay), never an error and never "no retry at all".
    frames, decoder = decode(b"retry: " + b"9" * 5000 + b"\ndata\n\n")
    assert frames == [SSEFrame("message", "", retry=10**4300 - 1)]
    assert decoder.retry == 10**4300 - 1
    # Leading zeros are not significant.
    assert decode(b"retry: " + b"0" * 5000 + b"12\n\n")[1].retry == 12


# --- BOM -------------------------------------------------------------------------------------

BOM = "\ufeff".encode()


def test_leading_bom_is_stripped() -> None:
    assert frames_of(BOM + b"data: x\n\n") == [SSEFrame("message", "x")]


@pytest.mark.parametrize("split", [1, 2, 3])
def test_leading_bom_split_across_chunks(split: int) -> None:
    stream = BOM + b"data: x\n\n"
    assert frames_of(stream[:split], stream[split:]) == [SSEFrame("message", "x")]
    assert frames_of(*(bytes([b]) for b in stream)) == [SSEFrame("message", "x")]


def test_empty_chunks_before_the_bom() -> None:
    assert frames_of(b"", b"", BOM[:1], b"", BOM[1:], b"data: x\n\n") == [SSEFrame("message", "x")]


def test_only_one_bom_is_stripped() -> None:
    # The second BOM is part of the field name, which makes the field unknown.
    assert frames_of(BOM + BOM + b"data: x\n\n") == []


def test_bom_later_is_data() -> None:
    assert frames_of(b"data: a\n\n" + BOM + b"data: b\n\n") == [SSEFrame("message", "a")]
    assert frames_of(b"data: " + BOM + b"x\n\n") == [SSEFrame("message", "\ufeffx")]


def test_partial_bom_is_not_a_bom() -> None:
    # EF BB followed by ASCII is an invalid sequence: U+FFFD, then "data", an unknown field.
    assert frames_of(b"\xef\xbb", b"data: x\n\n") == []
    assert frames_of(b"\xef\xbbdata: x\n\ndata: y\n\n") == [SSEFrame("message", "y")]


def test_pending_bom_bytes_are_counted_and_discarded_on_close() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"\xef\xbb") == []
    assert decoder.pending_bytes == 2
    assert decoder.close() == []
    assert decoder.pending_bytes == 0


# --- line ends -------------------------------------------------------------------------------


@pytest.mark.parametrize("end", [b"\n", b"\r", b"\r\n"])
def test_every_line_end(end: bytes) -> None:
    stream = b"data: a" + end + b"data: b" + end + end + b"data: c" + end + end
    assert frames_of(stream) == [SSEFrame("message", "a\nb"), SSEFrame("message", "c")]


def test_mixed_line_ends() -> None:
    assert frames_of(b"data: a\rdata: b\r\ndata: c\n\r\n") == [SSEFrame("message", "a\nb\nc")]
    # CR, then CRLF: two line ends, so a dispatch.
    assert frames_of(b"data: a\r\r\ndata: b\n\n") == [
        SSEFrame("message", "a"),
        SSEFrame("message", "b"),
    ]
    # LF CR is two line ends too.
    assert frames_of(b"data: a\n\rdata: b\n\n") == [
        SSEFrame("message", "a"),
        SSEFrame("message", "b"),
    ]


def test_crlf_split_between_chunks_is_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r") == []
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\r") == [SSEFrame("message", "a\nb")]
    assert decoder.feed(b"\n") == []  # completes the CRLF of the blank line: not another line


def test_cr_then_empty_chunk_then_lf() -> None:
    assert frames_of(b"data: a\r", b"", b"\n", b"data: b\n\n") == [SSEFrame("message", "a\nb")]


def test_cr_at_chunk_end_followed_by_cr_is_a_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\r") == [SSEFrame("message", "a")]


def test_lone_lf_chunk_after_cr_is_not_a_blank_line() -> None:
    assert frames_of(b"data: a\r", b"\n", b"data: b\n\n") == [SSEFrame("message", "a\nb")]


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x0b", "\x0c", "\x85", "\x1c", "\x1e"])
def test_other_separators_stay_inside_values(char: str) -> None:
    stream = f"event: a{char}b\ndata: x{char}y\n\n".encode()
    assert frames_of(stream) == [SSEFrame(f"a{char}b", f"x{char}y")]


# --- UTF-8 -----------------------------------------------------------------------------------


def test_multibyte_characters_split_at_every_position() -> None:
    stream = "event: é\ndata: €😀 ж\nid: ☃\n\n".encode()
    expected = [SSEFrame("é", "€😀 ж", id="☃")]
    for cut in range(len(stream) + 1):
        assert frames_of(stream[:cut], stream[cut:]) == expected, cut
    assert frames_of(*(bytes([b]) for b in stream)) == expected


def test_invalid_utf8_is_replaced() -> None:
    assert frames_of(b"data: a\xffb\xfe\n\n") == [SSEFrame("message", "a\ufffdb\ufffd")]
    # A truncated sequence at the end of a line: one U+FFFD, the same as decoding the whole body.
    stream = b"data: \xe2\x82\ndata: \xf0\x9f\x98\n\n"
    assert frames_of(stream) == [SSEFrame("message", "\ufffd\n\ufffd")]
    assert stream.decode("utf-8", "replace") == "data: \ufffd\ndata: \ufffd\n\n"


def test_nul_is_ordinary_in_data_and_event() -> None:
    assert frames_of(b"event: a\x00\ndata: \x00\n\n") == [SSEFrame("a\x00", "\x00")]


# --- end of stream ---------------------------------------------------------------------------


def test_close_discards_an_unterminated_block() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 7\nevent: e\ndata: x\n") == []
    assert decoder.close() == []
    assert decoder.last_event_id == ""


def test_close_discards_an_unterminated_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\n\ndata: y") == [SSEFrame("message", "x")]
    assert decoder.close() == []


def test_close_starts_a_new_stream_keeping_id_and_retry() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"retry: 9\nid: 3\n\nevent: half\ndata: lost\n") == []
    assert decoder.close() == []
    # The next connection: a BOM is stripped again, the old block is gone.
    assert decoder.feed(BOM + b"data: new\n\n") == [SSEFrame("message", "new")]
    assert (decoder.last_event_id, decoder.retry) == ("3", 9)


# --- buffering and limits --------------------------------------------------------------------


def test_pending_bytes() -> None:
    decoder = SSEDecoder()
    assert decoder.pending_bytes == 0
    decoder.feed(b"data: abc\nda")
    assert decoder.pending_bytes == 4 + 2  # "abc" + its LF, then the partial line
    decoder.feed(b"ta: d\n: a comment\nevent: e\n")
    assert decoder.pending_bytes == 4 + 2
    decoder.feed(b"\n")
    assert decoder.pending_bytes == 0


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "10"])
def test_bad_max_frame_bytes(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        SSEDecoder(value)  # type: ignore[arg-type]  # wrong types on purpose
    assert info.value.field == "max_frame_bytes"


def test_frame_too_large_on_one_line() -> None:
    decoder = SSEDecoder(max_frame_bytes=10)
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(b"data: 0123456789\n\n")
    assert info.value.limit == 10


def test_frame_exactly_at_the_limit_passes() -> None:
    # The line "data: 1234" is 10 bytes; the block then holds "1234" + LF = 5 bytes.
    frames, _ = decode(b"data: 1234\n\n", max_frame_bytes=10)
    assert frames == [SSEFrame("message", "1234")]
    frames, _ = decode(b"data: 1234\ndata\n\n", max_frame_bytes=10)
    assert frames == [SSEFrame("message", "1234\n")]


def test_frame_too_large_across_data_lines() -> None:
    with pytest.raises(FrameTooLarge):
        decode(b"data: abcd\ndata: efgh\n\n", max_frame_bytes=10)


def test_frame_too_large_on_a_partial_line_fed_byte_by_byte() -> None:
    decoder = SSEDecoder(max_frame_bytes=10)
    for byte in b"data: 0123":
        assert decoder.feed(bytes([byte])) == []
    assert decoder.pending_bytes == 10
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"4")


def test_frame_too_large_on_a_long_comment_line() -> None:
    with pytest.raises(FrameTooLarge):
        decode(b": " + b"x" * 20 + b"\n", max_frame_bytes=10)


def test_many_small_frames_never_hit_the_limit() -> None:
    frames, decoder = decode(b"event: e\ndata: 12\n\n" * 1000, max_frame_bytes=10)
    assert len(frames) == 1000
    assert decoder.pending_bytes == 0


def test_frame_too_large_rolls_back_last_event_id_and_sticks() -> None:
    decoder = SSEDecoder(max_frame_bytes=20)
    assert decoder.feed(b"id: 1\ndata: a\n\n") == [SSEFrame("message", "a", id="1")]
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"id: 2\ndata: b\n\ndata: " + b"x" * 30 + b"\n\n")
    # Frame "b" was never returned, so the resume position must stay before it.
    assert decoder.last_event_id == "1"
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"data: ok\n\n")
    assert decoder.close() == []
    assert decoder.feed(b"data: ok\n\n") == [SSEFrame("message", "ok")]


def test_overflow_on_the_trailing_partial_line_also_rolls_back() -> None:
    decoder = SSEDecoder(max_frame_bytes=20)
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"id: 1\ndata: a\n\ndata: " + b"x" * 30)
    assert decoder.last_event_id == ""


def test_long_line_in_small_chunks_is_linear() -> None:
    # 2 MiB in 64-byte chunks: 32768 feeds. Quadratic re-buffering would take minutes here.
    size = 2 * 1024 * 1024
    decoder = SSEDecoder(max_frame_bytes=4 * 1024 * 1024)
    piece = b"x" * 64
    assert decoder.feed(b"data: ") == []
    for _ in range(size // 64):
        assert decoder.feed(piece) == []
    assert decoder.pending_bytes == size + 6
    (frame,) = decoder.feed(b"\n\n")
    assert len(frame.data) == size
    assert decoder.pending_bytes == 0


def test_an_endless_block_of_id_lines_is_bounded_by_max_frame_bytes() -> None:
    """Issue 18 item 11: ``id:`` lines (and other non-data fields) of one block used to be
    free: 200 MB of them were read in 15 s with no error. They count towards the limit now."""
    decoder = SSEDecoder(max_frame_bytes=1024)
    assert decoder.feed(b"id: 12345678\n" * 50) == []  # 650 bytes of one block: within it
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"id: 12345678\n" * 50)  # 1,300 bytes of one block, never ended
    assert decoder.pending_bytes == 0  # it held nothing: the bound is on the block, not memory
    decoder.close()
    # Below the limit, the same lines are an ordinary block.
    assert decoder.feed(b"id: 1\nevent: e\nretry: 5\nx: y\ndata: d\n\n")[0].id == "1"
