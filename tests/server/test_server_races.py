"""Races of the local backend (issue 17): the hub's memory, a cancel during pending recovery, a
feed subscription replaced while its task was waking, and a job created as shutdown begins."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import httpx
import trio
import trio.testing

from arkor_trio.server import open_local_backend
from arkor_trio.server._runner import RECORD_RETRY, RESTARTED, JobRunner
from arkor_trio.server._store import RECOVERY_ID_GAP, Store
from arkor_trio.server._ws import _SendQueue

from .conftest import FAKE_MODEL, SCOPE, headers_for, read_stream
from .test_ws import connect, sub, until_end

if TYPE_CHECKING:
    from pathlib import Path

    from .conftest import FakeEngine


async def test_the_hub_forgets_jobs_nobody_follows(tmp_path: Path, fake: FakeEngine) -> None:
    """Defect 12: ``EventHub._changed`` kept one entry per job ever followed to its end."""
    data = tmp_path / "data"
    data.mkdir()
    jobs = [f"job_{i:03d}" for i in range(50)]
    store = Store.in_dir(data)
    for job in jobs:
        store.create_job(job_id=job, org_id="o", project_id="proj_default", name=job, config={})
        store.append_many(job, [{"type": "training.started"}, {"type": "training.completed"}])
    store.close()
    async with (
        open_local_backend(data, engine=fake.engine()) as backend,
        httpx.AsyncClient(base_url=backend.base_url, headers=headers_for(backend)) as http,
        connect(backend) as ws,
    ):
        for job in jobs:
            assert (await read_stream(http, job))[-1]["event"] == "end"
            await sub(ws, job)
            assert (await until_end(ws, job))[-1]["type"] == "end"
        await backend._hub.wait_followers(0)
        assert len(backend._hub._changed) == 0


class _Records(logging.Handler):
    """Log records about one job; ``arrived`` is set by each (all are emitted on the loop)."""

    def __init__(self, job: str) -> None:
        super().__init__()
        self.job = job
        self.messages: list[str] = []
        self.arrived = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.job in message:
            self.messages.append(message)
            self.arrived.set()


async def test_a_cancel_while_recovery_is_pending_skips_the_gap_and_recovery_stands_down(
    tmp_path: Path, fake: FakeEngine, mock_clock: trio.testing.MockClock
) -> None:
    """Defect 6: the cancel took id 3, an id a lost event may have had; the pending recovery then
    appended nothing yet logged "recorded its failure"."""
    store = Store.in_dir(tmp_path)
    store.create_job(job_id="job_left", org_id="o", project_id="proj_default", name="n",
                     config={})  # fmt: skip
    store.append_many("job_left", [{"type": "training.started"}, {"type": "training.log"}])
    records = _Records("job_left")
    logger = logging.getLogger("arkor_trio.server")
    logger.addHandler(records)
    try:
        runner = JobRunner(store, fake.engine(), tmp_path)
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run)
            runner.record_later("job_left", RESTARTED, skip=RECOVERY_ID_GAP)  # recovery refused
            assert await runner.cancel("job_left") is True
            ids = [(seq, kind) for seq, kind, _ in store.events_after("job_left", 0, 10)]
            assert ids == [
                (1, "training.started"),
                (2, "training.log"),
                (3 + RECOVERY_ID_GAP, "training.cancelled"),
            ]
            mock_clock.jump(RECORD_RETRY)  # the pending recovery retries now
            await records.arrived.wait()
            runner.stop()
        assert len(store.events_after("job_left", 0, 10)) == 3
        assert all("recorded its failure" not in m for m in records.messages), records.messages
        assert any("already ended" in m for m in records.messages), records.messages
    finally:
        logger.removeHandler(records)
        store.close()


async def test_a_replaced_subscription_woken_from_a_full_queue_queues_nothing() -> None:
    """Item (a): a producer unparked from ``not_full`` and cancelled before it ran used to
    append its message after the new subscription's first one."""
    out = _SendQueue(3)
    for message in ("a", "b", "c"):
        await out.put(message)
    old = trio.CancelScope()

    async def old_subscription() -> None:
        with old:
            await out.put("old event")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(old_subscription)
        await trio.testing.wait_all_tasks_blocked()  # parked: the queue is full
        out.take()  # the sender takes a batch: the old task is woken ...
        out.take()
        old.cancel()  # ... and cancelled by a re-subscribe before it runs
        await out.put("subscribed")
    assert list(out.items) == ["c", "subscribed"]


async def test_a_job_created_as_shutdown_begins_is_answered_and_failed_on_restart(
    tmp_path: Path, fake: FakeEngine, monkeypatch: Any
) -> None:
    """Item (b): the runner stopped while ``POST /v1/jobs`` wrote its row: a 500, and a job left
    queued that the client was never told about."""
    written, proceed = threading.Event(), threading.Event()
    create_job = Store.create_job

    def slow_create(self: Store, **kwargs: Any) -> None:
        create_job(self, **kwargs)
        written.set()
        proceed.wait(10)

    runners: list[JobRunner] = []
    run = JobRunner.run

    async def run_and_keep(self: JobRunner, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        runners.append(self)
        await run(self, task_status=task_status)

    monkeypatch.setattr(Store, "create_job", slow_create)
    monkeypatch.setattr(JobRunner, "run", run_and_keep)
    data = tmp_path / "data"
    responses: list[httpx.Response] = []
    async with (
        open_local_backend(data, engine=fake.engine()) as backend,
        httpx.AsyncClient(base_url=backend.base_url, headers=headers_for(backend)) as http,
    ):

        async def create() -> None:
            body = {"name": "late", "config": {"model": FAKE_MODEL}}
            responses.append(await http.post("/v1/jobs", params=SCOPE, json=body))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(create)
            await trio.to_thread.run_sync(written.wait)
            runners[0].stop()  # shutdown begins while the row is being written
            proceed.set()
    (response,) = responses
    assert response.status_code == 201, response.text
    job = response.json()["job"]
    assert job["status"] == "queued"
    monkeypatch.undo()
    async with (
        open_local_backend(data, engine=fake.engine()) as backend,
        httpx.AsyncClient(base_url=backend.base_url, headers=headers_for(backend)) as http,
    ):
        frames = await read_stream(http, job["id"])
    assert [f["event"] for f in frames] == ["training.failed", "end"]
    assert "backend restarted" in frames[0]["data"]
