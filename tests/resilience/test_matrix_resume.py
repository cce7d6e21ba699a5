"""Resilience matrix, following the same job again (issue 4): ``wait()`` after a callback's
exception, and ``Trainer.attach`` under a fault on its first request or after the job's end.
"""

from __future__ import annotations

import pytest
import trio

from arkor_trio import (
    FileCursorStore,
    HuggingfaceDataset,
    Trainer,
    create_trainer,
)
from arkor_trio.testing import CutAfterEvents, Plan, Refuse, Status

from ._checks import assert_exactly_once, assert_resume_chain, stream_records
from ._harness import (
    BOUND,
    FAST,
    Recorder,
    RecordingStore,
    backend_and_proxy,
    backend_log,
    proxy_client,
)
from ._scripted import MODEL, ScriptedEngine

DATASET = HuggingfaceDataset("arkorlab/triage-demo")


def _trainer(client, recorder, store, steps=30):
    return create_trainer(
        name="resume",
        model=MODEL,
        dataset=DATASET,
        max_steps=steps,
        save_steps=10,
        callbacks=recorder.callbacks(),
        client=client,
        reconnect=FAST,
        cursor_store=store,
    )


async def test_wait_again_after_a_callback_exception_redelivers_that_event(tmp_path):
    """Rule 4: the failing event is not committed; the next wait() delivers it, then the rest."""
    k = 10
    failures = []

    async def fail_once_at_k(n, identity):
        if n == k and not failures:
            failures.append(identity)
            raise RuntimeError("callback bug")

    with trio.fail_after(BOUND):
        async with backend_and_proxy(tmp_path, ScriptedEngine(pace=0.002).engine()) as (
            backend,
            proxy,
        ):
            recorder, store = Recorder(fail_once_at_k), RecordingStore()
            async with proxy_client(proxy.url, backend) as client:
                trainer = _trainer(client, recorder, store)
                job_id = await trainer.start()
                proxy.set_plan(Plan.of(CutAfterEvents(5, mode="mid_frame")))
                with pytest.raises(RuntimeError, match="callback bug") as info:
                    await trainer.wait()
                assert f"event id '{k}'" in info.value.__notes__[0]
                assert trainer.cursor == str(k - 1)
                proxy.set_plan(Plan.of(CutAfterEvents(3, mode="after_id")))
                result = await trainer.wait()
                log = await backend_log(backend, job_id)
                await proxy.wait_closed(len(proxy.records))
            streams = stream_records(proxy.records[1:])

    assert result.job.status == "completed"
    assert_exactly_once(recorder.calls, store.saved, log)
    assert failures == [log[k - 1][1]]
    # The second wait resumed from the committed cursor (9), not from what it had read.
    ids = [r.last_event_id for r in streams]
    assert ids[:2] == [None, "5"]
    assert ids[2:] == [str(k - 1), str(k - 1 + 3)]
    assert_resume_chain(streams[2:], total=len(log), start=k - 1)


@pytest.mark.parametrize(
    "fault", [Status(code=503, retry_after=0), Refuse()], ids=["status_503", "refused"]
)
async def test_attach_survives_a_transient_fault_on_its_first_request(tmp_path, fault):
    """A restarted client process attaching while the backend is briefly unavailable."""
    cursors = tmp_path / "cursors.json"
    with trio.fail_after(BOUND):
        async with backend_and_proxy(tmp_path, ScriptedEngine().engine()) as (backend, proxy):
            async with backend.client() as direct:
                job_id = await _trainer(direct, Recorder(), RecordingStore(), steps=5).start()
            recorder, store = Recorder(), RecordingStore(FileCursorStore(cursors))
            proxy.set_plan(Plan.of(fault))  # the attach's first request: GET /v1/jobs/:id
            async with proxy_client(proxy.url, backend) as client:
                trainer = Trainer.attach(
                    job_id,
                    callbacks=recorder.callbacks(),
                    client=client,
                    cursor_store=store,
                    reconnect=FAST,
                )
                result = await trainer.wait()
                log = await backend_log(backend, job_id)
    assert result.job.status == "completed"
    assert_exactly_once(recorder.calls, store.saved, log)


async def test_attach_after_the_terminal_event_was_committed_fires_nothing(tmp_path):
    cursors = tmp_path / "cursors.json"
    with trio.fail_after(BOUND):
        async with backend_and_proxy(tmp_path, ScriptedEngine().engine()) as (backend, proxy):
            first, store1 = Recorder(), RecordingStore(FileCursorStore(cursors))
            async with proxy_client(proxy.url, backend) as client:
                trainer1 = _trainer(client, first, store1, steps=5)
                await trainer1.wait()
            assert trainer1.job_id is not None
            # "Process 2" runs the same script again after process 1 finished.
            second, store2 = Recorder(), RecordingStore(FileCursorStore(cursors))
            async with proxy_client(proxy.url, backend) as client:
                trainer2 = Trainer.attach(
                    trainer1.job_id,
                    callbacks=second.callbacks(),
                    client=client,
                    cursor_store=store2,
                    reconnect=FAST,
                )
                result = await trainer2.wait()
                log = await backend_log(backend, trainer1.job_id)
    assert result.job.status == "completed"
    assert_exactly_once(first.calls, store1.saved, log)
    assert second.calls == []  # the terminal callback already ran in process 1


async def test_cancel_mid_run_under_cuts_ends_with_one_on_cancelled(tmp_path):
    """``trainer.cancel()`` through the proxy while following a running job under cuts."""
    held = 20
    scripted = ScriptedEngine(hold_after=held)
    with trio.fail_after(BOUND):
        async with backend_and_proxy(tmp_path, scripted.engine()) as (backend, proxy):
            recorder, store = Recorder(), RecordingStore()
            async with proxy_client(proxy.url, backend) as client:
                trainer = _trainer(client, recorder, store, steps=60)
                job_id = await trainer.start()
                # Two cut streams, then everything passes (the third stream and the cancel).
                proxy.set_plan(
                    Plan.of(CutAfterEvents(5, mode="mid_frame"), CutAfterEvents(5, mode="reset"))
                )
                results = []
                async with trio.open_nursery() as nursery:

                    async def follow():
                        results.append(await trainer.wait())

                    nursery.start_soon(follow)
                    await recorder.wait_calls(held)
                    await trainer.cancel()
                log = await backend_log(backend, job_id)
                await proxy.wait_closed(len(proxy.records))
            records = proxy.records

    (result,) = results
    assert result.job.status == "cancelled"
    assert trainer.job is not None
    assert trainer.job.status == "cancelled"
    assert_exactly_once(recorder.calls, store.saved, log)
    assert log[-1] == (str(held + 1), ("cancelled",))
    cancels = [r for r in records if r.method == "POST" and "/cancel?" in (r.path or "")]
    assert [r.status for r in cancels] == [200]
    streams = stream_records(records[1:])
    assert [r.last_event_id for r in streams] == [None, "5", "10"]
    assert_resume_chain(streams, total=len(log))
