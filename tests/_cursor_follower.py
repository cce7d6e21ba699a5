"""A follower process for tests/test_cursor_processes.py: attach to jobs with a FileCursorStore.

``python -m tests._cursor_follower STORE JOB [JOB ...] [--leave-after N] [--gate]
[--kill-between]``, with ``ARKOR_CLOUD_API_URL`` and ``ARKOR_TOKEN`` naming a local backend.

stdout: ``ready`` once the store is open, then one JSON line per callback, flushed at once:
``{"job": id, "cb": "log", "step": 3}``, and ``done`` at the end. stderr carries the stream
layer's log (the "waiting" line of a second follower). Options:

* ``--gate``: after ``ready``, wait for a line on stdin before following (both processes of a
  test then start together, with their stores already open);
* ``--leave-after N``: stop following after the log of step N returned (a restart point);
* ``--kill-between``: wrap the store so that the process dies (``os._exit(9)``) right after the
  write that records the terminal event's cursor: with the old two-write protocol that is
  between ``save`` and ``mark_finished``; with ``commit`` it is after the one atomic write.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

import trio

from arkor_trio import ArkorClient, Callbacks, FileCursorStore, Trainer


def emit(line: Any) -> None:
    sys.stdout.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    sys.stdout.flush()


class KillBetweenWrites:
    """A store wrapper that dies right after the write that records the terminal event."""

    def __init__(self, inner: FileCursorStore) -> None:
        self.inner = inner

    async def load(self, key: str) -> Any:
        return await self.inner.load(key)

    async def commit(
        self, key: str, cursor_id: str | None, *, finished: bool = False, lease: Any = None
    ) -> None:
        await self.inner.commit(key, cursor_id, finished=finished, lease=lease)
        if finished:
            os._exit(9)  # right after the one write: nothing left unwritten

    def lease(self, key: str, *, ttl: float) -> Any:
        return self.inner.lease(key, ttl=ttl)


def callbacks(job_id: str, leave: trio.CancelScope, leave_after: int | None) -> Callbacks:
    def record(cb: str, step: int | None = None) -> None:
        emit({"job": job_id, "cb": cb, "step": step})

    def on_log(ctx: Any) -> None:
        record("log", ctx.step)
        if leave_after is not None and ctx.step >= leave_after:
            leave.cancel()  # the callback returns, its event is committed, then the wait stops

    return Callbacks(
        on_started=lambda ctx: record("started"),
        on_log=on_log,
        on_checkpoint=lambda ctx: record("checkpoint", ctx.step),
        on_completed=lambda ctx: record("completed"),
        on_failed=lambda ctx: record("failed"),
        on_cancelled=lambda ctx: record("cancelled"),
    )


async def follow(args: argparse.Namespace) -> None:
    store: Any = FileCursorStore(args.store)
    if args.kill_between:
        store = KillBetweenWrites(store)
    emit("ready")
    if args.gate:
        await trio.to_thread.run_sync(sys.stdin.readline)
    scope = {"org_slug": "local", "project_slug": "default"}  # the local backend's one scope
    async with ArkorClient(**scope) as client, trio.open_nursery() as nursery:
        for job_id in args.jobs:
            leave = trio.CancelScope()
            trainer = Trainer.attach(
                job_id,
                callbacks=callbacks(job_id, leave, args.leave_after),
                client=client,
                cursor_store=store,
            )

            async def run(trainer: Trainer = trainer, leave: trio.CancelScope = leave) -> None:
                with leave:
                    await trainer.wait()

            nursery.start_soon(run)
    emit("done")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("jobs", nargs="+")
    parser.add_argument("--leave-after", type=int, default=None)
    parser.add_argument("--gate", action="store_true")
    parser.add_argument("--kill-between", action="store_true")
    stream_log = logging.getLogger("arkor_trio.stream")
    stream_log.addHandler(logging.StreamHandler(sys.stderr))
    stream_log.setLevel(logging.INFO)
    trio.run(follow, parser.parse_args())


if __name__ == "__main__":
    main()
