"""One ArkorClient follows more streams than an httpx pool's default limit (100 connections)."""

from __future__ import annotations

import trio

from arkor_trio.wire._pools import SHARDS
from tests.sse_script_server import STARTED, Conn, frame

STREAMS = 150


async def test_one_client_opens_more_streams_than_a_default_pool_allows(client, server):
    # Every stream gets one event and then hangs open, as a running job's stream does.
    server.conns.extend(Conn(body=[frame(1, STARTED)], end="hang") for _ in range(STREAMS))
    got = trio.Semaphore(0)

    async def follow() -> None:
        async with client.events("job-1") as stream:
            await stream.__anext__()
            got.release()
            await trio.sleep_forever()

    with trio.fail_after(30):  # a pool limit shows up as a hang, not as slowness
        async with trio.open_nursery() as nursery:
            for _ in range(STREAMS):
                nursery.start_soon(follow)
            for _ in range(STREAMS):
                await got.acquire()
            assert len(server.stream_requests()) == STREAMS
            nursery.cancel_scope.cancel()


async def test_streams_are_spread_over_shards(client):
    clients = [client.stream_source(f"job-{i}").http for i in range(SHARDS * 3)]
    assert len({id(c) for c in clients}) == SHARDS
    assert clients[:SHARDS] == clients[SHARDS : 2 * SHARDS]  # round-robin
    await client.aclose()
    assert all(c.is_closed for c in clients)
