"""The job event stream: replay, Last-Event-ID, tail, end, pings, coalescing, disconnects."""

from __future__ import annotations

import json

import httpx
import trio

from arkor_trio.server import open_local_backend
from arkor_trio.server._events import END_FRAME, PING_FRAME, EventHub, follow_job
from arkor_trio.server._store import Store

from .conftest import (
    SCOPE,
    FrameReader,
    create_job,
    data_of,
    headers_for,
    prefill,
    read_stream,
)


def _url(job_id: str) -> str:
    return f"/v1/jobs/{job_id}/events/stream"


async def test_replay_sends_every_event_with_ids_types_and_end(http) -> None:
    job = await create_job(http, logs=3)
    frames = await read_stream(http, job["id"])
    assert [f.get("id") for f in frames] == ["1", "2", "3", "4", "5", "6", None]
    assert frames[-1] == {"event": "end", "data": "{}"}
    for frame in frames[:-1]:
        payload = data_of(frame)
        assert payload["type"] == frame["event"]
        assert payload["jobId"] == job["id"]
        assert payload["timestamp"].endswith("Z")
    assert [data_of(f).get("step") for f in frames[1:4]] == [1, 2, 3]
    assert data_of(frames[0])["metadata"] == {"backend": "local", "engine": "fake"}


async def test_last_event_id_replays_exactly_the_missing_events(http) -> None:
    job = await create_job(http, logs=3)
    everything = await read_stream(http, job["id"])
    after_three = await read_stream(http, job["id"], last_event_id="3")
    assert after_three == everything[3:]
    assert await read_stream(http, job["id"], last_event_id="6") == [everything[-1]]
    assert await read_stream(http, job["id"], last_event_id="99") == [everything[-1]]
    assert await read_stream(http, job["id"], last_event_id="") == everything


async def test_bad_last_event_id_and_unknown_job_fail_before_streaming(http) -> None:
    job = await create_job(http, logs=1)
    for bad in ["abc", "-1", "1.5", "1700000000-evt-42"]:
        response = await http.get(_url(job["id"]), params=SCOPE, headers={"Last-Event-ID": bad})
        assert response.status_code == 400
        assert "Last-Event-ID" in response.json()["error"]
    response = await http.get(_url("job_missing"), params=SCOPE)
    assert response.status_code == 404
    assert response.json() == {"error": "job job_missing not found"}
    assert response.headers["content-type"] == "application/json"


async def test_stream_headers(http) -> None:
    job = await create_job(http, logs=1)
    async with http.stream("GET", _url(job["id"]), params=SCOPE) as response:
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        await response.aread()


async def test_tail_receives_live_events_then_end_and_close(http, fake) -> None:
    job = await create_job(http, logs=2, gate="go")
    async with http.stream("GET", _url(job["id"]), params=SCOPE) as response:
        reader = FrameReader(response)
        head = [await reader.next() for _ in range(3)]
        assert [f["event"] for f in head] == ["training.started", "training.log", "training.log"]
        fake.gates["go"].set()
        rest = await reader.until("end")
        assert [f["event"] for f in rest] == ["checkpoint.saved", "training.completed", "end"]
        assert [f.get("id") for f in rest] == ["4", "5", None]
        assert await reader.next() is None


async def test_twenty_concurrent_followers_see_identical_sequences(http, backend, fake) -> None:
    job = await create_job(http, logs=50, gate="go")
    results: list[list[dict[str, str]]] = []

    async def follow() -> None:
        results.append(await read_stream(http, job["id"]))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(follow)
        await backend._hub.wait_followers(20)
        fake.gates["go"].set()
    assert len(results) == 20
    assert all(r == results[0] for r in results)
    assert [f.get("id") for f in results[0]] == [str(i) for i in range(1, 54)] + [None]


async def test_backlog_is_coalesced_into_few_body_chunks(tmp_path, fake) -> None:
    prefill(tmp_path, "job_big", logs=4998)
    async with (
        open_local_backend(tmp_path, engine=fake.engine()) as backend,
        httpx.AsyncClient(base_url=backend.base_url, headers=headers_for(backend)) as http,
        http.stream("GET", _url("job_big"), params=SCOPE) as response,
    ):
        chunks = [chunk async for chunk in response.aiter_raw()]
    frames = b"".join(chunks).count(b"\n\n")
    assert frames == 5000 + 1
    assert len(chunks) < 250  # pages of 1000 events, one write each (TCP may split them)


async def test_client_disconnect_ends_the_server_side_stream(http, backend) -> None:
    job = await create_job(http, gate="never")
    with trio.fail_after(5):
        async with http.stream("GET", _url(job["id"]), params=SCOPE) as response:
            reader = FrameReader(response)
            await reader.until("training.log")
            await backend._hub.wait_followers(1)
        await backend._hub.wait_followers(0)


# --- follow_job as a unit, on virtual time -------------------------------------------------


class _Sink:
    def __init__(self) -> None:
        self.writes: list[tuple[float, bytes]] = []

    async def __call__(self, chunk: bytes) -> None:
        self.writes.append((trio.current_time(), chunk))


def _store_with_job(tmp_path, hub: EventHub) -> Store:
    store = Store.in_dir(tmp_path, on_append=hub.notify)
    store.create_job(job_id="j", org_id="o", project_id="p", name="n", config={})
    return store


async def test_pings_only_while_idle_on_virtual_time(tmp_path, autojump_clock) -> None:
    hub = EventHub()
    store = _store_with_job(tmp_path, hub)
    sink = _Sink()
    async with trio.open_nursery() as nursery:
        t0 = trio.current_time()
        nursery.start_soon(lambda: follow_job(store, hub, "j", 0, sink, ping_interval=10))
        await trio.sleep(35)
        store.append("j", {"type": "training.started"})
        await trio.sleep(12)
        store.append("j", {"type": "training.completed"})
    times = [(round(t - t0, 6), chunk) for t, chunk in sink.writes]
    assert [t for t, c in times if c == PING_FRAME] == [10, 20, 30, 45]
    data = [(t, c) for t, c in times if c != PING_FRAME]
    assert [t for t, _ in data] == [35, 47]
    assert data[0][1].startswith(b"id: 1\nevent: training.started\ndata: {")
    assert data[1][1].startswith(b"id: 2\nevent: training.completed\n")
    assert data[1][1].endswith(b"\n\n" + END_FRAME)
    store.close()


async def test_replay_pages_are_single_writes(tmp_path) -> None:
    hub = EventHub()
    store = _store_with_job(tmp_path, hub)
    store.append_many("j", [{"type": "training.log", "step": step} for step in range(2500)])
    store.append("j", {"type": "training.failed", "error": "x"})
    sink = _Sink()
    await follow_job(store, hub, "j", 0, sink, ping_interval=10, page_size=1000)
    sizes = [chunk.count(b"id: ") for _, chunk in sink.writes]
    assert sizes == [1000, 1000, 501]
    assert sink.writes[-1][1].endswith(END_FRAME)
    last = sink.writes[-1][1].split(b"\n\n")[-3]
    assert json.loads(last.split(b"data: ", 1)[1])["error"] == "x"
    store.close()


async def test_follow_after_terminal_sends_only_end(tmp_path) -> None:
    hub = EventHub()
    store = _store_with_job(tmp_path, hub)
    store.append("j", {"type": "training.cancelled"})
    sink = _Sink()
    await follow_job(store, hub, "j", 1, sink, ping_interval=10)
    assert [c for _, c in sink.writes] == [END_FRAME]
    assert hub.followers == 0
    store.close()


async def test_appends_from_threads_wake_followers(tmp_path) -> None:
    hub = EventHub()
    store = _store_with_job(tmp_path, hub)
    sink = _Sink()

    def produce() -> None:
        for step in range(300):
            store.append("j", {"type": "training.log", "step": step})
        store.append("j", {"type": "training.completed"})

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: follow_job(store, hub, "j", 0, sink, ping_interval=60))
            await hub.wait_followers(1)
            await trio.to_thread.run_sync(produce)
    text = b"".join(c for _, c in sink.writes)
    assert text.count(b"event: training.log\n") == 300
    assert text.endswith(END_FRAME)
    store.close()
