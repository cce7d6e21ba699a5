"""Resilience matrix, restarts (issue 4): the backend dies and comes back on the same data dir;
the client process "restarts" (a new Trainer attaches with a FileCursorStore) mid-run.
"""

from __future__ import annotations

import json

import pytest
import trio

from arkor_trio import FileCursorStore, HuggingfaceDataset, Trainer, create_trainer
from arkor_trio.server._store import RECOVERY_ID_GAP
from arkor_trio.testing import CutAfterEvents, CutKind, PassThrough, Plan, open_chaos_proxy

from ._checks import (
    assert_exactly_once,
    assert_resume_chain,
    seen_resume_ids,
    stream_records,
)
from ._harness import (
    BOUND,
    FAST,
    Recorder,
    RecordingStore,
    backend_and_proxy,
    backend_log,
    proxy_client,
    start_backend,
    wait_for_record,
)
from ._scripted import MODEL, ScriptedEngine

DATASET = HuggingfaceDataset("arkorlab/triage-demo")


async def test_backend_killed_and_restarted_on_the_same_data_dir(tmp_path):
    """A job left running by a dying backend ends failed ("backend restarted") after restart.

    The trainer follows it through the proxy, sees the stream end when backend A stops, gets
    502 from the proxy while nothing listens, and resumes against backend B (same data dir,
    same port) from the last event it dispatched; B replays only the terminal event.
    """
    held = 12
    scripted = ScriptedEngine(hold_after=held)
    data = tmp_path / "data"
    recorder, store = Recorder(), RecordingStore()
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            a = await start_backend(nursery, data, scripted.engine())
            async with (
                open_chaos_proxy(a.backend.base_url) as proxy,
                proxy_client(proxy.url, a.backend) as client,
            ):
                trainer = create_trainer(
                    name="restart",
                    model=MODEL,
                    dataset=DATASET,
                    max_steps=30,
                    callbacks=recorder.callbacks(),
                    client=client,
                    reconnect=FAST,
                    cursor_store=store,
                )
                job_id = await trainer.start()
                proxy.set_plan(Plan.of(CutAfterEvents(5, mode="mid_frame")))
                results = []

                async def follow() -> None:
                    results.append(await trainer.wait())

                async with trio.open_nursery() as following:
                    following.start_soon(follow)
                    await recorder.wait_calls(held)  # the engine now holds: the job is running
                    assert trainer.cursor == str(held)
                    await a.stop()
                    assert scripted.stopped.is_set()  # stopped by the shutdown, no terminal event
                    await wait_for_record(proxy, lambda r: r.status == 502)
                    b = await start_backend(nursery, data, ScriptedEngine().engine(), a.port)
                # `following` has ended: the trainer returned.
                log = await backend_log(b.backend, job_id)
                await proxy.wait_closed(len(proxy.records))
                records = proxy.records
            await b.stop()

    assert [r.status for r in records[:1]] == [201]
    assert_exactly_once(recorder.calls, store.saved, log)
    assert len(log) == held + 1
    # Recovery's event skips RECOVERY_ID_GAP ids (ids lost in a power loss are never reused).
    assert log[-1] == (str(held + 1 + RECOVERY_ID_GAP), ("failed", "backend restarted"))
    (result,) = results
    assert result.job.status == "failed"
    assert trainer.job is not None
    assert (trainer.job.status, trainer.job.error) == ("failed", "backend restarted")
    assert trainer.cursor == str(held + 1 + RECOVERY_ID_GAP)
    streams = stream_records(records[1:])
    assert len(streams) == len(records) - 1
    seen = assert_resume_chain(streams, total=len(log))
    statuses = [r.status for r in streams]
    assert 502 in statuses
    # Against B, the one stream connection resumed from the last event A delivered.
    assert statuses[-1] == 200
    assert seen[-1] == str(held)
    assert seen == [None, "5", *[str(held)] * (len(seen) - 2)]


@pytest.mark.parametrize("cancel_inside_callback", [False, True])
async def test_client_restart_attaches_with_a_file_cursor(tmp_path, cancel_inside_callback):
    """Process 1 follows until event k and dies; process 2 attaches and finishes the job.

    With ``cancel_inside_callback`` the k-th callback is itself cancelled before returning:
    its event is then not committed and process 2 delivers it. Either way the union of both
    processes' completed callbacks is the backend's log, without a duplicate.
    """
    k, held = 20, 40
    scripted = ScriptedEngine(hold_after=held)  # events after 40 appear while process 2 follows
    cursors = tmp_path / "cursors.json"
    lost = trio.CancelScope()

    async def die_at_k(n, identity):
        if n == k:
            lost.cancel()
            if cancel_inside_callback:
                await trio.lowlevel.checkpoint()  # Cancelled is raised inside the callback

    async def release_engine(n, identity):
        scripted.release.set()

    with trio.fail_after(BOUND):
        async with backend_and_proxy(tmp_path, scripted.engine()) as (backend, proxy):
            first, store1 = Recorder(die_at_k), RecordingStore(FileCursorStore(cursors))
            async with proxy_client(proxy.url, backend) as client:
                trainer1 = create_trainer(
                    name="client-restart",
                    model=MODEL,
                    dataset=DATASET,
                    max_steps=60,
                    save_steps=20,
                    callbacks=first.callbacks(),
                    client=client,
                    reconnect=FAST,
                    cursor_store=store1,
                )
                job_id = await trainer1.start()
                proxy.set_plan(Plan.of(CutAfterEvents(7, mode="mid_frame")))
                with lost:
                    await trainer1.wait()
            assert lost.cancelled_caught
            committed = k - 1 if cancel_inside_callback else k
            assert len(first.calls) == committed
            assert store1.saved == [str(i) for i in range(1, committed + 1)]
            on_disk = json.loads(cursors.read_text(encoding="utf-8"))
            assert on_disk["cursors"] == {job_id: str(committed)}
            assert seen_resume_ids(stream_records(proxy.records[1:])) == [None, "7"]
            assert not scripted.release.is_set()  # the job is still running, mid-run

            # "Process 2": a new client, a new store object on the same file, attach.
            before = len(proxy.records)
            second = Recorder(release_engine)
            store2 = RecordingStore(FileCursorStore(cursors))
            async with proxy_client(proxy.url, backend) as client:
                trainer2 = Trainer.attach(
                    job_id,
                    callbacks=second.callbacks(),
                    client=client,
                    cursor_store=store2,
                    reconnect=FAST,
                )
                assert trainer2.cursor == str(committed)
                # Connection 1 of process 2 is attach's GET /v1/jobs/:id; then the stream's.
                proxy.set_plan(Plan.of(PassThrough(), CutAfterEvents(5, mode="after_id")))
                result = await trainer2.wait()
                log = await backend_log(backend, job_id)
                await proxy.wait_closed(len(proxy.records))
            records = proxy.records[before:]

    assert result.job.status == "completed"
    assert trainer2.cursor == log[-1][0]
    assert_exactly_once(first.calls + second.calls, store1.saved + store2.saved, log)
    assert second.calls[0] == log[committed][1]
    get_job, *streams = records
    assert (get_job.method, get_job.status) == ("GET", 200)
    assert get_job.path is not None
    assert get_job.path.startswith(f"/v1/jobs/{job_id}?")
    assert stream_records(streams) == streams
    seen = assert_resume_chain(streams, total=len(log), start=committed)
    assert seen == [str(committed), str(committed + 5)]
    assert [r.cut_kind for r in streams] == [CutKind.AFTER_ID, None]
