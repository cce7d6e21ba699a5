"""examples/fastapi_service.py under uvicorn (asyncio, its own thread) against a local backend.

The test is a trio program: it runs the local backend, serves the FastAPI app with uvicorn in a
worker thread (``asyncio.run``, as uvicorn does), and talks to it over HTTP on 127.0.0.1. An
asyncio ticker in the service's loop records the loop's worst stall while two runs train: a
loop blocked by the training client would show the runs' whole duration.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio
import uvicorn

from arkor_trio import Trainer
from arkor_trio.server import open_local_backend
from tests.server.conftest import headers_for, read_stream

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from arkor_trio.server import LocalBackend

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TICK = 0.005


class Service:
    """The app under uvicorn in a thread, with a stall-recording ticker in its loop."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)  # connections queue here until uvicorn accepts: no readiness wait
        self.base_url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stalls: list[float] = []
        self.recording = False
        self.problems: list[dict[str, Any]] = []

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(TICK)
            if self.recording:
                self.stalls.append(loop.time() - before - TICK)

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop.set_exception_handler(lambda _loop, ctx: self.problems.append(ctx))
        ticker = asyncio.create_task(self._tick())
        try:
            await self.server.serve(sockets=[self.sock])
        finally:
            ticker.cancel()

    def run(self) -> None:
        asyncio.run(self._main())

    def stop(self) -> None:
        if self.loop is None:  # not started yet: uvicorn checks the flag after its startup
            self.server.should_exit = True
        else:
            self.loop.call_soon_threadsafe(setattr, self.server, "should_exit", True)


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    async with open_local_backend(tmp_path / "backend", max_concurrent_jobs=2) as b:
        yield b


async def sse_events(http: httpx.AsyncClient, job_id: str, **headers: str) -> list[dict[str, Any]]:
    """Read the relayed stream to its end: each frame as {id, event, data}."""
    frames: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async with http.stream("GET", f"/runs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if not line:
                if current:
                    frames.append(current)
                current = {}
                continue
            key, _, value = line.partition(": ")
            current[key] = json.loads(value) if key == "data" else value
    return frames


async def test_fastapi_service_trains_streams_and_cancels(
    backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    example = importlib.import_module("fastapi_service")
    service = Service(example.create_app(backend.client))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, service.run)
        try:
            async with httpx.AsyncClient(base_url=service.base_url, timeout=60) as http:
                with trio.fail_after(120):
                    await exercise(http, service, backend)
        finally:
            service.stop()  # also on failure: the thread cannot be cancelled, only told
    service.sock.close()
    assert service.problems == []


async def backend_frames(backend: LocalBackend, job_id: str) -> list[tuple[str, str, Any]]:
    """The job's frames as the backend's own SSE stream sends them: (id, type, data)."""
    async with httpx.AsyncClient(base_url=backend.base_url, headers=headers_for(backend)) as http:
        frames = await read_stream(http, job_id)
    # Events carry an id; pings and the closing `end` frame do not, and are not relayed.
    return [(f["id"], f["event"], json.loads(f["data"])) for f in frames if "id" in f]


async def exercise(http: httpx.AsyncClient, service: Service, backend: LocalBackend) -> None:
    # Hostile or wrong input: 400 naming the field, 404 for unknown runs; never a 500.
    for body, field in [
        ({"name": "", "max_steps": 5}, "name"),
        ({"name": "x" * 101, "max_steps": 5}, "name"),
        ({"name": "ok", "max_steps": 0}, "max_steps"),
        ({"name": "ok"}, "max_steps"),
    ]:
        response = await http.post("/runs", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["field"] == field
    assert (await http.post("/runs", content=b"{not json")).status_code == 400
    too_big = await http.post("/runs", content=b" " * 17_000, headers={"content-type": "x/y"})
    assert (too_big.status_code, too_big.json()["field"]) == (413, "body")

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(40):
            yield b" " * 1024

    too_big = await http.post("/runs", content=chunked())
    assert (too_big.status_code, too_big.json()["field"]) == (413, "body")
    assert (await http.get("/runs/nope")).status_code == 404
    assert (await http.get("/runs/nope/events")).status_code == 404
    assert (await http.delete("/runs/nope")).status_code == 404
    assert (await http.get("/runs")).json() == {"runs": []}

    # Two runs train at once while the ticker watches the service's loop.
    service.recording = True
    began = time.monotonic()
    ids: list[str] = []
    for name in ("api-a", "api-b"):
        response = await http.post("/runs", json={"name": name, "max_steps": 30})
        assert response.status_code == 202, response.text
        ids.append(response.json()["job_id"])
    streams: dict[str, list[dict[str, Any]]] = {}

    async def follow(job_id: str) -> None:
        streams[job_id] = await sse_events(http, job_id)

    async with trio.open_nursery() as nursery:
        for job_id in ids:
            nursery.start_soon(follow, job_id)
    trained_for = time.monotonic() - began
    service.recording = False

    for job_id in ids:
        frames = streams[job_id]
        assert frames[0]["event"] == "training.started"
        assert frames[-1]["event"] == "training.completed"
        steps = [f["data"]["step"] for f in frames if f["event"] == "training.log"]
        assert steps == list(range(1, 31))
        assert [int(f["id"]) for f in frames] == sorted(int(f["id"]) for f in frames)
        run = (await http.get(f"/runs/{job_id}", params={"wait": 30})).json()
        assert (run["status"], run["step"]) == ("completed", 30)  # progress from the callbacks
        assert isinstance(run["loss"], float)
        # Resuming after an id relays only what came after it.
        # The relay is the Arkor stream itself: same ids, same camelCase JSON, no snake_case.
        original = await backend_frames(backend, job_id)
        assert [(f["id"], f["event"], f["data"]) for f in frames] == original
        assert all(f["data"]["jobId"] == job_id for f in frames)
        assert not any("job_id" in f["data"] or "eval_loss" in f["data"] for f in frames)
        middle = frames[len(frames) // 2]["id"]
        rest = await sse_events(http, job_id, **{"Last-Event-ID": middle})
        assert [f["id"] for f in rest] == [f["id"] for f in frames[len(frames) // 2 + 1 :]]

    worst = max(service.stalls)
    assert len(service.stalls) > 20
    # A loop blocked by the runs would stall for about `trained_for` seconds.
    assert worst < min(1.0, trained_for / 2), (worst, trained_for)

    bad_id = await http.get(f"/runs/{ids[0]}/events", headers={"Last-Event-ID": "9" * 200})
    assert bad_id.status_code == 400
    assert (await http.get(f"/runs/{ids[0]}", params={"wait": 1e9})).status_code == 400

    # DELETE cancels the follower task; Trainer.run sends the backend cancel before it ends.
    response = await http.post("/runs", json={"name": "api-cancel", "max_steps": 100_000})
    long_id = response.json()["job_id"]
    async with http.stream("GET", f"/runs/{long_id}/events") as events:
        async for line in events.aiter_lines():
            if line == "event: training.log":
                break  # training for real now; leaving closes the relay
    cancelled = (await http.delete(f"/runs/{long_id}")).json()
    assert cancelled["status"] == "cancelled"
    async with backend.client() as client:
        result = await Trainer.attach(long_id, client=client).wait()
    assert result.job.status == "cancelled"
    listed = (await http.get("/runs")).json()["runs"]
    assert sorted(r["status"] for r in listed) == ["cancelled", "completed", "completed"]
