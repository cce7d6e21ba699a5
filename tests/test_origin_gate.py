"""Streams to one origin resume together once it answers again (issue 23, the restart herd).

A stream backing off after a connect error (nothing listens: a backend restarting) tries again
as soon as another stream of the run opens a connection to the same origin, after a spread of
``uniform(0, initial_delay)``; a wait after a status the server sent (503) is not cut short.
One layer (the channel) over ``httpx.MockTransport``; time is trio's MockClock. The random
source always answers the top of its range, so every delay is its ceiling: 1, 2, 4, 8 s, ...
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any

import httpx
import trio

from arkor_trio import ReconnectPolicy
from arkor_trio.stream._channel import SSEChannel
from arkor_trio.stream._gate import OriginGate, gate_for

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

POLICY = ReconnectPolicy(initial_delay=1.0, max_delay=1000.0, idle_timeout=math.inf)


class Ceiling(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


class Origin:
    """One origin: down (connect errors, or 503 for ``/busy``) until ``up``; then each stream
    gets one frame and stays open."""

    def __init__(self) -> None:
        self.up = False
        self.failed: dict[str, list[float]] = {}
        self.opened: dict[str, list[float]] = {}

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path, now = request.url.path, trio.current_time()
        if not self.up:
            self.failed.setdefault(path, []).append(now)
            if path == "/busy":
                return httpx.Response(503, json={"error": "starting"})
            raise httpx.ConnectError("connection refused", request=request)
        self.opened.setdefault(path, []).append(now)

        async def body() -> AsyncIterator[bytes]:
            yield b"id: 1\ndata: x\n\n"
            await trio.sleep_forever()

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())


async def _follow(channel: SSEChannel[Any], got: list[float]) -> None:
    async with channel:
        async for _ in channel:
            got.append(trio.current_time())  # noqa: PERF401  # until cancelled


async def _herd(path: str) -> tuple[Origin, float, list[float]]:
    """Stream ``path`` fails 4 times (t0, +1, +3, +7: its next try would be at +15); at +8 the
    origin comes up and another stream opens. Returns (origin, t0, the stream's frame times)."""
    origin = Origin()
    http = httpx.AsyncClient(transport=httpx.MockTransport(origin))
    got: list[float] = []
    async with http, trio.open_nursery() as nursery:
        waiting = SSEChannel[Any](f"http://origin.test{path}", http=http, policy=POLICY,
                                  rng=Ceiling())  # fmt: skip
        nursery.start_soon(_follow, waiting, got)
        while len(origin.failed.get(path, ())) < 4:
            await trio.sleep(0.5)
        t0 = origin.failed[path][0]
        await trio.sleep_until(t0 + 8)
        origin.up = True
        other = SSEChannel[Any]("http://origin.test/other", http=http, policy=POLICY)
        nursery.start_soon(_follow, other, [])
        await trio.sleep_until(t0 + 20)
        nursery.cancel_scope.cancel()
    return origin, t0, got


async def test_a_stream_that_cannot_connect_resumes_when_another_reaches_the_origin(
    autojump_clock: trio.testing.MockClock,
) -> None:
    origin, t0, got = await _herd("/down")
    assert [t - t0 for t in origin.failed["/down"]] == [0, 1, 3, 7]
    assert origin.opened["/other"] == [t0 + 8]
    # Woken by the other stream's open, plus its spread of initial_delay; not at +15.
    assert origin.opened["/down"] == [t0 + 9]
    assert got == [t0 + 9]


async def test_a_wait_after_a_status_is_not_cut_short(
    autojump_clock: trio.testing.MockClock,
) -> None:
    origin, t0, got = await _herd("/busy")
    assert [t - t0 for t in origin.failed["/busy"]] == [0, 1, 3, 7]
    assert origin.opened["/other"] == [t0 + 8]
    assert origin.opened["/busy"] == [t0 + 15]  # its own backoff: the server answered 503
    assert got == [t0 + 15]


async def test_one_gate_per_origin_and_the_wait_without_an_open_is_the_full_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    assert gate_for("http://a.test:1/x") is gate_for("HTTP://A.test:1/y")
    assert gate_for("http://a.test:1/x") is not gate_for("http://a.test:2/x")
    assert gate_for("http://a.test:1/x") is not gate_for("https://a.test:1/x")
    gate = OriginGate()
    start = trio.current_time()
    assert await gate.backoff(5.0, 1.0, Ceiling()) is False
    assert trio.current_time() == start + 5.0
    async with trio.open_nursery() as nursery:
        woken: list[bool] = []

        async def wait() -> None:
            woken.append(await gate.backoff(5.0, 1.0, Ceiling()))

        nursery.start_soon(wait)
        await trio.sleep(2.0)
        gate.opened()
    assert woken == [True]
    assert trio.current_time() == start + 5.0 + 3.0  # woken at +2, then the spread of 1 s
