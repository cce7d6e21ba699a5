"""The job feed's client against a scripted WebSocket server: protocol races and hostile input.

Each test scripts the server side message by message (tests/ws_script_server.py), so the
orderings a real backend produces only by timing are reproduced exactly.
"""

from __future__ import annotations

import pytest
import trio

from arkor_trio import (
    ApiError,
    FrameTooLarge,
    JobFeed,
    ReconnectPolicy,
    ReconnectsExhausted,
    WebSocketEventStream,
)
from arkor_trio.stream import PERMANENT_STATUSES
from arkor_trio.wire._feed_batch import BatchSize

from .ws_script_server import completed, event, open_ws_script, receive, send

FAST = {"initial_delay": 0.001, "max_delay": 0.002}


async def _ids(sub) -> list[str | None]:
    return [e.event_id async for e in sub]


async def test_a_new_subscription_never_adopts_the_previous_ones_events() -> None:
    """Defect 7: ``remove(job)`` then ``subscribe(job, after="9")`` within one round trip: the
    old subscription's ``subscribed`` answer and events 1..12 arrive before the new ``subscribed``;
    the new subscription yields only what comes after 9."""
    first_read = trio.Event()

    async def script(request, index: int) -> None:
        ws = await request.accept()
        first = await receive(ws)
        assert first == [{"type": "subscribe", "job": "j", "after": None}]
        first_read.set()
        second = await receive(ws)
        assert second == [
            {"type": "unsubscribe", "job": "j"},
            {"type": "subscribe", "job": "j", "after": "9"},
        ]
        # The old subscription's answers crossed the client's second message on the wire.
        old = [event("j", n) for n in range(1, 12)] + [completed("j", 12)]
        reset = {"type": "reset", "job": "j", "reason": "of the old subscription"}
        await send(ws, {"type": "subscribed", "job": "j", "recovered": False}, reset, *old)
        new = [event("j", n) for n in (10, 11)] + [completed("j", 12)]
        await send(ws, {"type": "subscribed", "job": "j", "recovered": True}, *new)
        await send(ws, {"type": "end", "job": "j"})
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with open_ws_script(script) as client, JobFeed(client) as feed:
            feed.subscribe("j")
            await first_read.wait()
            feed.remove("j")
            async with feed.subscribe("j", after="9") as sub:
                assert await _ids(sub) == ["10", "11", "12"]
                assert sub.resets == ()
            assert feed.stats.stale == 12
            assert feed.stats.resets == 0


@pytest.mark.parametrize("how", ["handshake", "close"])
async def test_permanent_statuses_apply_to_the_socket(how: str) -> None:
    """Defect 11: ``ReconnectPolicy.permanent_statuses`` decides, as on SSE: 503 made permanent
    raises at once (a refused handshake or a 4503 close)."""

    async def script(request, index: int) -> None:
        if how == "handshake":
            await request.reject(503)
            return
        ws = await request.accept()
        await ws.aclose(4503, "unavailable")

    policy = ReconnectPolicy(permanent_statuses=PERMANENT_STATUSES | {503}, max_attempts=2, **FAST)
    with trio.fail_after(10):
        async with open_ws_script(script) as client, JobFeed(client, policy=policy) as feed:
            with pytest.raises(ApiError) as caught:
                async with feed.subscribe("j") as sub:
                    await _ids(sub)
            assert type(caught.value) is ApiError
            assert caught.value.status == 503
            assert feed.stats.connections == (0 if how == "handshake" else 1)


@pytest.mark.parametrize("how", ["handshake", "close"])
async def test_a_status_made_transient_is_retried(how: str) -> None:
    """Defect 11: 401 taken out of ``permanent_statuses`` is retried on WebSocket as on SSE."""

    async def script(request, index: int) -> None:
        if index == 0 and how == "handshake":
            await request.reject(401)
            return
        ws = await request.accept()
        if index == 0:
            await ws.aclose(4401, "bad token")
            return
        assert await receive(ws) == [{"type": "subscribe", "job": "j", "after": None}]
        subscribed = {"type": "subscribed", "job": "j", "recovered": False}
        await send(ws, subscribed, event("j", 1), completed("j", 2))
        await trio.sleep_forever()

    policy = ReconnectPolicy(permanent_statuses=PERMANENT_STATUSES - {401}, **FAST)
    with trio.fail_after(10):
        async with open_ws_script(script) as client, JobFeed(client, policy=policy) as feed:
            async with feed.subscribe("j") as sub:
                assert await _ids(sub) == ["1", "2"]
            assert feed.stats.failures == 1


@pytest.mark.parametrize("via", ["feed", "events"])
async def test_deeply_nested_json_is_skipped_and_counted(via: str) -> None:
    """Issue 18 item 10: a message nested deeper than the JSON parser goes (RecursionError) is
    skipped and counted like any malformed message, on a feed and on
    ``events(transport="websocket")``; the job goes on."""

    async def script(request, index: int) -> None:
        ws = await request.accept()
        await receive(ws)
        await ws.send_message("[" * 100_000 + "]" * 100_000)
        await ws.send_message('{"type": "event", "job": "j", "id": "1", "data": ' + "[" * 50_000)
        nested = '{"type":"event","job":"j","id":"1","data":' + "[" * 20_000 + "]" * 20_000 + "}"
        await send(ws, {"type": "subscribed", "job": "j", "recovered": False})
        await ws.send_message(nested)
        await send(ws, event("j", 1), completed("j", 2))
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with open_ws_script(script) as client:
            if via == "feed":
                async with JobFeed(client) as feed:
                    async with feed.subscribe("j") as sub:
                        assert await _ids(sub) == ["1", "2"]
                    stats = feed.stats
            else:
                async with WebSocketEventStream(client, "j") as stream:
                    assert await _ids(stream) == ["1", "2"]
                    stats = stream.stats
    assert stats.skipped == 3
    assert stats.connections == 1


async def test_an_oversized_message_twice_in_a_row_raises_frame_too_large() -> None:
    """Issue 18 item 11: a message over ``max_frame_bytes`` closes the socket (1009); the server
    sends it again on every reconnect, so the second time in a row the feed raises
    ``FrameTooLarge`` (as the SSE stream does) instead of retrying forever."""

    async def script(request, index: int) -> None:
        ws = await request.accept()
        await receive(ws)
        subscribed = {"type": "subscribed", "job": "j", "recovered": False}
        await send(ws, subscribed, event("j", 1, type="training.log", step=1, note="x" * 4096))
        await trio.sleep_forever()

    policy = ReconnectPolicy(max_frame_bytes=1024, **FAST)
    with trio.fail_after(10):
        async with open_ws_script(script) as client, JobFeed(client, policy=policy) as feed:
            with pytest.raises(FrameTooLarge) as caught:
                async with feed.subscribe("j") as sub:
                    await _ids(sub)
            assert caught.value.limit == 1024
            assert feed.stats.connections == 2
            with pytest.raises(FrameTooLarge):  # the feed is over: later jobs get the error too
                async with feed.subscribe("k") as sub:
                    await _ids(sub)


async def test_a_server_1009_is_not_taken_for_an_oversized_message() -> None:
    """The server's own 1009 (it refused a message of ours) is a failure with backoff, never
    ``FrameTooLarge``: exhausted reconnects say so."""

    async def script(request, index: int) -> None:
        ws = await request.accept()
        await ws.aclose(1009, "too big")

    policy = ReconnectPolicy(max_attempts=2, **FAST)
    with trio.fail_after(10):
        async with open_ws_script(script) as client, JobFeed(client, policy=policy) as feed:
            with pytest.raises(ReconnectsExhausted):
                async with feed.subscribe("j") as sub:
                    await _ids(sub)
            assert feed.stats.connections == 3


def test_batch_size_halves_after_a_fruitless_broken_socket_and_doubles_after_progress() -> None:
    """The ``max_batch`` rule (design.md section 11): down to 1, up to 512; a socket closed
    with a close frame (a restart, a refusal) or one that made progress never lowers it."""
    batch = BatchSize()
    assert (
        batch.url("ws://h/v1/events/ws?orgSlug=o") == "ws://h/v1/events/ws?orgSlug=o&max_batch=512"
    )
    for expected in (256, 128, 64, 32, 16, 8, 4, 2, 1, 1):
        batch.after_socket(progress=False, broken=True)
        assert batch.value == expected
    batch.after_socket(progress=False, broken=False)
    assert batch.value == 1
    for expected in (2, 4, 8, 16, 32, 64, 128, 256, 512, 512):
        batch.after_socket(progress=True, broken=True)
        assert batch.value == expected
    assert batch.url("ws://h/ws") == "ws://h/ws?max_batch=512"


async def test_a_reset_of_the_current_subscription_is_reported() -> None:
    async def script(request, index: int) -> None:
        ws = await request.accept()
        await receive(ws)
        subscribed = {"type": "subscribed", "job": "j", "recovered": False}
        reset = {"type": "reset", "job": "j", "reason": "events 1 to 4 are no longer kept"}
        await send(ws, subscribed, reset, event("j", 5), completed("j", 6))
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with open_ws_script(script) as client, JobFeed(client) as feed:
            async with feed.subscribe("j") as sub:
                assert await _ids(sub) == ["5", "6"]
                assert sub.resets == ("events 1 to 4 are no longer kept",)
            assert feed.stats.resets == 1
