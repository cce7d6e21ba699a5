"""Trainer over real sockets against the scripted server: each fault, the exact callbacks seen.

Time is trio's MockClock (autojump): backoffs, stalls and timeouts take no wall time.
"""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing

from arkor_trio import (
    ApiError,
    HuggingfaceDataset,
    JobNotFound,
    ReconnectPolicy,
    ReconnectsExhausted,
    UpgradeRequired,
    create_trainer,
)
from tests.sse_script_server import (
    COMPLETED,
    STARTED,
    Conn,
    Gate,
    Pause,
    frame,
    log_event,
)

FULL = [("started", "running"), ("log", 1), ("log", 2), ("log", 3), ("completed", 1)]


def make_trainer(client, recorder, **kw):
    policy = kw.pop("reconnect", ReconnectPolicy(idle_timeout=5.0))
    return create_trainer(
        name="t",
        model="unsloth/gemma-4-E4B-it",
        dataset=HuggingfaceDataset("arkorlab/triage-demo"),
        callbacks=kw.pop("callbacks", recorder.callbacks()),
        client=client,
        reconnect=policy,
        **kw,
    )


def frames(*ids: int) -> bytes:
    payloads = {1: STARTED, 2: log_event(1), 3: log_event(2), 4: log_event(3), 5: COMPLETED}
    return b"".join(frame(i, payloads[i]) for i in ids)


async def test_clean_run(autojump_clock, client, server, recorder):
    server.conns.append(Conn(body=[frames(1, 2, 3, 4, 5)]))
    result = await make_trainer(client, recorder).run()
    assert recorder.calls == FULL
    assert result.job.status == "completed"
    assert result.artifacts == [{"pathname": "a.bin"}]
    assert server.last_event_ids() == [None]


async def test_clean_cut_after_progress_resumes_at_once(autojump_clock, client, server, recorder):
    server.conns.extend([Conn(body=[frames(1, 2)]), Conn(body=[frames(3, 4, 5)])])
    trainer = make_trainer(client, recorder)
    t0 = trio.current_time()
    await trainer.wait()
    assert recorder.calls == FULL
    assert server.last_event_ids() == [None, "2"]
    opens = [r.at for r in server.stream_requests()]
    assert opens[1] - opens[0] == pytest.approx(0.0, abs=1e-6)  # no backoff after progress
    assert trio.current_time() - t0 < 0.001


@pytest.mark.parametrize("chunked", [False, True])
async def test_cut_mid_frame_discards_the_half_frame(
    autojump_clock, client, server, recorder, chunked
):
    half = frame(3, log_event(2))[:15]
    server.conns.extend(
        [Conn(body=[frames(1, 2), half], chunked=chunked), Conn(body=[frames(3, 4, 5)])]
    )
    await make_trainer(client, recorder).wait()
    assert recorder.calls == FULL
    assert server.last_event_ids() == [None, "2"]


async def test_cut_right_after_id_line_does_not_move_the_resume_id(
    autojump_clock, client, server, recorder
):
    server.conns.extend([Conn(body=[frames(1, 2), b"id: 3\n"]), Conn(body=[frames(3, 4, 5)])])
    await make_trainer(client, recorder).wait()
    assert recorder.calls == FULL
    assert server.last_event_ids() == [None, "2"]  # not "3": event 3 was never received


async def test_reset_mid_stream(autojump_clock, client, server, recorder):
    server.conns.extend([Conn(body=[frames(1, 2)], end="reset"), Conn(body=[frames(3, 4, 5)])])
    await make_trainer(client, recorder).wait()
    assert recorder.calls == FULL
    assert server.last_event_ids() == [None, "2"]


async def test_503_three_times_with_retry_after(autojump_clock, client, server, recorder):
    busy = Conn(status=503, headers={"Retry-After": "2"})
    server.conns.extend([busy, busy, busy, Conn(body=[frames(1, 2, 3, 4, 5)])])
    t0 = trio.current_time()
    await make_trainer(client, recorder).wait()
    assert recorder.calls == FULL
    opens = [r.at for r in server.stream_requests()]
    assert len(opens) == 4
    for a, b in itertools.pairwise(opens):
        assert 2.0 <= b - a <= 2.2 + 1e-6  # Retry-After plus at most 10 % jitter
    assert trio.current_time() - t0 <= 6.6 + 1e-6


async def test_stall_longer_than_idle_timeout_reconnects(autojump_clock, client, server, recorder):
    server.conns.extend(
        [
            Conn(body=[frames(1, 2), Pause(2.0), frames(3)]),
            Conn(body=[frames(3, 4, 5)]),
        ]
    )
    trainer = make_trainer(client, recorder, reconnect=ReconnectPolicy(idle_timeout=0.5))
    await trainer.wait()
    assert recorder.calls == FULL
    assert server.last_event_ids() == [None, "2"]
    opens = [r.at for r in server.stream_requests()]
    assert opens[1] - opens[0] == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize(
    ("status", "exc_type"), [(401, ApiError), (410, ApiError), (426, UpgradeRequired)]
)
async def test_permanent_status_on_open(autojump_clock, client, server, recorder, status, exc_type):
    server.conns.append(Conn(status=status))
    with pytest.raises(exc_type) as info:
        await make_trainer(client, recorder).wait()
    assert info.value.status == status
    assert len(server.stream_requests()) == 1
    assert recorder.calls == []


async def test_404_then_200_within_grace_after_create(autojump_clock, client, server, recorder):
    server.conns.extend([Conn(status=404), Conn(status=404), Conn(body=[frames(1, 2, 3, 4, 5)])])
    await make_trainer(client, recorder).wait()
    assert recorder.calls == FULL
    assert len(server.stream_requests()) == 3


async def test_404_for_an_attached_job_is_final(autojump_clock, client, server, recorder):
    from arkor_trio import Trainer

    server.conns.append(Conn(status=404))
    trainer = Trainer.attach("job-1", callbacks=recorder.callbacks(), client=client)
    with pytest.raises(JobNotFound):
        await trainer.wait()


async def test_replayed_duplicates_after_reconnect_are_dropped(
    autojump_clock, client, server, recorder
):
    server.conns.extend([Conn(body=[frames(1, 2, 3)]), Conn(body=[frames(2, 3, 4, 5)])])
    await make_trainer(client, recorder).wait()
    assert recorder.calls == FULL
    assert server.last_event_ids() == [None, "3"]


async def test_frames_without_ids_are_never_duplicates(autojump_clock, client, server, recorder):
    body = frame(None, log_event(7)) + frame(None, log_event(7)) + frame(9, COMPLETED)
    server.conns.append(Conn(body=[body]))
    await make_trainer(client, recorder).wait()
    assert recorder.calls == [("log", 7), ("log", 7), ("completed", 1)]


async def test_max_attempts_exhausted(autojump_clock, client, server, recorder):
    server.conns.extend([Conn(status=500)] * 4)
    trainer = make_trainer(client, recorder, reconnect=ReconnectPolicy(max_attempts=2))
    with pytest.raises(ReconnectsExhausted) as info:
        await trainer.wait()
    assert len(server.stream_requests()) == 3  # max_attempts retries after the first open
    assert isinstance(info.value.__cause__, ApiError)


async def test_raising_callback_on_terminal_event(autojump_clock, client, server, recorder):
    class Boom(Exception):
        pass

    def on_completed(ctx):
        raise Boom("no")

    server.conns.extend([Conn(body=[frames(1, 2, 3, 4, 5)]), Conn(body=[frames(5)])])
    trainer = make_trainer(
        client, recorder, callbacks=recorder.callbacks(on_completed=on_completed)
    )
    with pytest.raises(Boom) as info:
        await trainer.wait()
    assert any("on_completed" in note and "'5'" in note for note in info.value.__notes__)
    assert trainer.cursor == "4"
    assert len(server.stream_requests()) == 1  # no reconnect, no retry
    # The next wait re-delivers the failing event, and only it.
    trainer.callbacks = recorder.callbacks()
    await trainer.wait()
    assert recorder.calls == [*FULL[:4], ("completed", 1)]
    assert server.last_event_ids() == [None, "4"]


async def test_end_frame_for_a_cancelled_job_fires_on_cancelled(
    autojump_clock, client, server, recorder
):
    server.job = {**server.job, "status": "cancelled"}
    server.conns.append(Conn(body=[frames(1, 2), frame(None, "{}", event="end")]))
    result = await make_trainer(client, recorder).wait()
    assert recorder.calls == [("started", "running"), ("log", 1), ("cancelled", "cancelled")]
    assert result.job.status == "cancelled"


async def test_end_frame_for_a_running_job_reconnects(autojump_clock, client, server, recorder):
    server.conns.extend(
        [Conn(body=[frames(1, 2), frame(None, "{}", event="end")]), Conn(body=[frames(3, 4, 5)])]
    )
    await make_trainer(client, recorder).wait()
    assert recorder.calls == FULL
    assert server.last_event_ids() == [None, "2"]


async def test_malformed_and_unknown_frames_are_skipped(autojump_clock, client, server, recorder):
    body = (
        frame(1, STARTED)
        + frame(2, "not json", event="training.log")
        + frame(3, "null", event="training.log")
        + frame(4, {"type": "training.brand_new", "x": 1})
        + frame(5, COMPLETED)
    )
    server.conns.append(Conn(body=[body]))
    await make_trainer(client, recorder).wait()
    assert recorder.calls == [("started", "running"), ("completed", 1)]


# --- cancellation: control returns within one tick in every state -----------------------------


async def _cancel_when(trainer, ready: trio.Event) -> float:
    """Cancel the scope around wait() once `ready` fires; return the virtual time it took."""
    marks: dict[str, float] = {}
    async with trio.open_nursery() as nursery:

        async def cancel_later(scope):
            await ready.wait()
            await trio.testing.wait_all_tasks_blocked()
            marks["cancel"] = trio.current_time()
            scope.cancel()

        with trio.CancelScope() as scope:
            nursery.start_soon(cancel_later, scope)
            await trainer.wait()
        marks["back"] = trio.current_time()
    assert scope.cancelled_caught
    return marks["back"] - marks["cancel"]


async def test_cancel_while_reading(autojump_clock, client, server, recorder):
    server.conns.append(Conn(body=[frames(1, 2)], end="hang"))
    seen = trio.Event()
    trainer = make_trainer(
        client, recorder, callbacks=recorder.callbacks(on_log=lambda ctx: seen.set())
    )
    assert await _cancel_when(trainer, seen) == 0.0


async def test_cancel_while_backing_off(autojump_clock, client, server, recorder):
    server.conns.extend([Conn(status=503, headers={"Retry-After": "30"})])
    trainer = make_trainer(client, recorder)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep, 0)
    await trainer.start()
    assert await _cancel_when(trainer, server.stream_opened) == 0.0
    assert len(server.stream_requests()) == 1


async def test_cancel_while_connecting(autojump_clock, client, server, recorder):
    gate = Gate()
    server.conns.append(Conn(body=[gate]))  # headers sent, then nothing
    trainer = make_trainer(client, recorder)
    assert await _cancel_when(trainer, server.stream_opened) == 0.0


async def test_cancel_inside_a_callback(autojump_clock, client, server, recorder):
    entered = trio.Event()
    cancelled = []

    async def on_log(ctx):
        entered.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(ctx.step)
            raise

    server.conns.append(Conn(body=[frames(1, 2, 3)], end="hang"))
    trainer = make_trainer(client, recorder, callbacks=recorder.callbacks(on_log=on_log))
    assert await _cancel_when(trainer, entered) == 0.0
    assert cancelled == [1]
    assert trainer.cursor == "1"  # the cancelled callback's event stays undelivered
