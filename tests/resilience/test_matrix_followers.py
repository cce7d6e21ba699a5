"""Resilience matrix, two followers, one store (issue 14): one follower per job, a clean handover.

Two followers (each with its own ``FileCursorStore`` object on one file, as two processes
would have) attach to one job at once through the chaos proxy, whose plan cuts the stream.
The second waits for the first's claim; the first goes away after event k; the second takes
over from the committed cursor and finishes the job. Together they dispatched every event of
the backend's log exactly once, in order.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from arkor_trio import FileCursorStore, HuggingfaceDataset, Trainer, create_trainer
from arkor_trio.testing import CutAfterEvents, Plan

from ._checks import assert_exactly_once
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

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from arkor_trio.stream import Lease


class WatchedStore(RecordingStore):
    """Also tells when a claim of the job was refused (another follower holds it)."""

    def __init__(self, inner: FileCursorStore) -> None:
        super().__init__(inner)
        self.file = inner
        self.refused = trio.Event()

    @asynccontextmanager
    async def lease(self, key: str, *, ttl: float) -> AsyncIterator[Lease]:
        probe = self.file.try_claim(key)  # held by another follower right now?
        if probe is None:
            self.refused.set()
        else:
            probe()
        async with self.file.lease(key, ttl=ttl) as lease:
            yield lease


async def test_two_followers_one_store(tmp_path):
    k, held = 9, 16
    scripted = ScriptedEngine(hold_after=held)
    cursors = tmp_path / "cursors.json"
    leave = trio.CancelScope()

    async def leave_at_k(n, identity):
        if n == k:
            await store_b.refused.wait()  # B is following too, and was told to wait
            leave.cancel()  # the callback returns; its event is committed, then A stops

    async def release_engine(n, identity):
        scripted.release.set()

    first, second = Recorder(leave_at_k), Recorder(release_engine)
    store_a = RecordingStore(FileCursorStore(cursors))
    store_b = WatchedStore(FileCursorStore(cursors))
    with trio.fail_after(BOUND):
        async with (
            backend_and_proxy(tmp_path, scripted.engine()) as (backend, proxy),
            proxy_client(proxy.url, backend) as client,
        ):
            creator = create_trainer(
                name="two-followers", model=MODEL,
                dataset=HuggingfaceDataset("arkorlab/triage-demo"), max_steps=30,
                save_steps=10, client=client,
            )  # fmt: skip
            job_id = await creator.start()
            proxy.set_plan(Plan.of(CutAfterEvents(4, mode="mid_frame")))
            a = Trainer.attach(
                job_id, callbacks=first.callbacks(), client=client, cursor_store=store_a,
                reconnect=FAST,
            )  # fmt: skip
            b = Trainer.attach(
                job_id, callbacks=second.callbacks(), client=client, cursor_store=store_b,
                reconnect=FAST,
            )  # fmt: skip
            async with trio.open_nursery() as nursery:

                async def follow_a():
                    with leave:
                        await a.wait()

                nursery.start_soon(follow_a)
                await first.wait_calls(1)  # A holds the claim
                nursery.start_soon(b.wait)
            result = b.result
            log = await backend_log(backend, job_id)

    assert leave.cancelled_caught
    assert len(first.calls) == k
    assert result is not None
    assert result.job.status == "completed"
    assert second.calls[0] == log[k][1]  # B resumed right after A's last committed event
    assert_exactly_once(first.calls + second.calls, store_a.saved + store_b.saved, log)
    assert json.loads(cursors.read_text(encoding="utf-8"))["finished"] == [job_id]
    assert b.cursor == log[-1][0]
