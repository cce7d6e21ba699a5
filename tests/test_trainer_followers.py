"""Trainers sharing one cursor store: one follower per job, one atomic commit per event.

Real sockets (the scripted server), trio's MockClock for the claim's polling.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from arkor_trio import FileCursorStore, MemoryCursorStore, Trainer
from tests.conftest import Recorder
from tests.sse_script_server import COMPLETED, STARTED, Conn, Gate, frame, log_event


def frames(*ids: int) -> bytes:
    payloads = {1: STARTED, 2: log_event(1), 3: log_event(2), 4: log_event(3), 5: COMPLETED}
    return b"".join(frame(i, payloads[i]) for i in ids)


@pytest.mark.parametrize("kind", ["memory", "file"])
async def test_a_second_trainer_on_the_same_job_waits_then_reports_without_callbacks(
    autojump_clock, client, server, tmp_path, kind
):
    shared = MemoryCursorStore()

    def store():
        return FileCursorStore(tmp_path / "c.json") if kind == "file" else shared

    gate = Gate()
    server.conns.append(Conn(body=[frames(1, 2), gate, frames(3, 4, 5)]))
    first, second = Recorder(), Recorder()
    a = Trainer.attach("job-1", client=client, callbacks=first.callbacks(), cursor_store=store())
    b = Trainer.attach("job-1", client=client, callbacks=second.callbacks(), cursor_store=store())
    results = {}

    async def follow(name, trainer):
        results[name] = await trainer.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow, "a", a)
        await server.stream_opened.wait()
        nursery.start_soon(follow, "b", b)
        await trio.sleep(30)  # b waits for the claim all this time, opening no stream
        assert "b" not in results
        assert len(server.stream_requests()) == 1
        server.job = {**server.job, "status": "completed", "artifacts": [{"pathname": "a.bin"}]}
        gate.event.set()
    assert [name for name, _ in first.calls] == ["started", "log", "log", "log", "completed"]
    assert second.calls == []
    assert len(server.stream_requests()) == 1
    assert results["b"].job.status == "completed"
    assert results["b"].artifacts == [{"pathname": "a.bin"}]


async def test_the_waiting_trainer_takes_over_from_the_cursor_when_the_first_leaves(
    autojump_clock, client, server
):
    store = MemoryCursorStore()
    server.conns.extend([Conn(body=[frames(1, 2, 3)], end="hang"), Conn(body=[frames(4, 5)])])
    leave = trio.CancelScope()
    first, second = Recorder(), Recorder()
    a = Trainer.attach("job-1", client=client, callbacks=first.callbacks(), cursor_store=store)
    b = Trainer.attach("job-1", client=client, callbacks=second.callbacks(), cursor_store=store)

    async def first_follower():
        with leave:
            await a.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first_follower)
        await trio.testing.wait_all_tasks_blocked()
        assert len(first.calls) == 3
        nursery.start_soon(b.wait)
        await trio.sleep(5)
        assert second.calls == []
        leave.cancel()  # the first follower goes away: the second one resumes after "3"
    assert [name for name, _ in second.calls] == ["log", "completed"]
    assert server.last_event_ids() == [None, "3"]


async def test_a_custom_store_with_commit_gets_one_atomic_commit_per_event(
    autojump_clock, client, server
):
    class CommitStore:
        def __init__(self):
            self.commits = []
            self.old_style = []

        def load(self, job_id):
            return None

        def save(self, job_id, cursor):
            self.old_style.append(("save", cursor))

        def mark_finished(self, job_id):
            self.old_style.append(("mark_finished",))

        def commit(self, key, cursor, *, finished=False):
            self.commits.append((key, cursor, finished))

    store = CommitStore()
    server.conns.append(Conn(body=[frames(1, 2, 3, 4, 5)]))
    with pytest.warns(DeprecationWarning, match="sync cursor store"):  # through the adapter
        trainer = Trainer.attach("job-1", client=client, cursor_store=store)
    await trainer.wait()
    assert store.commits == [
        ("job-1", "1", False),
        ("job-1", "2", False),
        ("job-1", "3", False),
        ("job-1", "4", False),
        ("job-1", "5", True),  # the terminal event: cursor and finished mark together
    ]
    assert store.old_style == []
