"""start/wait/cancel/run/attach semantics against the scripted server (real sockets, mock clock)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from arkor_trio import (
    ApiError,
    FileCursorStore,
    FrameTooLarge,
    HuggingfaceDataset,
    ReconnectPolicy,
    ReconnectsExhausted,
    StreamError,
    Trainer,
    TrainingLog,
    create_trainer,
)
from tests.sse_script_server import COMPLETED, STARTED, Conn, Gate, frame, log_event


def frames(*ids: int) -> bytes:
    payloads = {1: STARTED, 2: log_event(1), 3: log_event(2), 4: log_event(3), 5: COMPLETED}
    return b"".join(frame(i, payloads[i]) for i in ids)


def make(client, recorder, **kw):
    return create_trainer(
        name="t",
        model="m",
        dataset=HuggingfaceDataset("a/b"),
        callbacks=kw.pop("callbacks", recorder.callbacks()),
        client=client,
        reconnect=kw.pop("reconnect", ReconnectPolicy()),
        **kw,
    )


async def test_concurrent_start_creates_one_job(autojump_clock, client, server, recorder):
    trainer = make(client, recorder)
    ids = []
    async with trio.open_nursery() as nursery:
        for _ in range(5):

            async def go():
                ids.append(await trainer.start())

            nursery.start_soon(go)
    assert ids == ["job-1"] * 5
    assert server.jobs_created == 1
    assert trainer.job_id == "job-1"


async def test_wait_starts_the_job_and_a_second_wait_does_no_io(
    autojump_clock, client, server, recorder
):
    server.conns.append(Conn(body=[frames(1, 2, 3, 4, 5)]))
    trainer = make(client, recorder)
    first = await trainer.wait()
    n_requests = len(server.requests)
    second = await trainer.wait()
    assert second is first
    assert len(server.requests) == n_requests
    assert server.jobs_created == 1
    assert len(recorder.calls) == 5


async def test_concurrent_waits_dispatch_each_event_once(autojump_clock, client, server, recorder):
    server.conns.append(Conn(body=[frames(1, 2, 3, 4, 5)]))
    trainer = make(client, recorder)
    results = []
    async with trio.open_nursery() as nursery:
        for _ in range(3):

            async def go():
                results.append(await trainer.wait())

            nursery.start_soon(go)
    assert len(results) == 3
    assert all(r is results[0] for r in results)
    assert len(recorder.calls) == 5
    assert len(server.stream_requests()) == 1


async def test_cancel_before_start_is_a_noop(autojump_clock, client, server, recorder):
    await make(client, recorder).cancel()
    assert server.requests == []


async def test_cancel_of_a_finished_job_is_not_an_error(autojump_clock, client, server, recorder):
    trainer = make(client, recorder)
    await trainer.start()
    server.cancel_status = 409
    await trainer.cancel()
    assert server.requests[-1].path == "/v1/jobs/job-1/cancel"
    server.cancel_status = 500
    with pytest.raises(ApiError) as info:
        await trainer.cancel()
    assert info.value.status == 500


async def test_run_cancels_on_the_backend_when_aborted(autojump_clock, client, server, recorder):
    server.conns.append(Conn(body=[frames(1, 2)], end="hang"))
    seen = trio.Event()
    trainer = make(client, recorder, callbacks=recorder.callbacks(on_log=lambda ctx: seen.set()))
    with trio.move_on_after(100) as scope:
        async with trio.open_nursery() as nursery:

            async def abort():
                await seen.wait()
                scope.cancel()

            nursery.start_soon(abort)
            await trainer.run()
    assert scope.cancelled_caught
    cancels = [r for r in server.requests if r.path.endswith("/cancel")]
    assert len(cancels) == 1
    assert cancels[0].method == "POST"


async def test_run_without_cancel_on_abort_leaves_the_job(autojump_clock, client, server, recorder):
    server.conns.append(Conn(body=[frames(1, 2)], end="hang"))
    trainer = make(client, recorder)
    with trio.move_on_after(5):
        await trainer.run(cancel_on_abort=False)
    assert not [r for r in server.requests if r.path.endswith("/cancel")]


async def test_run_does_not_cancel_the_job_for_a_callback_error(
    autojump_clock, client, server, recorder
):
    def bad(ctx):
        raise KeyError("mine")

    server.conns.append(Conn(body=[frames(1, 2, 3, 4, 5)]))
    trainer = make(client, recorder, callbacks=recorder.callbacks(on_log=bad))
    with pytest.raises(KeyError) as info:
        await trainer.run()
    assert type(info.value) is KeyError  # the callback's own exception, not a group
    assert not [r for r in server.requests if r.path.endswith("/cancel")]


async def test_attach_with_a_file_cursor_store_resumes_without_repeats(
    autojump_clock, client, server, recorder, tmp_path
):
    store_path = tmp_path / "cursors.json"
    gate = Gate()
    server.conns.append(Conn(body=[frames(1, 2, 3), gate]))
    first_calls = []
    reached = trio.Event()

    def on_log(ctx):
        first_calls.append(ctx.step)
        if ctx.step == 2:
            reached.set()

    first = Trainer.attach(
        "job-1",
        client=client,
        callbacks={"on_log": on_log},
        cursor_store=FileCursorStore(store_path),
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(first.wait)
        await reached.wait()
        nursery.cancel_scope.cancel()  # "the process stops"
    assert first_calls == [1, 2]
    assert first.cursor == "3"

    server.conns.append(Conn(body=[frames(4, 5)]))
    second = Trainer.attach(
        "job-1",
        client=client,
        callbacks=recorder.callbacks(),
        cursor_store=FileCursorStore(store_path),
    )
    result = await second.wait()
    assert recorder.calls == [("log", 3), ("completed", 1)]
    assert server.last_event_ids() == [None, "3"]
    assert result.job.status == "completed"
    assert FileCursorStore(store_path).peek("job-1").id == "5"


async def test_a_frame_over_max_frame_bytes_is_a_failure_then_resumes(
    autojump_clock, client, server, recorder
):
    huge = frame(3, {"type": "training.log", "step": 2, "pad": "x" * (2 << 20)})
    server.conns.extend([Conn(body=[frames(1, 2), huge]), Conn(body=[frames(3, 4, 5)])])
    trainer = make(client, recorder)
    await trainer.wait()
    assert [c[0] for c in recorder.calls] == ["started", "log", "log", "log", "completed"]
    assert server.last_event_ids() == [None, "2"]


async def test_the_same_frame_too_large_twice_is_permanent(
    autojump_clock, client, server, recorder
):
    # The server sends the same oversized frame after the same resume id on every reconnect:
    # retrying forever would loop, so the second time at one resume point raises.
    huge = frame(3, {"type": "training.log", "step": 3, "pad": "x" * 5000})
    server.conns.extend(
        [Conn(body=[frames(1, 2)]), Conn(body=[huge]), Conn(body=[huge]), Conn(body=[huge])]
    )
    trainer = make(client, recorder, reconnect=ReconnectPolicy(max_frame_bytes=1000))
    with pytest.raises(FrameTooLarge) as info:
        await trainer.wait()
    assert any("two connections in a row" in note for note in info.value.__notes__)
    assert server.last_event_ids() == [None, "2", "2"]  # no fourth connection
    assert [c[0] for c in recorder.calls] == ["started", "log"]


async def test_frame_too_large_counts_toward_max_attempts(autojump_clock, client, server, recorder):
    huge = frame(1, {"type": "training.log", "step": 1, "pad": "x" * 5000})
    server.conns.extend([Conn(body=[huge]), Conn(body=[b": comment\n\n"])])
    trainer = make(
        client, recorder, reconnect=ReconnectPolicy(max_frame_bytes=1000, max_attempts=1)
    )
    with pytest.raises(StreamError) as info:
        await trainer.wait()
    assert isinstance(info.value, ReconnectsExhausted)  # the oversized frame was failure 1
    assert server.last_event_ids() == [None, None]


async def test_a_non_sse_content_type_is_a_clear_error(autojump_clock, client, server, recorder):
    server.conns.append(Conn(headers={"Content-Type": "text/html"}, body=[b"<html>"]))
    with pytest.raises(StreamError, match="text/html"):
        await make(client, recorder).wait()


async def test_stream_level_iteration_and_stats(autojump_clock, client, server):
    server.conns.extend(
        [
            Conn(body=[frames(1, 2), frame(None, "{}", event="ping"), frame(2, log_event(1))]),
            Conn(body=[frames(3, 4, 5)]),
        ]
    )
    async with client.events("job-1", policy=ReconnectPolicy()) as stream:
        events = [e async for e in stream]
    assert [e.event_id for e in events] == ["1", "2", "3", "4", "5"]
    assert isinstance(events[1], TrainingLog)
    assert stream.cursor == "5"
    stats = stream.stats
    assert (stats.connections, stats.reconnects, stats.pings, stats.duplicates) == (2, 1, 1, 1)
    assert stats.events == 5
    assert stats.gaps == (0.0,)


async def test_a_trainer_closes_the_client_it_created(
    autojump_clock, running_server, recorder, tmp_path, monkeypatch
):
    monkeypatch.setenv("ARKOR_CLOUD_API_URL", running_server.url)
    monkeypatch.setenv("ARKOR_TOKEN", "env-token")
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".arkor").mkdir()
    (tmp_path / ".arkor" / "state.json").write_text('{"orgSlug": "o", "projectSlug": "p"}')
    monkeypatch.chdir(tmp_path)
    running_server.conns.append(Conn(body=[frames(1, 2, 3, 4, 5)]))
    trainer = create_trainer(
        name="t", model="m", dataset=HuggingfaceDataset("a/b"), callbacks=recorder.callbacks()
    )
    await trainer.wait()
    assert len(recorder.calls) == 5
    assert trainer.client._owned_http is None  # closed once nothing uses it
    assert running_server.requests[0].headers["authorization"] == "Bearer env-token"


async def test_attach_after_the_terminal_callback_ran_elsewhere_dispatches_nothing(
    autojump_clock, client, server, recorder, tmp_path
):
    path = tmp_path / "c.json"
    server.conns.append(Conn(body=[frames(1, 2, 3, 4, 5)]))
    first = Trainer.attach("job-1", client=client, cursor_store=FileCursorStore(path))
    await first.wait()
    server.job = {**server.job, "status": "completed", "artifacts": [{"pathname": "a.bin"}]}
    second = Trainer.attach(
        "job-1", client=client, callbacks=recorder.callbacks(), cursor_store=FileCursorStore(path)
    )
    result = await second.wait()
    assert recorder.calls == []
    assert result.job.status == "completed"
    assert result.artifacts == [{"pathname": "a.bin"}]
    assert len(server.stream_requests()) == 1  # the second process opened no stream
