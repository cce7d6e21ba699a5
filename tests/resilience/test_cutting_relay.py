"""Liveness through a link that passes only a few KiB per connection (issue 17).

A relay cuts every connection of the event stream after a seeded random 2 to 20 KiB. SSE
progresses through it (each complete frame counts), and so must the WebSocket transport
(design.md section 11): a batch larger than what gets through is never complete, so the client
lowers the socket's ``max_batch`` after a socket that broke without progress, down to one
message per WebSocket message, and raises it again after progress. Every transport finishes a
400-step job (402 events) with every event once, in order.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import trio

from arkor_trio import ReconnectPolicy, TrainingCompleted
from arkor_trio.server import open_local_backend
from arkor_trio.testing import CutAfterBytes, CutKind, Plan, open_chaos_proxy
from tests.server.conftest import prefill

from ._harness import proxy_client
from ._scripted import ScriptedEngine

STEPS = 400
EVENTS = STEPS + 2  # training.started, the logs, training.completed
#: Every event-stream connection (SSE or the feed socket) passes 2 to 20 KiB, then is cut.
CUTTING = Plan.of(default=CutAfterBytes(2 * 1024, high=20 * 1024), only="/events")
#: Short delays; a bounded number of failures in a row (a livelock fails fast, never hangs).
POLICY = ReconnectPolicy(initial_delay=0.01, max_delay=0.05, idle_timeout=5.0, max_attempts=30)


@pytest.mark.parametrize("transport", ["sse", "websocket", "feed"])
async def test_every_transport_finishes_through_a_link_cut_after_2_to_20_kib(
    tmp_path, transport: str
) -> None:
    prefill(tmp_path / "data", "job_r", STEPS)
    with trio.fail_after(60):
        async with (
            open_local_backend(tmp_path / "data", engine=ScriptedEngine().engine()) as backend,
            open_chaos_proxy(backend.base_url, plan=CUTTING, seed=17) as proxy,
            proxy_client(proxy.url, backend) as client,
        ):
            began = trio.current_time()
            if transport == "feed":
                async with client.feed(policy=POLICY) as feed:
                    async with feed.subscribe("job_r") as sub:
                        events = [event async for event in sub]
                    connections = feed.stats.connections
            else:
                stream = client.events("job_r", policy=POLICY, transport=transport)
                async with stream:
                    events = [event async for event in stream]
                    connections = stream.stats.connections
            elapsed = trio.current_time() - began
            records = [r for r in proxy.records if r.path is not None and "/events" in r.path]
    print(f"{transport}: {len(events)} events, {connections} connections, {elapsed:.2f} s")
    assert [e.event_id for e in events] == [str(n) for n in range(1, EVENTS + 1)]
    assert type(events[-1]) is TrainingCompleted
    # The link really was cut, many times, after at most 20 KiB each time.
    cut = [r for r in records if r.cut_kind is CutKind.BYTES]
    assert len(cut) >= 3
    assert all(r.bytes_down <= 20 * 1024 + 1024 for r in cut)  # + the response head
    if transport != "sse":  # the feed asked for smaller first batches after fruitless sockets
        asked = [int(parse_qs(urlsplit(r.path).query)["max_batch"][0]) for r in records]
        assert asked[0] == 512
        assert min(asked) <= 128  # 512 and 256 messages (32 KiB and more) never got through
