"""A feed message's subscribe batch resolved in a few queries (issue 23, the reconnect row).

:func:`~arkor_trio.server._ws_batch.prepare` must answer as :func:`resolve_cursor` and
``events_after`` one job at a time, for every kind of log (retention, the recovery id gap,
terminal, unknown, another project's job); a batch sent over a real socket must give each
subscription the messages it gets alone; a caught-up subscription followed by the hub's tail
(no task) must get each later event once, in order, and hand over to a task at its end.
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any

import trio

from arkor_trio.server import open_local_backend
from arkor_trio.server._hub import EventHub
from arkor_trio.server._replay import PAGE_SIZE, resolve_cursor
from arkor_trio.server._store import DB_NAME, Store
from arkor_trio.server._ws_batch import INLINE_ROWS, prepare
from arkor_trio.server._ws_protocol import Subscribe

from .test_cursor_resolution import CASES, _write
from .test_ws import connect, recv, until_end

if TYPE_CHECKING:
    from pathlib import Path

LOG = {"type": "training.log", "step": 1, "loss": 1.0}


def _logs(data: Path) -> None:
    _write(data, "job_plain", 4)
    _write(data, "job_kept", 6, keep=3)
    _write(data, "job_gap", 3, recovered=True)
    _write(data, "job_gap0", 0, recovered=True)
    _write(data, "job_gapkept", 9, recovered=True, keep=3)
    _write(data, "job_long", INLINE_ROWS + 5, finish=False)  # running, far behind a None cursor
    _write(data, "job_empty", 0, finish=False)  # running, no event yet
    _write(data, "job_done", 0)  # completed, its only event the terminal one


def test_a_batch_resolves_as_one_job_at_a_time(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _logs(data)
    store = Store.in_dir(data)
    try:
        conn = sqlite3.connect(data / DB_NAME)  # a job of another project
        conn.execute(
            "INSERT INTO jobs (id, org_id, project_id, name, status, config, created_at)"
            " VALUES ('job_other', 'org_local', 'proj_x', 'x', 'running', '{}', 'now')"
        )
        conn.commit()
        conn.close()
        subs = [Subscribe(c.job, None if c.cursor is None else int(c.cursor)) for c in CASES]
        subs += [Subscribe("job_long", None), Subscribe("job_long", INLINE_ROWS + 2)]
        subs += [Subscribe(j, a) for j in ("job_empty", "job_done") for a in (None, 0, 1, 7)]
        subs += [Subscribe("job_missing", None), Subscribe("job_other", None)]
        got = prepare(store, "proj_default", subs)
        assert set(got) == {(s.job, s.after) for s in subs} - {
            ("job_missing", None), ("job_other", None)}  # fmt: skip
        for s in subs:
            if s.job in ("job_missing", "job_other"):
                continue
            found, alone = got[(s.job, s.after)], resolve_cursor(store, s.job, s.after)
            assert found.start == alone, s
            assert found.status == store.job_status(s.job), s
            rows = store.events_after(s.job, alone.after, PAGE_SIZE)
            last = (store.event_bounds(s.job) or (0, 0))[1]
            if last - alone.after > INLINE_ROWS:  # (job_long from 0, the gaps' ids)
                assert found.rows is None, s  # many may follow: read in pages by its task
            else:
                assert found.rows == rows, s
        far = [key for key, found in got.items() if found.rows is None]
        assert ("job_long", None) in far
        assert ("job_long", INLINE_ROWS + 2) not in far
    finally:
        store.close()


async def test_one_batch_over_the_socket_answers_each_as_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _logs(data)
    async with open_local_backend(data) as backend, connect(backend) as ws:
        alone: dict[str, list[dict[str, Any]]] = {}
        for case in CASES:
            await ws.send_message(json.dumps({"type": "subscribe", "job": case.job,
                                              "after": case.cursor}))  # fmt: skip
            alone.setdefault(case.job, []).extend([await recv(ws), *await until_end(ws, case.job)])
        # Batches of one subscription per job (a second would cancel the first: resubscribe).
        rounds: list[list[Any]] = []
        for case in CASES:
            free = [r for r in rounds if case.job not in {c.job for c in r}]
            (free[0] if free else rounds.append([]) or rounds[-1]).append(case)
        together: dict[str, list[dict[str, Any]]] = {}
        for cases in rounds:
            batch = [{"type": "subscribe", "job": c.job, "after": c.cursor} for c in cases]
            await ws.send_message(json.dumps(batch))
            ended = 0
            while ended < len(cases):
                message = await recv(ws)
                together.setdefault(message["job"], []).append(message)
                ended += message["type"] == "end"
    assert together == alone


async def test_caught_up_subscriptions_follow_appends_without_a_task(tmp_path: Path) -> None:
    data = tmp_path / "data"
    jobs = [f"job_{n}" for n in range(5)]
    async with open_local_backend(data) as backend, connect(backend) as ws:
        hub: EventHub = backend._hub
        writer = Store.in_dir(data, on_append=hub.notify)  # (as the backend's training writes)
        try:
            for job in jobs:  # running, ids 1 and 2
                writer.create_job(job_id=job, org_id="org_local", project_id="proj_default",
                                  name=job, config={})  # fmt: skip
                writer.append_many(job, [{"type": "training.started"}, LOG])
            batch = [{"type": "subscribe", "job": job, "after": "2"} for job in jobs]
            await ws.send_message(json.dumps(batch))
            opened = [await recv(ws) for _ in jobs]
            assert opened == [{"type": "subscribed", "job": j, "recovered": True} for j in jobs]
            # Caught up: no follower task holds the hub's wake-up event, only tails.
            assert backend._hub._watchers == {}
            assert sorted(backend._hub._tails) == jobs
            await ws.send_message(json.dumps({"type": "unsubscribe", "job": "job_0"}))
            await ws.send_message(json.dumps({"type": "subscribe", "job": "job_1", "after": "2"}))
            assert await recv(ws) == {"type": "subscribed", "job": "job_1", "recovered": True}
            for job in jobs:
                writer.append_many(job, [LOG, LOG])  # ids 3, 4
            writer.append("job_2", {"type": "training.completed", "artifacts": []})  # id 5
            got: dict[str, list[str]] = {}
            with trio.fail_after(10):
                while len([m for v in got.values() for m in v]) < 2 * 4 + 2:
                    message = await recv(ws)
                    got.setdefault(message["job"], []).append(message.get("id", message["type"]))
                # The probe: anything still queued for job_0 would come before its answer.
                await ws.send_message(json.dumps({"type": "subscribe", "job": "job_0",
                                                  "after": "4"}))  # fmt: skip
                assert await recv(ws) == {"type": "subscribed", "job": "job_0", "recovered": True}
        finally:
            writer.close()
    assert got == {"job_1": ["3", "4"], "job_2": ["3", "4", "5", "end"], "job_3": ["3", "4"],
                   "job_4": ["3", "4"]}  # fmt: skip


def test_an_attached_tail_runs_after_each_append_until_false() -> None:
    calls: list[str] = []

    async def main() -> None:
        hub = EventHub()
        answers = iter([True, False])

        def run() -> bool:
            calls.append("run")
            return next(answers)

        def other() -> bool:
            calls.append("other")
            return True

        hub.attach("job_a", run)
        hub.attach("job_a", other)
        for _ in range(3):
            hub.notify("job_a")
        hub.detach("job_a", other)
        hub.notify("job_a")
        assert hub._tails == {}

    trio.run(main)
    assert calls == ["run", "other", "run", "other", "other"]
