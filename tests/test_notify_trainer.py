"""Notifiers inside a real Trainer: a failing or hanging webhook never changes the run's outcome,
and a slow one holds only the dispatcher, never the reader (the stream keeps draining)."""

from __future__ import annotations

import pytest
import trio

from arkor_trio import Callbacks, HuggingfaceDataset, ReconnectPolicy, create_trainer, notify
from arkor_trio.stream._queue import EventQueue
from tests._receiver import Receiver
from tests.sse_script_server import COMPLETED, STARTED, Conn, Pause, frame, log_event


def paced_stream() -> Conn:
    """Three logs arrive 0.5 s apart: slower than nothing, faster than the 0.8 s idle timeout."""
    return Conn(
        body=[
            frame(1, STARTED),
            frame(2, log_event(1)),
            Pause(0.5),
            frame(3, log_event(2)),
            Pause(0.5),
            frame(4, log_event(3)),
            Pause(0.5),
            frame(5, COMPLETED),
        ]
    )


@pytest.mark.parametrize("mode", ["ok", "error", "close", "hang"])
async def test_webhook_failures_never_reach_wait(
    autojump_clock, nursery, client, server, mode, monkeypatch
):
    queued_at: list[float] = []
    original_put, original_extend = EventQueue.put, EventQueue.extend

    def recording_put(self, item):
        queued_at.append(trio.current_time())
        original_put(self, item)

    def recording_extend(self, items):
        queued_at.extend(trio.current_time() for _ in items)
        original_extend(self, items)

    monkeypatch.setattr(EventQueue, "put", recording_put)
    monkeypatch.setattr(EventQueue, "extend", recording_extend)
    receiver = await Receiver(mode).start(nursery)
    server.conns.append(paced_stream())
    seen: list[str] = []
    mine = Callbacks(
        on_log=lambda ctx: seen.append(f"log {ctx.step}"),
        on_completed=lambda ctx: seen.append("completed"),
    )
    trainer = create_trainer(
        name="notified",
        model="m",
        dataset=HuggingfaceDataset("a/b"),
        client=client,
        callbacks=mine + notify.webhook(receiver.url("/hook"), progress_every=1, post_timeout=5.0),
        reconnect=ReconnectPolicy(idle_timeout=0.8),
    )
    t0 = trio.current_time()
    result = await trainer.wait()
    # The reader queued every event at the stream's pace, whatever the dispatcher was doing.
    assert [round(t - t0, 3) for t in queued_at] == [0.0, 0.0, 0.5, 1.0, 1.5]
    elapsed = trio.current_time() - t0
    assert result.job.status == "completed"
    assert seen == ["log 1", "log 2", "log 3", "completed"]
    assert [r.json["event"] for r in receiver.requests] == [
        "progress",
        "progress",
        "progress",
        "completed",
    ]
    # The reader kept draining while the dispatcher waited on the webhook: one connection, no
    # idle-timeout reconnect, although each hanging post held the dispatcher for 5 s > 0.8 s.
    assert len(server.stream_requests()) == 1
    if mode == "hang":
        assert elapsed == pytest.approx(4 * 5.0, abs=0.01)  # bounded by post_timeout per post
    else:
        assert elapsed == pytest.approx(1.5, abs=0.01)  # the stream's own pace
