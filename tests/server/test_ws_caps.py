"""Feed caps across sockets and on error answers; hostile JSON is a 400 (issue 18, item 6)."""

from __future__ import annotations

import json

import httpx

from arkor_trio.server import WsLimits, open_local_backend

from .conftest import create_job, headers_for
from .test_ws import close_code, connect, recv, sub


async def _subscribed(ws) -> dict:
    while (message := await recv(ws))["type"] != "subscribed":
        pass
    return message


async def _errors(ws, count: int) -> list[dict]:
    found = []
    while len(found) < count:
        message = await recv(ws)
        if message["type"] == "error":
            found.append(message)
    return found


async def test_a_lone_surrogate_job_id_and_deep_nesting_are_a_400(backend) -> None:
    async with connect(backend) as ws:
        await ws.send_message('{"type":"subscribe","job":"job_\\ud800","after":null}')
        (error,) = await _errors(ws, 1)
        assert (error["status"], error["job"]) == (400, None)
        assert "job id" in error["error"]
        await ws.send_message("[" * 30_000)
        (error,) = await _errors(ws, 1)
        assert error["status"] == 400
        assert "nested too deeply" in error["error"]
        await ws.send_message('{"type":"subscribe","job":"job_none","after":null}')
        assert (await _errors(ws, 1))[0]["status"] == 404  # the socket is still served


async def test_one_batch_draws_a_bounded_number_of_errors(tmp_path, fake) -> None:
    limits = WsLimits(max_errors_per_message=4)
    async with (
        open_local_backend(tmp_path / "d", engine=fake.engine(), ws_limits=limits) as b,
        connect(b) as ws,
    ):
        await ws.send_message(json.dumps([{}] * 5000))  # 5,000 bad messages in 15 KB
        errors = await _errors(ws, 5)
        assert [e["status"] for e in errors] == [400] * 5
        assert "4996 more messages of this batch were refused" in errors[-1]["error"]
        await ws.send_message(json.dumps({"type": "subscribe", "job": "job_x"}))
        assert (await _errors(ws, 1))[0]["status"] == 404  # nothing else was queued


async def test_a_socket_over_its_error_budget_is_closed_1008(tmp_path, fake) -> None:
    limits = WsLimits(max_errors_per_message=4, max_errors_per_socket=10)
    async with (
        open_local_backend(tmp_path / "d", engine=fake.engine(), ws_limits=limits) as b,
        connect(b) as ws,
        connect(b) as other,
    ):
        for _ in range(3):  # 12 answers: over the socket's 10
            await ws.send_message(json.dumps([{}] * 4))
        assert await close_code(ws) == 1008
        await other.send_message("{}")
        assert (await _errors(other, 1))[0]["status"] == 400


async def test_subscriptions_are_capped_across_sockets(tmp_path, fake) -> None:
    limits = WsLimits(max_total_subscriptions=3)
    async with (
        open_local_backend(tmp_path / "d", engine=fake.engine(), ws_limits=limits) as b,
        httpx.AsyncClient(base_url=b.base_url, headers=headers_for(b)) as http,
    ):
        jobs = [(await create_job(http, f"j{i}", logs=0, gate="g"))["id"] for i in range(4)]
        async with connect(b) as one, connect(b) as two:
            await sub(one, jobs[0])
            await sub(one, jobs[1])
            await sub(two, jobs[2])
            for ws in (one, one, two):
                await _subscribed(ws)
            await sub(two, jobs[3])
            (refused,) = await _errors(two, 1)
            assert (refused["job"], refused["status"]) == (jobs[3], 429)
            assert "the backend's sockets already follow 3 jobs" in refused["error"]
            # An unsubscription gives its place back (answered in order: "{}" is a 400).
            await one.send_message(json.dumps({"type": "unsubscribe", "job": jobs[0]}))
            await one.send_message("{}")
            await _errors(one, 1)
            await sub(two, jobs[3])
            assert (await _subscribed(two))["job"] == jobs[3]
