"""``GET /v1/events/ws``: the job-feed protocol over real sockets against a real backend."""

from __future__ import annotations

import json
import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed

from arkor_trio._version import USER_AGENT
from arkor_trio.server import WsLimits, open_local_backend
from arkor_trio.server._store import Store
from arkor_trio.wire._ws_connect import open_ws

from .conftest import FAKE_MODEL, create_job, headers_for, prefill, read_stream

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from trio_websocket import WebSocketConnection

    from arkor_trio.server import LocalBackend

SCOPE_QS = "?orgSlug=local&projectSlug=default"


def ws_url(backend: LocalBackend, query: str = SCOPE_QS) -> str:
    return backend.base_url.replace("http://", "ws://") + "/v1/events/ws" + query


@asynccontextmanager
async def connect(
    backend: LocalBackend, *, token: str | None = None, client: str = USER_AGENT, query=SCOPE_QS
) -> AsyncIterator[WebSocketConnection]:
    headers = [(b"authorization", f"Bearer {token or backend.token}".encode())]
    if client:
        headers.append((b"x-arkor-client", client.encode()))
    async with open_ws(
        ws_url(backend, query), headers, connect_timeout=5, max_message_size=1 << 20
    ) as ws:
        try:
            yield ws
        finally:
            _pending.pop(id(ws), None)


_pending: dict[int, list[dict[str, Any]]] = {}


async def recv(ws: WebSocketConnection, *, skip_pings: bool = True) -> dict[str, Any]:
    """The next protocol message (a text message may hold a batch: a JSON array of them)."""
    queue = _pending.setdefault(id(ws), [])
    while True:
        if not queue:
            with trio.fail_after(5):
                decoded = json.loads(await ws.get_message())
            queue.extend(decoded if isinstance(decoded, list) else [decoded])
        message = queue.pop(0)
        if not (skip_pings and message["type"] == "ping"):
            return message


async def until_end(ws: WebSocketConnection, job: str) -> list[dict[str, Any]]:
    seen = []
    while True:
        message = await recv(ws)
        seen.append(message)
        if message["type"] == "end" and message["job"] == job:
            return seen


async def sub(ws: WebSocketConnection, job: str, after: str | None = None) -> None:
    await ws.send_message(json.dumps({"type": "subscribe", "job": job, "after": after}))


async def close_code(ws: WebSocketConnection) -> int:
    with trio.fail_after(5):
        while True:
            try:
                await ws.get_message()
            except ConnectionClosed as exc:
                return exc.reason.code


async def test_replay_carries_the_sse_ids_and_payloads_then_end(backend, http) -> None:
    job = await create_job(http, logs=3)
    frames = await read_stream(http, job["id"])
    async with connect(backend) as ws:
        await sub(ws, job["id"])
        got = await until_end(ws, job["id"])
    assert got[0] == {"type": "subscribed", "job": job["id"], "recovered": False}
    events = got[1:-1]
    assert [e["id"] for e in events] == [f["id"] for f in frames[:-1]]
    assert [e["event"] for e in events] == [f["event"] for f in frames[:-1]]
    assert [e["data"] for e in events] == [json.loads(f["data"]) for f in frames[:-1]]
    assert all(e["type"] == "event" and e["job"] == job["id"] for e in events)


async def test_after_resumes_exactly_and_says_recovered(backend, http) -> None:
    job = await create_job(http, logs=3)
    await read_stream(http, job["id"])  # the job has ended: event 3 exists
    async with connect(backend) as ws:
        await sub(ws, job["id"], "3")
        got = await until_end(ws, job["id"])
    assert got[0]["recovered"] is True
    assert [e["id"] for e in got[1:-1]] == ["4", "5", "6"]


async def test_many_jobs_on_one_socket_live_and_replayed(backend, http, fake) -> None:
    live = await create_job(http, "live", logs=2, gate="g")
    prefill(backend.data_dir, "job_done", 2)  # (one job trains at a time: this one is stored)
    done = {"id": "job_done"}
    async with connect(backend) as ws:
        await sub(ws, live["id"])
        await sub(ws, done["id"])
        seen: dict[str, list[str]] = {live["id"]: [], done["id"]: []}
        while len(seen[live["id"]]) < 4 or not seen[done["id"]] or seen[done["id"]][-1] != "end":
            message = await recv(ws)
            seen[message["job"]].append(message.get("id") or message["type"])
        fake.gates["g"].set()
        rest = await until_end(ws, live["id"])
    assert seen[done["id"]] == ["subscribed", "1", "2", "3", "4", "end"]
    assert seen[live["id"]] == ["subscribed", "1", "2", "3"]
    assert [m.get("id") for m in rest] == ["4", "5", None]


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"token": "wrong"}, 4401),
        ({"client": ""}, 4426),
        ({"client": "arkor/9.0.0"}, 4426),
        ({"query": ""}, 4400),
        ({"query": "?orgSlug=local&projectSlug=other"}, 4404),
    ],
)
async def test_gate_and_scope_close_with_documented_codes(backend, kwargs, code) -> None:
    async with connect(backend, **kwargs) as ws:
        assert await close_code(ws) == code


async def test_hostile_messages_get_errors_and_the_socket_keeps_working(backend, http) -> None:
    job = await create_job(http, logs=1)
    store = Store.in_dir(backend.data_dir)
    try:
        store.create_job(
            job_id="job_other", org_id="org_x", project_id="proj_other", name="x", config={}
        )
    finally:
        store.close()
    bad: list[str | bytes] = [
        "{not json",
        "42",
        json.dumps({"type": "dance"}),
        json.dumps({"type": "subscribe"}),
        json.dumps({"type": "subscribe", "job": "x" * 500}),
        json.dumps({"type": "subscribe", "job": job["id"], "after": "-1"}),
        json.dumps({"type": "subscribe", "job": job["id"], "after": 3}),
        b"\x00binary",
        json.dumps({"type": "subscribe", "job": "job_missing"}),
        json.dumps({"type": "subscribe", "job": "job_other"}),
    ]
    async with connect(backend) as ws:
        for message in bad:
            await ws.send_message(message)
        errors = [await recv(ws) for _ in bad]
        await sub(ws, job["id"])
        got = await until_end(ws, job["id"])
    assert [e["type"] for e in errors] == ["error"] * len(bad)
    assert [e["status"] for e in errors] == [400] * 8 + [404, 404]
    assert "malformed JSON" in errors[0]["error"]
    assert "unknown message type 'dance'" in errors[2]["error"]
    assert "'after'" in errors[5]["error"]
    assert errors[5]["job"] == job["id"]
    assert errors[9]["error"] == "job job_other not found"
    assert [m["type"] for m in got] == ["subscribed", "event", "event", "event", "event", "end"]


async def test_a_2mib_message_closes_1009_and_other_sockets_carry_on(backend, http) -> None:
    job = await create_job(http, logs=1)
    async with connect(backend) as other, connect(backend) as ws:
        await ws.send_message("x" * (2 * 1024 * 1024))
        assert await close_code(ws) == 1009
        await sub(other, job["id"])
        assert (await until_end(other, job["id"]))[-1]["type"] == "end"


async def test_subscription_cap_and_a_10000_message_flood(tmp_path, fake) -> None:
    limits = WsLimits(max_subscriptions=2)
    async with (
        open_local_backend(tmp_path / "d", engine=fake.engine(), ws_limits=limits) as b,
        httpx.AsyncClient(base_url=b.base_url, headers=headers_for(b)) as http,
    ):
        jobs = [(await create_job(http, f"j{i}", logs=0, gate="cap"))["id"] for i in range(3)]
        prefill(b.data_dir, "job_0", 1)
        async with connect(b) as ws, connect(b) as bystander:
            for job in jobs:
                await sub(ws, job)
            got = [await recv(ws)]
            while got[-1]["type"] != "error":
                got.append(await recv(ws))
            refused = [m for m in got if m["type"] == "error"]
            assert [m["type"] for m in got].count("subscribed") == 2
            assert len(refused) == 1
            assert refused[0]["job"] == jobs[2]
            assert refused[0]["status"] == 429
            assert "limit" in refused[0]["error"]

            async def flood() -> None:
                for i in range(10_000):
                    await ws.send_message(json.dumps({"type": "subscribe", "job": f"nope_{i}"}))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                errors = 0
                while errors < 10_000:
                    message = await recv(ws)
                    errors += message["type"] == "error"
                    assert message.get("status") in (None, 404)
                fake.gates["cap"].set()
            await sub(bystander, "job_0")
            assert (await until_end(bystander, "job_0"))[-1]["type"] == "end"


async def test_retention_makes_reset_real(tmp_path, fake) -> None:
    async with open_local_backend(tmp_path / "d", engine=fake.engine(), retain_events=3) as b:
        store = Store.in_dir(b.data_dir, retain_events=3)
        try:
            store.create_job(
                job_id="job_r", org_id="org_local", project_id="proj_default", name="r", config={}
            )
            for event in [{"type": "training.started"}, *[{"type": "training.log"}] * 3]:
                store.append("job_r", event)
            store.append("job_r", {"type": "training.completed", "artifacts": []})
            assert store.event_bounds("job_r") == (3, 5)
        finally:
            store.close()

        async def follow(after: str | None) -> list[dict[str, Any]]:
            async with connect(b) as ws:
                await sub(ws, "job_r", after)
                return await until_end(ws, "job_r")

        fresh = await follow(None)
        assert [m["type"] for m in fresh[:2]] == ["subscribed", "reset"]
        assert "events before 3 are no longer kept" in fresh[1]["reason"]
        assert [m.get("id") for m in fresh[2:]] == ["3", "4", "5", None]
        old = await follow("1")
        assert old[0]["recovered"] is False
        assert old[1]["type"] == "reset"
        assert [m.get("id") for m in old[2:]] == ["3", "4", "5", None]
        exact = await follow("2")
        assert exact[0]["recovered"] is True
        assert [m.get("id") for m in exact[1:]] == ["3", "4", "5", None]
        future = await follow("99")
        assert future[1]["type"] == "reset"
        assert "past the log" in future[1]["reason"]
        assert [m.get("id") for m in future[2:]] == [None]  # as SSE: nothing again, then end


async def test_heartbeat_while_idle(tmp_path, fake) -> None:
    async with (
        open_local_backend(tmp_path / "d", engine=fake.engine(), ping_interval=0.05) as b,
        connect(b) as ws,
    ):
        assert await recv(ws, skip_pings=False) == {"type": "ping"}
        assert await recv(ws, skip_pings=False) == {"type": "ping"}


async def test_shutdown_closes_1001(tmp_path, fake) -> None:
    async with open_local_backend(tmp_path / "d", engine=fake.engine()) as b:
        prefill(b.data_dir, "job_s", 1)
        async with connect(b) as ws:
            await sub(ws, "job_s")
            await until_end(ws, "job_s")
            await b.aclose()
            assert await close_code(ws) == 1001


async def test_unsubscribe_stops_a_live_job(backend, http, fake) -> None:
    live = await create_job(http, "live", logs=1, gate="u")
    prefill(backend.data_dir, "job_done", 1)
    done = {"id": "job_done"}
    async with connect(backend) as ws:
        await sub(ws, live["id"])
        assert [(await recv(ws))["type"] for _ in range(3)] == ["subscribed", "event", "event"]
        await ws.send_message(json.dumps({"type": "unsubscribe", "job": live["id"]}))
        await sub(ws, done["id"])
        first = await recv(ws)  # handled after the unsubscribe: live is no longer followed
        assert first == {"type": "subscribed", "job": done["id"], "recovered": False}
        fake.gates["u"].set()  # live now emits its last events, to nobody on this socket
        got = [first, *await until_end(ws, done["id"])]
        await read_stream(http, live["id"])  # live has ended: its last events were appended
        await sub(ws, done["id"])  # a probe: anything still queued for live comes before it
        got += await until_end(ws, done["id"])
    assert {m["job"] for m in got} == {done["id"]}


async def test_queued_messages_are_batched_as_json_arrays_in_order(backend) -> None:
    prefill(backend.data_dir, "job_big", 2000)
    async with connect(backend) as ws:
        await sub(ws, "job_big")
        texts = 0
        got: list[dict[str, Any]] = []
        while not got or got[-1]["type"] != "end":
            with trio.fail_after(5):
                decoded = json.loads(await ws.get_message())
            texts += 1
            got.extend(decoded if isinstance(decoded, list) else [decoded])
    events = [m for m in got if m["type"] == "event"]
    assert [e["id"] for e in events] == [str(n) for n in range(1, 2003)]
    assert texts < len(got) / 10  # thousands of messages in a few writes


async def test_a_client_batch_is_handled_element_by_element(backend) -> None:
    prefill(backend.data_dir, "job_b1", 1)
    batch = [
        {"type": "subscribe", "job": "job_b1", "after": "2"},
        {"type": "nope"},
        "not an object",
    ]
    async with connect(backend) as ws:
        await ws.send_message(json.dumps(batch))
        got = [await recv(ws) for _ in range(5)]
    kinds = sorted((m["type"], m.get("id") or m.get("status")) for m in got)
    assert kinds == [
        ("end", None),
        ("error", 400),
        ("error", 400),
        ("event", "3"),
        ("subscribed", None),
    ]


async def test_a_consumer_too_far_behind_is_closed_and_others_carry_on(
    tmp_path, fake, caplog
) -> None:
    """A client that reads more slowly than its jobs produce (tiny receive buffer) keeps the
    server's send queue full; after ``send_timeout`` of that its socket is closed with 4408,
    while another socket is served normally."""
    import socket

    from trio_websocket import wrap_client_stream

    caplog.set_level(logging.INFO, "arkor_trio.server")
    limits = WsLimits(send_timeout=0.2, send_queue=64)
    async with open_local_backend(tmp_path / "d", engine=fake.engine(), ws_limits=limits) as b:
        for i in range(40):  # ~14 MB of messages: more than the kernel buffers hold
            prefill(b.data_dir, f"job_{i}", 1500)
        host, port = b.base_url.removeprefix("http://").split(":")
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect((host, int(port)))
        stream = trio.SocketStream(sock)
        headers = [
            (b"authorization", f"Bearer {b.token}".encode()),
            (b"x-arkor-client", USER_AGENT.encode()),
        ]
        try:
            async with trio.open_nursery() as nursery:
                slow = await wrap_client_stream(
                    nursery, stream, host, "/v1/events/ws" + SCOPE_QS, extra_headers=headers,
                    message_queue_size=1,
                )  # fmt: skip
                for i in range(40):
                    await sub(slow, f"job_{i}")
                # The slow socket reads nothing for now; meanwhile another one works.
                async with connect(b) as other:
                    await sub(other, "job_0")
                    assert len(await until_end(other, "job_0")) == 1504
                # Then it reads, far more slowly than its 40 jobs' backlog arrives.
                with trio.fail_after(20):
                    while True:
                        try:
                            await slow.get_message()
                        except ConnectionClosed as exc:
                            code = exc.reason.code
                            break
                        await trio.sleep(0.005)
                assert code == 4408
                assert "stayed full" in caplog.text
                nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(stream)


async def test_a_feed_in_another_project_follows_that_projects_jobs(backend, http) -> None:
    # The socket's scope is looked up like every HTTP route's: a created project works, and
    # its jobs are unknown to a socket of another project.
    created = await http.post(
        "/v1/projects", params={"orgSlug": "local"}, json={"name": "Bot", "slug": "bot"}
    )
    assert created.status_code == 201, created.text
    response = await http.post(
        "/v1/jobs",
        params={"orgSlug": "local", "projectSlug": "bot"},
        json={"name": "b", "config": {"model": FAKE_MODEL, "logs": 2}},
    )
    assert response.status_code == 201, response.text
    job = response.json()["job"]["id"]
    async with connect(backend, query="?orgSlug=local&projectSlug=bot") as ws:
        await sub(ws, job)
        got = await until_end(ws, job)
    assert got[0]["type"] == "subscribed"
    assert [m["type"] for m in got[1:-1]].count("event") >= 1
    async with connect(backend) as ws:  # the default project's socket
        await sub(ws, job)
        assert await recv(ws) == {
            "type": "error",
            "job": job,
            "status": 404,
            "error": f"job {job} not found",
        }
    async with connect(backend, query="?orgSlug=local&projectSlug=nope") as ws:
        assert await close_code(ws) == 4404
