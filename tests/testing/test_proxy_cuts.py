"""Stream cuts through the chaos proxy: a fake SSE upstream, the proxy, an httpx client."""

from __future__ import annotations

import httpx
import pytest
import trio

from arkor_trio import ConfigError
from arkor_trio.testing import (
    CutAfterBytes,
    CutAfterEvents,
    CutKind,
    Plan,
    Stall,
    open_chaos_proxy,
)

from ._proxy_upstream import fetch, frames, open_upstream, sse_frame

STREAM = "/v1/jobs/j1/events/stream"


async def test_pass_through_forwards_everything_and_records_the_request():
    async with (
        open_upstream(total=4) as upstream,
        open_chaos_proxy(upstream.address) as proxy,
        httpx.AsyncClient() as client,
    ):
        got = await fetch(client, proxy.url + STREAM, headers={"Last-Event-ID": "1"})
        await proxy.wait_closed(1)
    assert got.error is None
    assert got.status == 200
    assert got.headers is not None
    assert got.headers["content-type"] == "text/event-stream"
    assert got.body == b"".join(frames(2, 4))
    assert upstream.conns[0].headers["last-event-id"] == "1"
    assert upstream.conns[0].headers["connection"] == "close"
    [record] = proxy.records
    assert (record.method, record.path, record.last_event_id) == ("GET", STREAM, "1")
    assert record.status == 200
    assert record.cut_kind is None
    assert record.cut_at is None
    assert record.ended_by == "complete"
    assert record.events_passed == 3
    assert record.bytes_down > len(got.body)
    assert record.bytes_up > 0
    assert record.closed_at is not None
    assert record.closed_at >= record.opened_at


async def test_last_event_id_is_none_when_absent():
    async with (
        open_upstream(total=1) as upstream,
        open_chaos_proxy(upstream.address) as proxy,
        httpx.AsyncClient() as client,
    ):
        await fetch(client, proxy.url + STREAM)
        await proxy.wait_closed(1)
    assert proxy.records[0].last_event_id is None


@pytest.mark.parametrize("k", [0, 1, 3])
async def test_clean_cut_lands_on_a_frame_boundary(k):
    async with (
        open_upstream(total=6) as upstream,
        open_chaos_proxy(upstream.address, plan=[CutAfterEvents(k)]) as proxy,
        httpx.AsyncClient() as client,
    ):
        got = await fetch(client, proxy.url + STREAM)
        await proxy.wait_closed(1)
    assert got.status == 200
    assert isinstance(got.error, httpx.RemoteProtocolError)  # no terminating chunk
    assert got.body == b"".join(frames(1, k))
    [record] = proxy.records
    assert record.cut_kind is CutKind.CLEAN
    assert record.events_passed == k
    assert record.ended_by == "proxy"
    assert record.cut_at is not None
    assert record.cut_wall is not None


async def test_graceful_clean_cut_ends_the_response_properly():
    plan = [CutAfterEvents(2, graceful=True)]
    async with (
        open_upstream(total=6) as upstream,
        open_chaos_proxy(upstream.address, plan=plan) as proxy,
        httpx.AsyncClient() as client,
    ):
        got = await fetch(client, proxy.url + STREAM)
    assert got.error is None
    assert got.body == b"".join(frames(1, 2))
    assert proxy.records[0].cut_kind is CutKind.CLEAN


async def test_clean_cut_inside_one_coalesced_write():
    # The upstream writes all frames in one chunk, so the cut must split inside the chunk.
    async with (
        open_upstream(body=lambda conn: [b"".join(frames(1, 5))]) as upstream,
        open_chaos_proxy(upstream.address, plan=[CutAfterEvents(3)]) as proxy,
        httpx.AsyncClient() as client,
    ):
        got = await fetch(client, proxy.url + STREAM)
    assert got.body == b"".join(frames(1, 3))
    assert proxy.records[0].events_passed == 3


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
async def test_mid_frame_cut_delivers_a_strict_prefix_of_the_next_frame(eol):
    async with (
        open_upstream(body=lambda conn: frames(1, 5, eol=eol)) as upstream,
        open_chaos_proxy(upstream.address, plan=[CutAfterEvents(2, mode="mid_frame")]) as proxy,
        httpx.AsyncClient() as client,
    ):
        got = await fetch(client, proxy.url + STREAM)
        await proxy.wait_closed(1)
    whole = b"".join(frames(1, 2, eol=eol))
    nxt = sse_frame(3, eol=eol)
    assert isinstance(got.error, httpx.RemoteProtocolError)
    assert got.body.startswith(whole)
    partial = got.body[len(whole) :]
    assert 0 < len(partial) < len(nxt)
    assert nxt.startswith(partial)
    assert len(partial) == len(nxt) // 2
    [record] = proxy.records
    assert record.cut_kind is CutKind.MID_FRAME
    assert record.events_passed == 2


async def test_reset_cut_is_seen_as_a_read_error_after_half_a_frame():
    async with (
        open_upstream(total=5) as upstream,
        open_chaos_proxy(upstream.address, plan=[CutAfterEvents(1, mode="reset")]) as proxy,
        httpx.AsyncClient() as client,
    ):
        got = await fetch(client, proxy.url + STREAM)
        await proxy.wait_closed(1)
    assert isinstance(got.error, httpx.ReadError)
    assert got.body.startswith(sse_frame(1))
    assert 0 < len(got.body) - len(sse_frame(1)) < len(sse_frame(2))
    assert proxy.records[0].cut_kind is CutKind.RESET
    assert proxy.records[0].events_passed == 1


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
async def test_after_id_cut_ends_right_after_the_id_line(eol):
    ping = f"event: ping{eol}data: {{}}{eol}{eol}".encode()

    def body(conn):  # a ping without id sits between frame 2 and frame 3
        return [*frames(1, 2, eol=eol), ping, *frames(3, 5, eol=eol)]

    async with (
        open_upstream(body=body) as upstream,
        open_chaos_proxy(upstream.address, plan=[CutAfterEvents(2, mode="after_id")]) as proxy,
        httpx.AsyncClient() as client,
    ):
        got = await fetch(client, proxy.url + STREAM)
        await proxy.wait_closed(1)
    assert isinstance(got.error, httpx.RemoteProtocolError)
    assert got.body == b"".join(frames(1, 2, eol=eol)) + ping + f"id: 3{eol}".encode()
    assert proxy.records[0].cut_kind is CutKind.AFTER_ID
    assert proxy.records[0].events_passed == 3


async def test_cut_beyond_the_end_of_the_stream_passes_it_whole():
    async with (
        open_upstream(total=3) as upstream,
        open_chaos_proxy(upstream.address, plan=[CutAfterEvents(9, mode="mid_frame")]) as proxy,
        httpx.AsyncClient() as client,
    ):
        got = await fetch(client, proxy.url + STREAM)
        await proxy.wait_closed(1)
    assert got.error is None
    assert got.body == b"".join(frames(1, 3))
    assert proxy.records[0].cut_kind is None
    assert proxy.records[0].ended_by == "complete"


async def test_non_stream_bodies_are_not_cut():
    async with (
        open_upstream(
            body=lambda c: [b'{"ok": ', b"true}"], content_type="application/json", framing="length"
        ) as upstream,
        open_chaos_proxy(upstream.address, plan=[CutAfterEvents(0)]) as proxy,
        httpx.AsyncClient() as client,
    ):
        response = await client.get(proxy.url + "/v1/me")
    assert response.json() == {"ok": True}
    assert response.headers["content-length"] == "12"
    assert proxy.records[0].cut_kind is None


async def test_stall_holds_the_connection_then_closes(autojump_clock):
    async with (
        open_upstream(total=5, hold_open=True) as upstream,
        open_chaos_proxy(upstream.address, plan=[Stall(after_events=2, seconds=30)]) as proxy,
        httpx.AsyncClient(timeout=None) as client,
    ):
        start = trio.current_time()
        got = await fetch(client, proxy.url + STREAM)
        await proxy.wait_closed(1)
        with trio.fail_after(1):
            await upstream.conns[0].peer_closed.wait()
    assert got.body == b"".join(frames(1, 2))
    [record] = proxy.records
    assert record.cut_kind is CutKind.STALL
    assert record.cut_at is not None
    assert record.closed_at is not None
    assert record.cut_at == pytest.approx(start)
    assert record.closed_at - record.cut_at == pytest.approx(30)


async def test_client_timeout_during_stall_ends_the_upstream_connection(autojump_clock):
    async with (
        open_upstream(total=5, hold_open=True) as upstream,
        open_chaos_proxy(upstream.address, plan=[Stall(after_events=1, seconds=300)]) as proxy,
        httpx.AsyncClient(timeout=httpx.Timeout(5.0)) as client,
    ):
        got = await fetch(client, proxy.url + STREAM)
        await proxy.wait_closed(1)
        with trio.fail_after(1):
            await upstream.conns[0].peer_closed.wait()
    assert isinstance(got.error, httpx.ReadTimeout)
    assert got.body == sse_frame(1)
    [record] = proxy.records
    assert record.closed_at is not None
    assert record.cut_at is not None
    assert record.closed_at - record.cut_at == pytest.approx(5)


async def test_client_disconnect_ends_the_upstream_connection_promptly():
    async with (
        open_upstream(total=3, hold_open=True) as upstream,
        open_chaos_proxy(upstream.address) as proxy,
        httpx.AsyncClient() as client,
    ):
        async with client.stream("GET", proxy.url + STREAM) as response:
            got = b""
            async for chunk in response.aiter_raw():
                got += chunk
                if got == b"".join(frames(1, 3)):
                    break
        with trio.fail_after(2):
            await upstream.conns[0].peer_closed.wait()
            await proxy.wait_closed(1)
    assert proxy.records[0].ended_by == "client"
    assert proxy.records[0].events_passed == 3


async def test_reconnecting_client_gaps_are_measured_from_outside(autojump_clock):
    plan = Plan.of(CutAfterEvents(2), CutAfterEvents(1, mode="mid_frame"), CutAfterEvents(0))
    seen: list[bytes] = []
    async with (
        open_upstream(total=6) as upstream,
        open_chaos_proxy(upstream.address, plan=plan) as proxy,
        httpx.AsyncClient() as client,
    ):
        last_id = None
        for _ in range(10):
            headers = {} if last_id is None else {"Last-Event-ID": last_id}
            got = await fetch(client, proxy.url + STREAM, headers=headers)
            complete = got.body[: got.body.rfind(b"\n\n") + 2] if b"\n\n" in got.body else b""
            for frame in complete.split(b"\n\n")[:-1]:
                seen.append(frame + b"\n\n")
                last_id = frame.split(b"\n")[0].removeprefix(b"id: ").decode()
            if got.error is None:
                break
            await trio.sleep(0.25)  # the client's backoff, in virtual time
        await proxy.wait_closed(4)
    assert seen == frames(1, 6)
    records = proxy.records
    assert [r.last_event_id for r in records] == [None, "2", "3", "3"]
    assert [r.cut_kind for r in records] == [CutKind.CLEAN, CutKind.MID_FRAME, CutKind.CLEAN, None]
    assert proxy.gaps() == pytest.approx([0.25, 0.25, 0.25])
    assert all(gap > 0 for gap in proxy.gaps(wall=True))


@pytest.mark.parametrize("n", [0, 1, 37, 100])
async def test_cut_after_bytes_forwards_exactly_that_many_body_bytes(n):
    async with (
        open_upstream(total=6) as upstream,
        open_chaos_proxy(upstream.address, plan=[CutAfterBytes(n)]) as proxy,
        httpx.AsyncClient() as client,
    ):
        got = await fetch(client, proxy.url + STREAM)
        await proxy.wait_closed(1)
    whole = b"".join(frames(1, 6))
    assert n < len(whole)
    assert got.body == whole[:n]
    assert isinstance(got.error, httpx.RemoteProtocolError)  # no terminating chunk
    [record] = proxy.records
    assert record.cut_kind is CutKind.BYTES
    assert record.ended_by == "proxy"


async def test_cut_after_bytes_draws_per_connection_and_passes_a_short_body():
    plan = Plan.of(CutAfterBytes(10, high=30), default=CutAfterBytes(10**6))
    counts = []
    async with (
        open_upstream(total=6) as upstream,
        open_chaos_proxy(upstream.address, plan=plan, seed=7) as proxy,
        httpx.AsyncClient() as client,
    ):
        for _ in range(2):
            got = await fetch(client, proxy.url + STREAM)
            counts.append(len(got.body))
        await proxy.wait_closed(2)
    assert 10 <= counts[0] <= 30
    assert counts[1] == len(b"".join(frames(1, 6)))  # shorter than the limit: unchanged
    assert proxy.records[1].ended_by == "complete"


def test_cut_after_bytes_is_validated():
    with pytest.raises(ConfigError):
        CutAfterBytes(-1)
    with pytest.raises(ConfigError):
        CutAfterBytes(10, high=5)
