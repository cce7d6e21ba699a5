"""The client against a hostile server (issue 18 items 7-10), on real sockets where it matters.

* a gzip bomb (a small body inflating to tens of MiB) is refused once it inflates more than
  ``MAX_RATIO`` times, read in slices with checkpoints between them (the loop keeps running),
  and its memory stays bounded: the event stream, plain requests (``get_job``);
* nothing that authenticates crosses an origin on a redirect, whichever way the user's own
  httpx client carries it (default headers, ``auth=``, cookies);
* a server that answers one id-less frame and closes is not reconnected to in a tight loop;
* JSON nested deeper than the parser goes is a typed error, not a ``RecursionError``.
"""

from __future__ import annotations

import json
import math
import random
import tracemalloc
import zlib
from functools import cache
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from arkor_trio import ApiError, ArkorClient, ReconnectsExhausted
from arkor_trio._inflate import SLICE_BYTES, iter_body
from arkor_trio.stream import ReconnectPolicy, SSEChannel, open_sse
from arkor_trio.stream._reconnect import Backoff
from tests.sse_feed_server import Reply, open_feed_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from contextlib import AbstractAsyncContextManager

BOMB_MIB = 32


@cache
def gzip_bomb(prefix: bytes) -> bytes:
    """``prefix`` and then BOMB_MIB MiB of ``x``, gzipped (about 1000:1)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"x" * (1 << 20)
    parts = [deflate.compress(prefix)]
    parts += [deflate.compress(block) for _ in range(BOMB_MIB)]
    parts.append(deflate.flush())
    return b"".join(parts)


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No real credentials, state file or environment reach the client."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ARKOR_TOKEN", raising=False)
    monkeypatch.delenv("ARKOR_CLOUD_API_URL", raising=False)


async def drain(stream: AbstractAsyncContextManager[AsyncIterator[Any]]) -> None:
    async with stream as items:
        async for _ in items:
            pass


class Ticker:
    """A task that counts the scheduler passes it gets while the loop is not frozen."""

    def __init__(self) -> None:
        self.ticks = 0

    async def run(self) -> None:
        while True:
            self.ticks += 1
            await trio.lowlevel.checkpoint()


# --- item 7: a gzip bomb ------------------------------------------------------------------------


async def test_a_gzip_bombed_event_stream_is_refused_in_bounded_slices():
    """Before: httpx inflated one 64 KiB read into 32 MiB in one call and the decoder took it in
    one feed (the loop frozen meanwhile; 1 GiB took 84 s and 235 MB); the connection ended only
    at EOF. Now: slices of 64 KiB, a checkpoint between two, refused past 100:1."""
    body = gzip_bomb(b"data: ")  # one never-ended data line: no frame, so no progress
    headers = {"Content-Type": "text/event-stream", "Content-Encoding": "gzip"}
    policy = ReconnectPolicy(max_attempts=0, max_frame_bytes=1 << 30)
    ticker = Ticker()
    async with open_feed_server() as server:
        server.routes["/bomb"] = Reply(200, headers, body)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker.run)
            tracemalloc.start()
            try:
                with pytest.raises(ReconnectsExhausted) as caught, trio.fail_after(30):
                    await drain(open_sse(f"{server.url}/bomb", policy=policy))
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            nursery.cancel_scope.cancel()
    assert "decompression bomb" in str(caught.value.__cause__)
    assert server.requests[0].headers["accept-encoding"] == "gzip, deflate"
    # It stopped near RATIO_FLOOR, far before the 32 MiB: about MAX_RATIO slices of 64 KiB.
    assert peak < 16 << 20, peak
    # The loop ran between the slices: at least RATIO_FLOOR / 64 KiB = 16 of them came out
    # before the refusal, a checkpoint before each but the first of a network read.
    assert ticker.ticks >= 10


async def test_a_cancel_lands_between_two_slices_of_one_read():
    """Even with the ratio bound lifted, a cancel scope ends the read at the next slice: the
    loop is never held for more than one 64 KiB slice of inflation."""
    body = gzip_bomb(b"")
    headers = {"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"}
    async with open_feed_server() as server, httpx.AsyncClient() as http:
        server.routes["/bomb"] = Reply(200, headers, body)
        request = http.build_request("GET", f"{server.url}/bomb")
        response = await http.send(request, stream=True)
        sizes: list[int] = []
        after_cancel = 0
        with trio.CancelScope() as scope:
            async for piece in iter_body(response, max_ratio=math.inf):
                if scope.cancel_called:
                    after_cancel += 1
                sizes.append(len(piece))
                if sum(sizes) >= 4 << 20:
                    scope.cancel()  # what a move_on_after firing does
        await response.aclose()
    assert scope.cancelled_caught
    assert after_cancel == 0
    assert 4 << 20 <= sum(sizes) < (4 << 20) + SLICE_BYTES  # nothing inflated after it
    assert max(sizes) <= SLICE_BYTES


async def test_a_gzip_bombed_json_body_is_a_typed_error_with_bounded_memory():
    """Before: ``get_job`` read the whole inflated body (2 MiB -> 2 GiB peaked at 4.15 GB)."""
    body = gzip_bomb(b'{"id": "')
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    async with open_feed_server() as server:
        server.routes["/v1/jobs/job-1"] = Reply(200, headers, body)
        client = ArkorClient(server.url, "tok", org_slug="o", project_slug="p")
        tracemalloc.start()
        try:
            with pytest.raises(ApiError, match="decompression bomb") as caught:
                await client.get_job("job-1")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            await client.aclose()
    assert caught.value.status == 200
    assert peak < 16 << 20, peak


async def test_an_unasked_content_encoding_is_refused():
    headers = {"Content-Type": "application/json", "Content-Encoding": "br"}
    async with open_feed_server() as server:
        server.routes["/v1/jobs/job-1"] = Reply(200, headers, b"\x0b\x01\x80{}\x03")
        async with ArkorClient(server.url, "tok", org_slug="o", project_slug="p") as client:
            with pytest.raises(ApiError, match="was not asked for"):
                await client.get_job("job-1")


async def test_a_compressed_stream_within_bounds_is_read():
    frames = b"".join(b"id: %d\ndata: event %d\n\n" % (n, n) for n in range(1, 2001))
    deflate = zlib.compressobj(6, zlib.DEFLATED, 31)
    body = deflate.compress(frames) + deflate.flush()
    headers = {"Content-Type": "text/event-stream", "Content-Encoding": "gzip"}
    async with open_feed_server() as server:
        server.routes["/gz"] = Reply(200, headers, body)
        with trio.fail_after(10):
            async with open_sse(f"{server.url}/gz", is_final=lambda f: f.id == "2000") as stream:
                ids = [frame.id async for frame in stream]
    assert ids == [str(n) for n in range(1, 2001)]


# --- item 8: credentials on a cross-origin redirect -----------------------------------------


@pytest.mark.parametrize(
    "client_kwargs",
    [
        {"headers": {"Authorization": "Bearer client-default", "X-Api-Key": "k1"}},
        {"auth": httpx.BasicAuth("user", "password")},
        {"cookies": {"session": "c1"}},
    ],
    ids=["default-headers", "auth", "cookies"],
)
async def test_the_users_own_client_sends_no_credential_to_another_origin(client_kwargs):
    """Before: build_request merged the client's default headers (and cookies) back in, and
    send applied its auth=: another origin received ``Authorization: Bearer``/``Basic``."""
    async with open_feed_server(total=2) as origin, open_feed_server(total=2) as other:
        origin.routes["/away"] = Reply(307, {"Location": f"{other.url}/feed"})
        async with httpx.AsyncClient(**client_kwargs) as http:
            with trio.fail_after(10):
                async with open_sse(
                    f"{origin.url}/away", http=http, headers={"X-Trace": "keep"}
                ) as stream:
                    ids = [frame.id async for frame in stream]
    assert ids == ["1", "2"]
    first = origin.requests[0].headers
    assert "authorization" in first or "cookie" in first  # the origin did get them
    assert other.requests
    for request in other.requests:
        sent = set(request.headers)
        assert not sent & {"authorization", "cookie", "x-api-key", "proxy-authorization"}
        assert request.headers["x-trace"] == "keep"  # a header that does not authenticate


async def test_the_session_never_follows_a_redirect_to_another_origin():
    """Plain requests with a client that follows redirects: refused, nothing sent there."""
    async with open_feed_server() as origin, open_feed_server() as other:
        origin.routes["/v1/me"] = Reply(307, {"Location": f"{other.url}/v1/me"})
        other.routes["/v1/me"] = Reply(200, {"Content-Type": "application/json"}, b"{}")
        http = httpx.AsyncClient(follow_redirects=True, auth=("user", "password"))
        async with http, ArkorClient(origin.url, "tok", http=http) as client:
            with pytest.raises(ApiError, match="another origin") as caught:
                await client.me()
    assert caught.value.status == 307
    assert "tok" not in str(caught.value)
    assert other.requests == []


async def test_the_session_follows_a_redirect_within_its_origin():
    async with open_feed_server() as origin:
        origin.routes["/v1/me"] = Reply(308, {"Location": "/v2/me"})
        origin.routes["/v2/me"] = Reply(200, {"Content-Type": "application/json"}, b'{"a": 1}')
        async with (
            httpx.AsyncClient(follow_redirects=True) as http,
            ArkorClient(origin.url, "tok", http=http) as client,
        ):
            assert await client.me() == {"a": 1}
    assert [r.headers["authorization"] for r in origin.requests] == ["Bearer tok"] * 2


# --- item 9: a reconnect storm on id-less frames --------------------------------------------


def hello_and_close(counter: list[int]) -> httpx.MockTransport:
    """A server that answers ``data: hello`` and closes, counting connections."""

    async def answer(request: httpx.Request) -> httpx.Response:
        counter[0] += 1

        async def body() -> AsyncIterator[bytes]:
            yield b"data: hello\n\n"

        return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=body())

    return httpx.MockTransport(answer)


async def test_id_less_progress_does_not_earn_an_immediate_reconnect_forever(autojump_clock):
    """Before: 4,117 connections in 5 s (every reconnect immediate, time never moved: under
    MockClock this loop would never leave the first instant)."""
    connections = [0]
    frames = 0
    async with httpx.AsyncClient(transport=hello_and_close(connections)) as http:
        channel: SSEChannel[Any] = SSEChannel(
            "http://sse.test/feed", http=http, rng=random.Random(7)
        )
        with trio.move_on_after(5):
            async with channel:
                async for _ in channel:
                    frames += 1
                    if frames > 1000:
                        break
    assert frames <= 30, frames  # each connection delivers its frame: no event is lost
    assert connections[0] <= 30, connections
    assert channel.stats.failures == 0  # delivering frames is not failing


def test_backoff_after_progress_that_did_not_move_the_resume_point():
    backoff = Backoff(ReconnectPolicy(initial_delay=1.0, max_delay=8.0), random.Random(0))
    assert backoff.after_progress(None, moved=False) == 0.0  # the first one: immediate
    delays = [backoff.after_progress(None, moved=False) for _ in range(40)]
    assert all(0.0 <= d <= 8.0 for d in delays)
    assert sum(delays) > 40  # capped at max_delay, not immediate: on average half of it
    assert backoff.after_progress(2500, moved=False) >= 2.5  # the server's retry: still counts
    assert backoff.after_progress(None, moved=True) == 0.0  # real progress resets it
    assert backoff.after_progress(None, moved=False) == 0.0


# --- item 10: JSON nested too deeply --------------------------------------------------------


async def test_deep_json_in_a_plain_response_is_a_typed_error():
    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"[" * 100_000)

    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    async with http, ArkorClient("http://arkor.test", "tok", http=http) as client:
        with pytest.raises(ApiError, match="nests too deeply"):  # before: RecursionError
            await client.me()


async def test_deep_json_in_a_chat_chunk_is_a_typed_error():
    async def answer(request: httpx.Request) -> httpx.Response:
        body = b"data: " + b"[" * 100_000 + b"\n\n"
        return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=body)

    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    client = ArkorClient("http://arkor.test", "tok", org_slug="o", project_slug="p", http=http)
    async with http, client:
        stream = client.chat_stream([{"role": "user", "content": "hi"}], base_model="m")
        with pytest.raises(ApiError, match="nests too deeply"):  # before: RecursionError
            await drain(stream)


def test_json_module_still_raises_recursion_error():
    """The premise of the two tests above (a parser change would make them vacuous)."""
    with pytest.raises(RecursionError):
        json.loads("[" * 100_000)
