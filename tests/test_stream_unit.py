"""EventStream over httpx.MockTransport with bodies fed from trio memory channels."""

from __future__ import annotations

import httpx
import pytest
import trio

from arkor_trio import ArkorClient, ReconnectPolicy, TrainingCompleted
from tests.sse_script_server import COMPLETED, frame, log_event


class ChannelBody(httpx.AsyncByteStream):
    def __init__(self, receive: trio.MemoryReceiveChannel[bytes]) -> None:
        self.receive = receive

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self.receive.aclose()


class Feeds:
    """Each stream request gets the next memory channel's receive end as its body."""

    def __init__(self) -> None:
        self.sends: list[trio.MemorySendChannel[bytes]] = []
        self.requests: list[httpx.Request] = []
        self.opened = trio.Event()
        self._changed = trio.Event()

    async def wait_for(self, n: int) -> None:
        while len(self.sends) < n:
            await self._changed.wait()
            self._changed = trio.Event()

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        send, receive = trio.open_memory_channel[bytes](100)
        self.sends.append(send)
        self.opened.set()
        self._changed.set()
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=ChannelBody(receive)
        )


def make_client(feeds: Feeds) -> ArkorClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(feeds.handler))
    return ArkorClient(
        base_url="http://api.test", token="tok", org_slug="o", project_slug="p", http=http
    )


async def test_a_slow_consumer_does_not_trip_the_idle_watchdog(autojump_clock):
    feeds = Feeds()
    client = make_client(feeds)
    policy = ReconnectPolicy(idle_timeout=1.0, buffer_size=1)
    got = []
    async with client.events("job-1", policy=policy) as stream:
        await feeds.opened.wait()
        for i in range(1, 6):
            feeds.sends[0].send_nowait(frame(i, log_event(i)))
        feeds.sends[0].send_nowait(frame(6, COMPLETED))
        async for event in stream:
            got.append(event.event_id)
            await trio.sleep(10)  # far longer than idle_timeout, per event
    assert got == ["1", "2", "3", "4", "5", "6"]
    assert stream.stats.connections == 1
    assert len(feeds.requests) == 1


async def test_idle_connection_is_dropped_and_resumed(autojump_clock):
    feeds = Feeds()
    client = make_client(feeds)
    policy = ReconnectPolicy(idle_timeout=2.0)
    async with client.events("job-1", after="7", policy=policy) as stream:
        await feeds.opened.wait()
        feeds.sends[0].send_nowait(frame(8, log_event(8)))
        first = await stream.__anext__()
        assert first.event_id == "8"
        t0 = trio.current_time()
        await feeds.wait_for(2)
        assert trio.current_time() - t0 == pytest.approx(2.0, abs=0.11)  # idle + backoff
        feeds.sends[1].send_nowait(frame(9, COMPLETED))
        last = await stream.__anext__()
    assert isinstance(last, TrainingCompleted)
    assert [r.headers.get("last-event-id") for r in feeds.requests] == ["7", "8"]
    assert feeds.requests[0].headers["accept"] == "text/event-stream"
    assert feeds.requests[0].headers["cache-control"] == "no-cache"
    assert feeds.requests[0].headers["authorization"] == "Bearer tok"
    assert feeds.requests[0].headers["x-arkor-client"].startswith("arkor/0.0.3 arkor-trio/")


async def test_body_exception_propagates_unwrapped(autojump_clock):
    feeds = Feeds()
    client = make_client(feeds)

    class Mine(Exception):
        pass

    async def body() -> None:
        async with client.events("job-1"):
            await feeds.opened.wait()
            raise Mine

    with pytest.raises(Mine):
        await body()


async def test_iterating_without_entering_is_a_clear_error():
    client = make_client(Feeds())
    stream = client.events("job-1")
    with pytest.raises(RuntimeError, match="async with"):
        await stream.__anext__()


async def test_a_body_that_cancels_its_scope_gets_no_further_event(autojump_clock):
    # The consumer takes queued events without a scheduler pass, but every one is still a
    # cancellation point: a scope cancelled by the body (no await in between) ends the loop.
    feeds = Feeds()
    client = make_client(feeds)
    got = []
    with trio.CancelScope() as scope:
        async with client.events("job-1") as stream:
            await feeds.opened.wait()
            feeds.sends[0].send_nowait(b"".join(frame(i, log_event(i)) for i in range(1, 6)))
            async for event in stream:
                got.append(event.event_id)
                scope.cancel()
    assert got == ["1"]
