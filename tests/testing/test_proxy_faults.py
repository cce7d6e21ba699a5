"""Connection-level faults, shaping and seeding of the chaos proxy, over real sockets."""

from __future__ import annotations

import json

import httpx
import pytest
import trio

from arkor_trio import ConfigError
from arkor_trio.testing import (
    CutAfterEvents,
    CutKind,
    DropInHeaders,
    Latency,
    PassThrough,
    Plan,
    Refuse,
    Stall,
    Status,
    Throttle,
    open_chaos_proxy,
)
from arkor_trio.testing._plan import PlanCursor

from ._proxy_upstream import fetch, frames, open_upstream, sse_frame

STREAM = "/v1/jobs/j1/events/stream"


async def test_status_fault_answers_without_contacting_upstream():
    plan = [Status(code=503, count=2, retry_after=1.5), Status(code=429, retry_after=2)]
    async with (
        open_upstream(total=2) as upstream,
        open_chaos_proxy(upstream.address, plan=plan) as proxy,
        httpx.AsyncClient() as client,
    ):
        answers = [await client.get(proxy.url + STREAM) for _ in range(4)]
        await proxy.wait_closed(4)
    assert [a.status_code for a in answers] == [503, 503, 429, 200]
    assert [a.headers.get("retry-after") for a in answers] == ["1.5", "1.5", "2", None]
    assert "503" in answers[0].json()["error"]
    assert answers[3].content == b"".join(frames(1, 2))
    assert len(upstream.conns) == 1
    records = proxy.records
    assert [r.cut_kind for r in records] == [CutKind.STATUS] * 3 + [None]
    assert [r.status for r in records] == [503, 503, 429, 200]
    assert records[0].bytes_up == 0


async def test_status_fault_after_a_large_request_body_is_not_a_reset():
    body = b"x" * 200_000
    async with (
        open_upstream() as upstream,
        open_chaos_proxy(upstream.address, plan=[Status(code=503)]) as proxy,
        httpx.AsyncClient() as client,
    ):
        response = await client.post(proxy.url + "/v1/jobs", content=body)
    assert response.status_code == 503
    assert proxy.records[0].method == "POST"


async def test_request_bodies_are_forwarded():
    async with (
        open_upstream(
            body=lambda conn: [b'{"job": 1}'], content_type="application/json", framing="length"
        ) as upstream,
        open_chaos_proxy(upstream.address) as proxy,
        httpx.AsyncClient() as client,
    ):
        response = await client.post(proxy.url + "/v1/jobs", json={"name": "run"})
        await proxy.wait_closed(1)
    assert response.json() == {"job": 1}
    assert json.loads(upstream.conns[0].body) == {"name": "run"}
    assert upstream.conns[0].method == "POST"
    assert proxy.records[0].bytes_up >= len(upstream.conns[0].body) + 40


async def test_chunked_request_bodies_keep_their_framing():
    async def upload():
        yield b"part one, "
        yield b"part two"

    async with (
        open_upstream(total=1) as upstream,
        open_chaos_proxy(upstream.address) as proxy,
        httpx.AsyncClient() as client,
    ):
        response = await client.post(proxy.url + "/v1/upload", content=upload())
    assert response.status_code == 200
    assert upstream.conns[0].headers["transfer-encoding"] == "chunked"
    assert upstream.conns[0].body == b"a\r\npart one, \r\n8\r\npart two\r\n0\r\n\r\n"


@pytest.mark.parametrize("reset", [False, True])
async def test_refuse_closes_connections_during_its_window(autojump_clock, reset):
    plan = Plan.of(Refuse(ms=500, reset=reset))
    async with (
        open_upstream(total=1) as upstream,
        open_chaos_proxy(upstream.address, plan=plan) as proxy,
        httpx.AsyncClient() as client,
    ):
        first = await fetch(client, proxy.url + STREAM)
        await trio.sleep(0.4)
        second = await fetch(client, proxy.url + STREAM)
        await trio.sleep(0.2)
        third = await fetch(client, proxy.url + STREAM)
        await proxy.wait_connections(3)
    assert isinstance(first.error, httpx.TransportError)
    assert isinstance(second.error, httpx.TransportError)
    assert first.status is None
    assert third.error is None
    assert third.body == sse_frame(1)
    records = proxy.records
    assert [r.cut_kind for r in records] == [CutKind.REFUSED, CutKind.REFUSED, None]
    assert records[0].method is None
    assert records[0].bytes_down == 0
    assert len(upstream.conns) == 1


async def test_drop_in_headers_sends_part_of_the_head_then_closes():
    async with (
        open_upstream(total=3) as upstream,
        open_chaos_proxy(upstream.address, plan=[DropInHeaders()]) as proxy,
        httpx.AsyncClient() as client,
    ):
        got = await fetch(client, proxy.url + STREAM)
        await proxy.wait_closed(1)
    head = (
        b"HTTP/1.1 200 X\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    assert isinstance(got.error, httpx.RemoteProtocolError)
    assert got.status is None
    [record] = proxy.records
    assert record.cut_kind is CutKind.HEADERS_DROP
    assert record.bytes_down == len(head) // 2
    assert record.status == 200  # what upstream answered
    assert len(upstream.conns) == 1


async def test_latency_delays_each_downstream_write(autojump_clock):
    async with (
        open_upstream(total=3) as upstream,
        open_chaos_proxy(upstream.address, plan=[Latency(ms=100)]) as proxy,
        httpx.AsyncClient() as client,
    ):
        start = trio.current_time()
        got = await fetch(client, proxy.url + STREAM)
        elapsed = trio.current_time() - start
    assert got.body == b"".join(frames(1, 3))
    # head, three frame chunks, last chunk: five writes.
    assert elapsed == pytest.approx(0.5)


async def _jittered_elapsed(seed: int) -> float:
    async with (
        open_upstream(total=4) as upstream,
        open_chaos_proxy(
            upstream.address, plan=[Latency(ms=100, jitter_ms=50)], seed=seed
        ) as proxy,
        httpx.AsyncClient() as client,
    ):
        await fetch(client, proxy.url + STREAM)
        await proxy.wait_closed(1)
    record = proxy.records[0]
    assert record.closed_at is not None
    return record.closed_at - record.opened_at


async def test_latency_jitter_is_seeded(autojump_clock):
    first, again, other = [await _jittered_elapsed(s) for s in (7, 7, 8)]
    assert first == again
    assert first != other
    assert 6 * 0.05 <= first <= 6 * 0.15


async def test_throttle_limits_bandwidth(autojump_clock):
    async with (
        open_upstream(total=5) as upstream,
        open_chaos_proxy(upstream.address, plan=[Throttle(1000)]) as proxy,
        httpx.AsyncClient() as client,
    ):
        got = await fetch(client, proxy.url + STREAM)
        await proxy.wait_closed(1)
    assert got.body == b"".join(frames(1, 5))
    record = proxy.records[0]
    assert record.closed_at is not None
    assert record.bytes_down > 500
    assert record.closed_at - record.opened_at == pytest.approx(record.bytes_down / 1000)


async def test_composed_step_applies_latency_and_cut(autojump_clock):
    async with (
        open_upstream(total=5) as upstream,
        open_chaos_proxy(upstream.address, plan=[(Latency(ms=100), CutAfterEvents(1))]) as proxy,
        httpx.AsyncClient() as client,
    ):
        start = trio.current_time()
        got = await fetch(client, proxy.url + STREAM)
        elapsed = trio.current_time() - start
    assert got.body == sse_frame(1)
    assert elapsed == pytest.approx(0.2)
    assert proxy.records[0].cut_kind is CutKind.CLEAN


async def _fault_sequence(plan: Plan, requests: int) -> list[tuple[object, ...]]:
    async with (
        open_upstream(total=3) as upstream,
        open_chaos_proxy(upstream.address, plan=plan) as proxy,
        httpx.AsyncClient() as client,
    ):
        for _ in range(requests):
            await fetch(client, proxy.url + STREAM)
        await proxy.wait_closed(requests)
    return [r.faults for r in proxy.records]


async def test_seeded_mix_gives_the_same_fault_sequence_for_the_same_seed():
    kinds = [
        CutAfterEvents(1),
        CutAfterEvents(1, mode="mid_frame"),
        Status(code=503, retry_after=0),
        PassThrough(),
    ]
    first = await _fault_sequence(Plan.random(kinds, seed=11, events=(0, 2)), 8)
    again = await _fault_sequence(Plan.random(kinds, seed=11, events=(0, 2)), 8)
    cursor = PlanCursor(Plan.random(kinds, seed=12, events=(0, 2)))
    other = [cursor.next_step(0.0) for _ in range(8)]
    assert first == again
    assert first != other
    assert len(set(first)) > 1


async def test_set_plan_applies_to_later_connections_and_on_close_sees_each_record():
    closed = []
    async with (
        open_upstream(total=1) as upstream,
        open_chaos_proxy(upstream.address, on_close=closed.append) as proxy,
        httpx.AsyncClient() as client,
    ):
        ok = await client.get(proxy.url + STREAM)
        proxy.set_plan([Status(code=429)])
        limited = await client.get(proxy.url + STREAM)
        again = await client.get(proxy.url + STREAM)
        await proxy.wait_closed(3)
    assert [ok.status_code, limited.status_code, again.status_code] == [200, 429, 200]
    assert closed == proxy.records
    assert [r.index for r in closed] == [0, 1, 2]


async def test_unreachable_upstream_gives_502():
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    async with (
        open_chaos_proxy(f"127.0.0.1:{free_port}") as proxy,
        httpx.AsyncClient() as client,
    ):
        response = await client.get(proxy.url + STREAM)
        await proxy.wait_closed(1)
    assert response.status_code == 502
    assert "unreachable" in response.json()["error"]
    assert proxy.records[0].ended_by == "upstream"


async def test_malformed_request_gets_400():
    async with open_upstream() as upstream, open_chaos_proxy(upstream.address) as proxy:
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with stream:
            await stream.send_all(b"NOT HTTP\r\n\r\n")
            answer = b""
            while chunk := await stream.receive_some(65536):
                answer += chunk
        await proxy.wait_closed(1)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert proxy.records[0].ended_by == "error"
    assert upstream.conns == []


async def test_exit_closes_open_connections_and_their_upstreams(autojump_clock):
    got_first = trio.Event()
    outcome = {}

    async def follow(client, url):
        async with client.stream("GET", url) as response:
            try:
                async for chunk in response.aiter_raw():
                    if chunk:
                        got_first.set()
            except httpx.TransportError as exc:
                outcome["error"] = exc

    async with (
        open_upstream(total=3, hold_open=True) as upstream,
        httpx.AsyncClient(timeout=None) as client,
        trio.open_nursery() as nursery,
    ):
        async with open_chaos_proxy(
            upstream.address, plan=[Stall(after_events=1, seconds=1e6)]
        ) as proxy:
            nursery.start_soon(follow, client, proxy.url + STREAM)
            await got_first.wait()
            start = trio.current_time()
        with trio.fail_after(1):
            await upstream.conns[0].peer_closed.wait()
    assert trio.current_time() - start < 1
    assert isinstance(outcome["error"], httpx.RemoteProtocolError)
    assert proxy.records[0].closed_at is not None


async def test_errors_in_the_body_propagate_unwrapped():
    with pytest.raises(KeyError, match="boom"):
        async with open_chaos_proxy(("127.0.0.1", 9)):
            raise KeyError("boom")


@pytest.mark.parametrize("upstream", ["nonsense", "host:", ":80", "h:99999", ("h", 0)])
async def test_bad_upstream_is_a_config_error(upstream):
    with pytest.raises(ConfigError, match="upstream"):
        async with open_chaos_proxy(upstream):
            pass  # pragma: no cover


async def test_a_plan_with_only_takes_steps_for_matching_requests_only():
    plan = Plan.of(Status(code=503), Refuse(), CutAfterEvents(1), only="/events/stream")
    async with (
        open_upstream(total=2) as upstream,
        open_chaos_proxy(upstream.address, plan=plan) as proxy,
        httpx.AsyncClient() as client,
    ):
        paths = ("/v1/me", STREAM, "/v1/jobs", STREAM, STREAM, "/v1/me", STREAM)
        results = [await fetch(client, proxy.url + path) for path in paths]
        await proxy.wait_closed(7)
    assert [r.status for r in results] == [200, 503, 200, None, 200, 200, 200]
    assert isinstance(results[3].error, httpx.TransportError)  # refused, after its head was read
    assert results[4].body == sse_frame(1)  # cut after one frame
    assert results[6].body == b"".join(frames(1, 2))  # past the plan: passed unchanged
    records = proxy.records
    assert [r.cut_kind for r in records] == [
        None, CutKind.STATUS, None, CutKind.REFUSED, CutKind.CLEAN, None, None
    ]  # fmt: skip
    assert [r.path for r in records] == [
        "/v1/me",
        STREAM,
        "/v1/jobs",
        STREAM,
        STREAM,
        "/v1/me",
        STREAM,
    ]
