"""``open_sse`` on a plain SSE feed (real sockets): the cursor commit rule, headers callables,
204, ``is_final``, the frame-too-large rule, ``SSEFrame.last_event_id``, statuses, a large replay.

The feed (:mod:`tests.sse_feed_server`) serves events 1..total after the request's
``Last-Event-ID`` and a 204 once the client resumes from the last one; ``server.script`` gives
the next connections other answers. Every test is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import gzip
import time
from typing import TYPE_CHECKING, Any

import pytest
import trio

from arkor_trio import ApiError, ConfigError, FrameTooLarge, ReconnectsExhausted, StreamError
from arkor_trio.sse import SSEFrame
from arkor_trio.stream import FileCursorStore, ReconnectPolicy, open_sse
from tests.sse_feed_server import Feed, Reply, open_feed_server, payload

if TYPE_CHECKING:
    from collections.abc import Callable

FAST = ReconnectPolicy(initial_delay=0.01, max_delay=0.05, idle_timeout=5.0)
BOUND = 10.0
SSE = {"Content-Type": "text/event-stream"}


async def follow(url: str, **kwargs: Any) -> list[SSEFrame]:
    """Every frame of ``open_sse(url, **kwargs)`` until iteration ends."""
    kwargs.setdefault("policy", FAST)
    with trio.fail_after(BOUND):
        async with open_sse(url, **kwargs) as stream:
            return [frame async for frame in stream]


async def follow_into(
    delivered: list[SSEFrame],
    url: str,
    on_frame: Callable[[SSEFrame], None] | None = None,
    **kwargs: Any,
) -> None:
    """Append every frame to ``delivered`` (then call ``on_frame``) until iteration ends."""
    kwargs.setdefault("policy", FAST)
    with trio.fail_after(BOUND):
        async with open_sse(url, **kwargs) as stream:
            async for frame in stream:
                delivered.append(frame)
                if on_frame is not None:
                    on_frame(frame)


def ids(frames: list[SSEFrame]) -> list[str | None]:
    return [f.id for f in frames]


def numbers(first: int, last: int) -> list[str]:
    return [str(n) for n in range(first, last + 1)]


# --- the cursor commit rule ------------------------------------------------------------------


async def test_a_frame_is_committed_when_the_next_is_asked_for(tmp_path):
    store = FileCursorStore(tmp_path / "cursors.json")
    saved: list[str | None] = []
    async with open_feed_server(total=5) as server:
        with trio.fail_after(BOUND):
            async with open_sse(server.feed_url, cursor_store=store, policy=FAST) as stream:
                async for frame in stream:
                    # While the body handles a frame, the store holds the one before it.
                    saved.append(FileCursorStore(store.path).peek(server.feed_url).id)
                    assert stream.committed == saved[-1]
                    assert stream.cursor == frame.last_event_id
                    assert frame.id is not None
    assert saved == [None, "1", "2", "3", "4"]
    # Leaving the block normally (the 204 ended iteration) committed the last frame.
    assert FileCursorStore(store.path).peek(server.feed_url).id == "5"


async def test_leaving_the_block_normally_commits_the_frame_being_handled(tmp_path):
    store = FileCursorStore(tmp_path / "cursors.json")
    async with open_feed_server(total=10) as server:
        with trio.fail_after(BOUND):
            async with open_sse(server.feed_url, cursor_store=store, cursor_key="k") as stream:
                async for frame in stream:
                    if frame.id == "3":
                        break
        assert FileCursorStore(store.path).peek("k").id == "3"
        assert stream.committed == stream.cursor == "3"
        # A restart with the same store (a new process: a new store on the file) resumes
        # after the last committed frame.
        restarted = FileCursorStore(store.path)
        frames = await follow(server.feed_url, cursor_store=restarted, cursor_key="k")
        assert ids(frames) == numbers(4, 10)
        assert server.last_event_ids() == [None, "3", "10"]
        assert FileCursorStore(store.path).peek("k").id == "10"


async def test_a_frame_whose_body_raised_is_not_committed(tmp_path):
    store = FileCursorStore(tmp_path / "cursors.json")

    class Boom(Exception):
        pass

    def boom_at_3(frame: SSEFrame) -> None:
        if frame.id == "3":
            raise Boom

    delivered: list[SSEFrame] = []
    async with open_feed_server(total=10) as server:
        with pytest.raises(Boom):
            await follow_into(delivered, server.feed_url, boom_at_3, cursor_store=store)
        assert ids(delivered) == ["1", "2", "3"]
        assert FileCursorStore(store.path).peek(server.feed_url).id == "2"
        # The restart sees the frame being handled again (at most that one), then the rest.
        frames = await follow(server.feed_url, cursor_store=FileCursorStore(store.path))
        assert ids(frames) == numbers(3, 10)
        assert server.last_event_ids() == [None, "2", "10"]


async def test_an_explicit_last_event_id_wins_over_the_store(tmp_path):
    store = FileCursorStore(tmp_path / "cursors.json")
    store.save("feed", "2")
    async with open_feed_server(total=6) as server:
        frames = await follow(
            server.feed_url, cursor_store=store, cursor_key="feed", last_event_id="4"
        )
        assert ids(frames) == ["5", "6"]
        assert server.last_event_ids() == ["4", "6"]
        assert store.peek("feed").id == "6"


# --- headers: a mapping or a callable, called per connection ------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_headers_callable_is_called_once_per_connection(kind):
    calls: list[int] = []

    def sync_headers() -> dict[str, str]:
        calls.append(len(calls) + 1)
        return {"Authorization": f"Bearer token-{len(calls)}"}

    async def async_headers() -> dict[str, str]:
        await trio.lowlevel.checkpoint()
        return sync_headers()

    headers = sync_headers if kind == "sync" else async_headers
    async with open_feed_server(total=6) as server:
        server.script.extend([Feed(limit=2), Reply(503), Feed(limit=2)])
        frames = await follow(server.feed_url, headers=headers)
        assert ids(frames) == numbers(1, 6)
        seen = [r.headers.get("authorization") for r in server.feed_requests()]
        # Five connections: 2 events, a 503, 2 events, the rest, the 204.
        assert seen == [f"Bearer token-{n}" for n in range(1, 6)]
        assert calls == [1, 2, 3, 4, 5]
        assert server.last_event_ids() == [None, "2", "2", "4", "6"]


async def test_a_headers_callable_returning_no_mapping_is_a_type_error():
    async with open_feed_server(total=2) as server:
        with pytest.raises(TypeError, match="headers must be a mapping"):
            await follow(server.feed_url, headers=lambda: ["Authorization"])
        assert server.requests == []


async def test_params_and_headers_mapping_are_sent():
    async with open_feed_server(total=1) as server:
        await follow(server.feed_url, params={"topic": "a b"}, headers={"X-Client": "t"})
        first = server.feed_requests()[0]
        assert first.query == {"topic": "a b"}
        assert first.headers["x-client"] == "t"
        assert first.headers["accept"] == "text/event-stream"


# --- how a stream ends -----------------------------------------------------------------------


async def test_204_ends_iteration():
    async with open_feed_server(total=5) as server:
        server.script.append(Reply(204))
        assert await follow(server.feed_url) == []
        assert len(server.requests) == 1
        # After events, the 204 of the resumed request ends it too.
        assert ids(await follow(server.feed_url)) == numbers(1, 5)
        assert server.last_event_ids() == [None, None, "5"]


async def test_is_final_ends_iteration_and_no_connection_follows():
    async with open_feed_server(total=10, hold=True) as server:
        with trio.fail_after(BOUND):
            async with open_sse(
                server.feed_url, is_final=lambda f: f.id == "4", policy=FAST
            ) as stream:
                frames = [frame async for frame in stream]
                # Iteration stays over; the held-open connection was not read on.
                with pytest.raises(StopAsyncIteration):
                    await stream.__anext__()
                assert stream.stats.connections == 1
        assert ids(frames) == numbers(1, 4)
        assert server.accepted == 1
        assert len(server.requests) == 1


async def test_is_final_on_the_last_frame_of_a_connection_does_not_reconnect():
    async with open_feed_server(total=3) as server:
        with trio.fail_after(BOUND):
            async with open_sse(server.feed_url, is_final=lambda f: f.id == "3") as stream:
                frames = [frame async for frame in stream]
                # The reader ended with the final frame: nothing is open or reopened.
                assert stream.stats.connections == 1
        assert ids(frames) == numbers(1, 3)
        assert server.accepted == 1


# --- the idle timeout --------------------------------------------------------------------------


IDLE = ReconnectPolicy(initial_delay=0.01, max_delay=0.05, idle_timeout=0.5)


async def test_comments_keep_a_quiet_connection_alive():
    """1.2 s without an event, a comment every 0.1 s: the 0.5 s idle timeout never fires."""
    async with open_feed_server(total=5) as server:
        server.script.append(Feed(quiet_before={4: 1.2}, ping_interval=0.1))
        with trio.fail_after(BOUND):
            async with open_sse(server.feed_url, policy=IDLE) as stream:
                frames = [frame async for frame in stream]
        assert ids(frames) == numbers(1, 5)
        assert stream.stats.connections == 1
        assert server.last_event_ids() == [None, "5"]


async def test_a_silent_connection_is_dropped_after_the_idle_timeout():
    async with open_feed_server(total=5) as server:
        server.script.append(Feed(quiet_before={4: 1.2}))
        with trio.fail_after(BOUND):
            async with open_sse(server.feed_url, policy=IDLE) as stream:
                frames = [frame async for frame in stream]
        assert ids(frames) == numbers(1, 5)
        assert stream.stats.connections == 2
        assert server.last_event_ids() == [None, "3", "5"]
        first, second = server.feed_requests()[:2]
        assert IDLE.idle_timeout <= second.at - first.at < 1.2


# --- SSEFrame.last_event_id --------------------------------------------------------------------


async def test_frames_carry_the_persistent_last_event_id():
    body = b"id: a\ndata: 1\n\ndata: 2\n\nid: b\ndata: 3\n\nid\ndata: 4\n\ndata: 5\n\n"
    async with open_feed_server() as server:
        server.script.extend([Reply(200, SSE, body), Reply(204)])
        frames = await follow(server.feed_url, last_event_id="z")
        got = [(f.data, f.id, f.last_event_id) for f in frames]
        assert got == [
            ("1", "a", "a"),
            ("2", None, "a"),
            ("3", "b", "b"),
            ("4", "", ""),  # an empty id: resets the last event id
            ("5", None, ""),
        ]
        # The empty id was the last one: the reconnect sends no Last-Event-ID.
        assert server.last_event_ids() == ["z", None]
        assert SSEFrame("message", "1", "a") == frames[0]  # positional; lastEventId not in ==


async def test_an_id_less_frame_after_resuming_carries_the_resume_id():
    async with open_feed_server() as server:
        server.script.extend([Reply(200, SSE, b"data: x\n\n"), Reply(204)])
        frames = await follow(server.feed_url, last_event_id="41")
        assert [(f.id, f.last_event_id) for f in frames] == [(None, "41")]
        assert server.last_event_ids() == ["41", "41"]


# --- content encodings -------------------------------------------------------------------------


GZIP_SSE = {"Content-Type": "text/event-stream", "Content-Encoding": "gzip"}


async def test_a_compressed_event_stream_is_decoded():
    """httpx asks for gzip (Accept-Encoding), so a server may well compress the stream."""
    body = gzip.compress(b"id: 1\ndata: compressed\n\nid: 2\ndata: too\n\n")
    async with open_feed_server(total=2) as server:
        server.script.append(Reply(200, GZIP_SSE, body))
        frames = await follow(server.feed_url)
        assert [(f.id, f.data) for f in frames] == [("1", "compressed"), ("2", "too")]
        assert "gzip" in server.requests[0].headers["accept-encoding"]
        assert server.last_event_ids() == [None, "2"]


async def test_a_corrupt_compressed_body_is_a_failure_not_a_crash():
    async with open_feed_server(total=2) as server:
        server.script.append(Reply(200, GZIP_SSE, b"this is not gzip"))
        with trio.fail_after(BOUND):
            async with open_sse(server.feed_url, policy=FAST) as stream:
                frames = [frame async for frame in stream]
        assert ids(frames) == ["1", "2"]  # from the next connection
        assert stream.stats.failures == 1


# --- statuses and content types ------------------------------------------------------------------


async def test_a_default_permanent_status_raises_at_once():
    async with open_feed_server() as server:
        server.script.append(Reply(404, {"Content-Type": "application/json"}, b'{"error":"gone"}'))
        with pytest.raises(ApiError, match="gone") as caught:
            await follow(server.feed_url)
        assert caught.value.status == 404
        assert len(server.requests) == 1


async def test_permanent_statuses_are_configurable():
    # 503 made permanent: raised on the first one.
    permanent = ReconnectPolicy(initial_delay=0.01, max_delay=0.05, permanent_statuses={503})
    async with open_feed_server(total=3) as server:
        server.script.append(Reply(503))
        with pytest.raises(ApiError) as caught:
            await follow(server.feed_url, policy=permanent)
        assert caught.value.status == 503
        assert len(server.requests) == 1
    # No permanent status at all: a 404 and a 401 are retried like a 5xx.
    lenient = ReconnectPolicy(initial_delay=0.01, max_delay=0.05, permanent_statuses=())
    async with open_feed_server(total=3) as server:
        server.script.extend([Reply(404), Reply(401)])
        assert ids(await follow(server.feed_url, policy=lenient)) == numbers(1, 3)
        assert len(server.requests) == 4  # 404, 401, the feed, the 204


@pytest.mark.parametrize("bad", [{200}, {"503"}, {600}, {True}])
def test_permanent_statuses_must_be_error_statuses(bad):
    with pytest.raises(ConfigError, match="permanent_statuses") as caught:
        ReconnectPolicy(permanent_statuses=bad)
    assert caught.value.field == "permanent_statuses"


async def test_a_non_sse_2xx_is_a_stream_error_not_retried():
    async with open_feed_server() as server:
        server.script.append(Reply(200, {"Content-Type": "text/html"}, b"<html>login</html>"))
        with pytest.raises(StreamError, match="text/html") as caught:
            await follow(server.feed_url)
        assert "not text/event-stream" in str(caught.value)
        assert len(server.requests) == 1


async def test_failures_in_a_row_exhaust_max_attempts():
    policy = ReconnectPolicy(initial_delay=0.01, max_delay=0.05, max_attempts=2)
    async with open_feed_server(total=3) as server:
        server.script.extend([Feed(limit=1), Reply(503), Reply(500), Reply(503), Reply(503)])
        delivered: list[SSEFrame] = []
        with pytest.raises(ReconnectsExhausted, match="max_attempts=2") as caught:
            await follow_into(delivered, server.feed_url, policy=policy)
        assert ids(delivered) == ["1"]
        # The first connection made progress; then 503, 500, 503: three opens without progress.
        assert len(server.requests) == 4
        assert isinstance(caught.value.__cause__, ApiError)
        assert caught.value.__cause__.status == 503


# --- the frame-too-large rule ----------------------------------------------------------------


SMALL_FRAMES = ReconnectPolicy(initial_delay=0.01, max_delay=0.05, max_frame_bytes=1024)


async def test_the_same_frame_too_large_twice_in_a_row_is_raised():
    async with open_feed_server(total=10) as server:
        got_2 = trio.Event()
        # Event 3 is written once the client has event 2 (so they are not in one read).
        first = Feed(big=frozenset({3}), big_size=4096, wait_before={3: got_2})
        server.script.extend([first, Reply(503), Feed(big=frozenset({3}), big_size=4096)])
        delivered: list[SSEFrame] = []
        with pytest.raises(FrameTooLarge) as caught:
            await follow_into(
                delivered,
                server.feed_url,
                lambda f: got_2.set() if f.id == "2" else None,
                policy=SMALL_FRAMES,
            )
        assert ids(delivered) == ["1", "2"]
        # Both oversized connections resumed from 2 (a 503 between them resets nothing).
        assert server.last_event_ids() == [None, "2", "2"]
        assert caught.value.limit == 1024
        notes = "\n".join(caught.value.__notes__)
        assert "the frame after id '2'" in notes
        assert "two connections in a row" in notes


async def test_a_frame_too_large_once_then_progress_is_not_raised():
    async with open_feed_server(total=10) as server:
        got_2, got_6 = trio.Event(), trio.Event()
        big = {"big": frozenset({3, 7}), "big_size": 4096}
        # 3 is too large once (after 2), then fine; 7 once (after 6, another resume point).
        server.script.extend(
            [
                Feed(**big, wait_before={3: got_2}),
                Feed(limit=3),
                Feed(**big, wait_before={7: got_6}),
            ]
        )
        delivered: list[str | None] = []
        with trio.fail_after(BOUND):
            async with open_sse(server.feed_url, policy=SMALL_FRAMES) as stream:
                async for frame in stream:
                    delivered.append(frame.id)
                    {"2": got_2, "6": got_6}.get(frame.id or "", trio.Event()).set()
        assert delivered == numbers(1, 10)
        assert server.last_event_ids() == [None, "2", "5", "6", "10"]
        assert stream.stats.connections == 4


async def test_a_frame_too_large_in_the_read_of_earlier_frames():
    """Frames that arrive in the same read as the oversized one are not delivered (the decoder
    rolls the resume point back over them): nothing is lost or repeated, and the rule still
    raises on the second connection that meets the frame at the same resume point."""
    async with open_feed_server(total=10) as server:
        big = Feed(big=frozenset({3}), big_size=4096)  # 1, 2 and 3 in one write
        server.script.extend([big, big])
        frames: list[SSEFrame] = []
        with pytest.raises(FrameTooLarge):
            await follow_into(frames, server.feed_url, policy=SMALL_FRAMES)
        delivered = ids(frames)
        assert delivered == numbers(1, len(delivered))  # a prefix of 1, 2: no gap, no repeat
        assert len(server.requests) == 2
        resumed = server.last_event_ids()[1]
        assert resumed == (delivered[-1] if delivered else None)


# --- a large replay from a server that ignores Last-Event-ID -----------------------------------


async def test_a_replay_of_100000_events_delivers_every_id_exactly_once():
    """Issue 14 item 7: after a cut at 60,000, the server replays all 100,000 events; the replay
    guard drops the 60,000 already delivered (more than the recent-id window holds)."""
    total = 100_000
    async with open_feed_server(total=total, ignore_last_event_id=True) as server:
        server.script.append(Feed(limit=60_000))
        began = time.perf_counter()
        with trio.fail_after(60):
            async with open_sse(server.feed_url, policy=FAST) as stream:
                count = 0
                async for frame in stream:
                    count += 1
                    assert frame.id == str(count)
                stats = stream.stats
        elapsed = time.perf_counter() - began
    assert count == total
    assert stats.duplicates == 60_000
    assert server.last_event_ids() == [None, "60000", "100000"]
    assert frame.data == payload(total)
    assert elapsed < 30, elapsed  # a few seconds on the dev box; the bound catches a blow-up


async def test_the_replay_guard_limit_a_replay_on_the_first_connection():
    """The documented limit: resuming from a stored id (a new process), the first connection to
    a server that ignores Last-Event-ID replays ids this channel never saw: they are delivered.
    The next connection's replay is recognised and dropped."""
    async with open_feed_server(total=5, ignore_last_event_id=True) as server:
        server.script.append(Feed(limit=4))
        frames = await follow(server.feed_url, last_event_id="3")
        assert ids(frames) == numbers(1, 5)
        assert server.last_event_ids() == ["3", "4", "5"]


@pytest.mark.parametrize("url", ["ftp://example.test/feed", "/relative/feed", "http://", "", None])
async def test_a_url_that_is_not_http_is_a_config_error_at_once(url):
    with pytest.raises(ConfigError, match="url must be an http") as info:
        async with open_sse(url):
            pass
    assert info.value.field == "url"
