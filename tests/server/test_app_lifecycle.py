"""Backend lifecycle: prompt shutdown with open streams and threads, restart recovery, serve()."""

from __future__ import annotations

import time
from functools import partial

import httpx
import pytest
import trio

from arkor_trio._errors import ConfigError
from arkor_trio.server import open_local_backend, serve
from arkor_trio.server._store import Store

from .conftest import SCOPE, FrameReader, create_job, data_of, headers_for, read_stream


async def test_shutdown_is_prompt_with_open_stream_and_running_thread(fake, tmp_path) -> None:
    data = tmp_path / "d"
    async with (
        open_local_backend(data, engine=fake.engine()) as backend,
        httpx.AsyncClient(
            base_url=backend.base_url, headers=headers_for(backend), verify=False
        ) as http,
    ):
        job = await create_job(http, gate="never")
        async with http.stream(
            "GET", f"/v1/jobs/{job['id']}/events/stream", params=SCOPE
        ) as response:
            reader = FrameReader(response)
            await reader.until("training.log")
            started = time.monotonic()
            await backend.aclose()
            elapsed = time.monotonic() - started
            # The stream ends cleanly (no terminal event: the job was interrupted).
            rest = []
            while (frame := await reader.next()) is not None:
                rest.append(frame)
            assert all(f["event"] in ("training.log", "ping") for f in rest)
    assert elapsed < 0.5
    assert fake.outcomes[job["id"]] == "cancelled"  # the thread saw should_stop()

    # Next start: the interrupted job becomes failed, with a terminal event to replay.
    async with (
        open_local_backend(data, engine=fake.engine()) as backend,
        httpx.AsyncClient(base_url=backend.base_url, headers=headers_for(backend)) as http,
    ):
        frames = await read_stream(http, job["id"])
        assert [f["event"] for f in frames[-2:]] == ["training.failed", "end"]
        assert data_of(frames[-2])["error"] == "backend restarted"
        got = (await http.get(f"/v1/jobs/{job['id']}", params=SCOPE)).json()["job"]
        assert (got["status"], got["error"]) == ("failed", "backend restarted")


async def test_restart_fails_jobs_a_dead_process_left_queued_or_running(fake, tmp_path) -> None:
    store = Store.in_dir(tmp_path)
    for job_id in ("job_q", "job_r", "job_done"):
        store.create_job(job_id=job_id, org_id="org_local", project_id="proj_default",
                         name=job_id, config={"model": "m"})  # fmt: skip
    store.append("job_r", {"type": "training.started"})
    store.append("job_r", {"type": "training.log", "step": 1})
    store.append("job_done", {"type": "training.completed", "artifacts": []})
    store.close()  # as if the process died here
    async with (
        open_local_backend(tmp_path, engine=fake.engine()) as backend,
        httpx.AsyncClient(base_url=backend.base_url, headers=headers_for(backend)) as http,
    ):
        running = await read_stream(http, "job_r")
        assert [f["event"] for f in running] == [
            "training.started",
            "training.log",
            "training.failed",
            "end",
        ]
        queued = await read_stream(http, "job_q")
        assert [f["event"] for f in queued] == ["training.failed", "end"]
        jobs = {j["id"]: j for j in (await http.get("/v1/jobs", params=SCOPE)).json()["jobs"]}
        assert {k: v["status"] for k, v in jobs.items()} == {
            "job_q": "failed",
            "job_r": "failed",
            "job_done": "completed",
        }
        assert jobs["job_r"]["error"] == "backend restarted"
    assert fake.started == []


async def test_exit_by_exception_stops_everything_and_reraises_it(fake, tmp_path) -> None:
    class Boom(Exception):
        pass

    try:
        async with open_local_backend(tmp_path, engine=fake.engine()) as backend:
            async with httpx.AsyncClient(
                base_url=backend.base_url, headers=headers_for(backend), verify=False
            ) as http:
                await create_job(http, gate="never")
            raise Boom
    except Boom:
        pass
    else:
        raise AssertionError("Boom was swallowed")
    assert len(fake.outcomes) == 1
    assert list(fake.outcomes.values()) == ["cancelled"]


async def test_temp_data_dir_is_removed_at_exit(fake) -> None:
    async with open_local_backend(engine=fake.engine()) as backend:
        data_dir = backend.data_dir
        assert (data_dir / "token").exists()
        assert (data_dir / "arkor-local.sqlite3").exists()
    assert not data_dir.exists()


async def test_client_helper_talks_to_the_local_scope(backend) -> None:
    async with backend.client() as client:
        assert client.base_url == backend.base_url
        assert client.scope == ("local", "default")
        me = await client.me()
        assert me["orgs"][0]["slug"] == "local"
        assert await client.list_jobs() == []


async def test_serve_prints_exports_and_runs_until_cancelled(fake, tmp_path, capsys) -> None:
    async with trio.open_nursery() as nursery:
        backend = await nursery.start(
            partial(serve, "127.0.0.1", 0, tmp_path, 15.0, engine=fake.engine())
        )
        async with httpx.AsyncClient(
            base_url=backend.base_url, headers=headers_for(backend), verify=False
        ) as http:
            assert (await http.get("/v1/me")).status_code == 200
        nursery.cancel_scope.cancel()
    out = capsys.readouterr().out
    assert f"export ARKOR_CLOUD_API_URL={backend.base_url}" in out
    assert f"export ARKOR_TOKEN={backend.token}" in out


async def test_outer_cancellation_still_joins_training_threads(fake, tmp_path) -> None:
    with trio.CancelScope() as scope:
        async with (
            open_local_backend(tmp_path, engine=fake.engine()) as backend,
            httpx.AsyncClient(
                base_url=backend.base_url, headers=headers_for(backend), verify=False
            ) as http,
        ):
            job = await create_job(http, gate="never")
            async with http.stream(
                "GET", f"/v1/jobs/{job['id']}/events/stream", params=SCOPE
            ) as response:
                await FrameReader(response).until("training.started")
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    # The thread was told to stop and joined before the store closed.
    assert fake.outcomes == {job["id"]: "cancelled"}


async def test_a_data_dir_serves_one_backend_at_a_time(fake, tmp_path) -> None:
    async with open_local_backend(tmp_path, engine=fake.engine()):
        with pytest.raises(ConfigError, match="in use by another local backend") as info:
            async with open_local_backend(tmp_path, engine=fake.engine()):
                pass  # pragma: no cover
        assert info.value.field == "data_dir"
    async with open_local_backend(tmp_path, engine=fake.engine()) as again:
        assert again.data_dir == tmp_path.resolve()
