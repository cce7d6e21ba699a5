"""How a resilience-matrix row runs (issue 4): backend, proxy, trainer, recorders.

The scripted engine is in ``_scripted``, the assertions in ``_checks``.

How one matrix row runs (:func:`follow_through_proxy`):

1. A real local backend (``open_local_backend``) on ``tmp_path`` with a deterministic engine
   injected through ``engine=`` (:class:`ScriptedEngine`, or the NumPy one for the real row),
   and a chaos proxy in front of it, opened *without* a plan.
2. A real ``Trainer`` whose ``ArkorClient`` talks to the proxy creates the job with
   ``start()``: proxy connection 0 is ``POST /v1/jobs``, passed through unharmed.
3. Only then the row's plan is installed with ``proxy.set_plan(plan)``. The proxy applies a
   plan per connection in accept order, from its first step on for connections accepted after
   the call, so every step lands on the trainer's stream connections and a ``Status(503)``
   never hits the job creation (the trainer does not retry a failed create, by design).
4. ``trainer.wait()`` follows the job, every wait bounded by ``trio.fail_after``.
5. The backend's event log is then read directly from the backend, not through the proxy.

What every row asserts (:func:`assert_run`):

* exactly once and in order: the pairs (committed cursor, callback identity) recorded by a
  :class:`RecordingStore` and a :class:`Recorder` equal the backend's (event id, identity) log;
  a partial frame that was dispatched would break this equality (or the JSON decode);
* the terminal callback ran exactly once, last; the trainer's job status and cursor are right;
* a second ``wait()`` returns the stored result without I/O and without callbacks;
* the ``Last-Event-ID`` header of every stream request (as the proxy forwarded it to the
  backend) equals the id of the last *complete* frame delivered before it, computed from the
  proxy's own records (``events_passed`` per connection), and never decreases.

The backend runs with a long ``ping_interval`` so that every frame of a stream carries an id
(but the final ``end``): the resume position is then an exact function of the proxy's counts.
Everything runs on the real clock (hypercorn and real sockets do not run on a MockClock), with
short reconnect delays (:data:`FAST`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs
import httpx
import trio

from arkor_trio import (
    ArkorClient,
    BlobDataset,
    Callbacks,
    HuggingfaceDataset,
    MemoryCursorStore,
    ReconnectPolicy,
    Trainer,
    TrainingResult,
    create_trainer,
)
from arkor_trio._version import USER_AGENT
from arkor_trio.server import Engine, LocalBackend, open_local_backend
from arkor_trio.sse import SSEDecoder
from arkor_trio.stream import Cursor
from arkor_trio.testing import ChaosProxy, ConnectionRecord, Plan, open_chaos_proxy

from ._checks import (
    Identity,
    artifacts_key,
    assert_exactly_once,
    assert_resume_chain,
    identity_of_payload,
    stream_records,
)
from ._scripted import MODEL, ScriptedEngine

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

    from arkor_trio.stream import CursorStore, Lease

SCOPE = {"orgSlug": "local", "projectSlug": "default"}
#: Longer than any row: no ping frame ever shifts the proxy's frame counts.
PING_INTERVAL = 120.0
#: Bound on every row's waits: a regression fails here instead of hanging the suite.
BOUND = 20.0
#: Short reconnect delays, unlimited retries; idle_timeout is long unless a row stalls.
FAST = ReconnectPolicy(initial_delay=0.01, max_delay=0.05, idle_timeout=5.0)


Hook: TypeAlias = Callable[[int, Identity], Awaitable[None]]
ProxyHook: TypeAlias = Callable[[ChaosProxy, int, Identity], Awaitable[None]]


class Recorder:
    """Callbacks that record each event's identity once the callback has run to its end.

    All six callbacks are async; ``hook(n, identity)`` (if given) is awaited inside the n-th
    callback before it records, so a test can cancel or block there. Asserts that no two
    callbacks ever overlap (serial dispatch).
    """

    def __init__(self, hook: Hook | None = None) -> None:
        self.calls: list[Identity] = []
        self.hook = hook
        self._active = False
        self._reached: dict[int, trio.Event] = {}

    async def _record(self, identity: Identity) -> None:
        assert not self._active, "two callbacks ran at once"
        self._active = True
        try:
            await trio.lowlevel.checkpoint()
            if self.hook is not None:  # no checkpoint after it unless the hook makes one
                await self.hook(len(self.calls) + 1, identity)
            self.calls.append(identity)
        finally:
            self._active = False
        reached = self._reached.pop(len(self.calls), None)
        if reached is not None:
            reached.set()

    async def wait_calls(self, n: int) -> None:
        """Return once ``n`` callbacks have completed."""
        if len(self.calls) < n:
            await self._reached.setdefault(n, trio.Event()).wait()

    def callbacks(self) -> Callbacks:
        """The six callbacks, recording identities comparable to :func:`identity_of_payload`."""

        async def started(ctx: Any) -> None:
            assert ctx.job.status == "running"
            await self._record(("started",))

        async def log(ctx: Any) -> None:
            await self._record(
                ("log", ctx.step, ctx.loss, ctx.eval_loss, ctx.learning_rate, ctx.epoch)
            )

        async def checkpoint(ctx: Any) -> None:
            assert ctx.adapter.step == ctx.step
            await self._record(("checkpoint", ctx.step, artifacts_key(ctx.artifacts)))

        async def completed(ctx: Any) -> None:
            assert ctx.job.status == "completed"
            await self._record(("completed", artifacts_key(ctx.artifacts)))

        async def failed(ctx: Any) -> None:
            assert ctx.job.status == "failed"
            await self._record(("failed", ctx.error))

        async def cancelled(ctx: Any) -> None:
            await self._record(("cancelled",))

        return Callbacks(
            on_started=started,
            on_log=log,
            on_checkpoint=checkpoint,
            on_completed=completed,
            on_failed=failed,
            on_cancelled=cancelled,
        )


class RecordingStore:
    """A cursor store (the async protocol) that records every committed cursor, then delegates."""

    def __init__(self, inner: CursorStore | None = None) -> None:
        self.inner: CursorStore = inner if inner is not None else MemoryCursorStore()
        self.saved: list[str] = []

    async def load(self, key: str) -> Cursor:
        """Delegated."""
        return await self.inner.load(key)

    async def commit(
        self, key: str, cursor_id: str | None, *, finished: bool = False, lease: Lease | None = None
    ) -> None:
        """Delegated as one commit; the cursor is recorded first."""
        if cursor_id is not None:
            self.saved.append(cursor_id)
        await self.inner.commit(key, cursor_id, finished=finished, lease=lease)

    def lease(self, key: str, *, ttl: float) -> AbstractAsyncContextManager[Lease]:
        """Delegated: one follower per job per inner store."""
        return self.inner.lease(key, ttl=ttl)

    def peek(self, key: str) -> Cursor:
        """Delegated: the committed state now (the built-in stores read synchronously)."""
        peek = getattr(self.inner, "peek", None)
        return peek(key) if callable(peek) else Cursor()


# --- the backend side ----------------------------------------------------------------------


async def backend_log(backend: LocalBackend, job_id: str) -> list[tuple[str, Identity]]:
    """The job's whole event log as (id, identity), replayed straight from the backend.

    Call only once the job is terminal (the stream then ends by itself).
    """
    headers = {"Authorization": f"Bearer {backend.token}", "X-Arkor-Client": USER_AGENT}
    async with (
        httpx.AsyncClient(base_url=backend.base_url, headers=headers, verify=False) as http,
        http.stream("GET", f"/v1/jobs/{job_id}/events/stream", params=SCOPE) as response,
    ):
        assert response.status_code == 200
        body = await response.aread()
    decoder = SSEDecoder()
    frames = decoder.feed(body) + decoder.close()
    assert frames, "the backend replayed nothing"
    assert frames[-1].event == "end"
    logged = []
    for frame in frames[:-1]:
        assert frame.id, f"a backend frame without id: {frame!r}"
        logged.append((frame.id, identity_of_payload(json.loads(frame.data))))
    return logged


def proxy_client(base_url: str, backend: LocalBackend) -> ArkorClient:
    """An ``ArkorClient`` for ``base_url`` (the proxy) with the backend's token and scope."""
    return ArkorClient(
        base_url=base_url, token=backend.token, org_slug="local", project_slug="default"
    )


@attrs.define(eq=False)
class BackendTask:
    """A local backend running in its own task, so a test can stop it mid-run."""

    backend: LocalBackend
    _stop: trio.Event
    _closed: trio.Event

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.backend.base_url.rsplit(":", 1)[1])

    async def stop(self) -> None:
        """Stop it (streams end, job threads are stopped) and wait until it has closed."""
        self._stop.set()
        await self._closed.wait()


async def start_backend(
    nursery: trio.Nursery, data_dir: Path, engine: Engine | None, port: int = 0
) -> BackendTask:
    """Start a backend on ``data_dir`` (and ``port``; 0 picks one) in a task of ``nursery``."""
    stop, closed = trio.Event(), trio.Event()

    async def serve(*, task_status: trio.TaskStatus[LocalBackend]) -> None:
        try:
            async with open_local_backend(
                data_dir, port, engine=engine, ping_interval=PING_INTERVAL
            ) as backend:
                task_status.started(backend)
                await stop.wait()
        finally:
            closed.set()

    backend = await nursery.start(serve)
    return BackendTask(backend, stop, closed)


async def wait_for_record(
    proxy: ChaosProxy, predicate: Callable[[ConnectionRecord], bool]
) -> ConnectionRecord:
    """Return the first closed connection record matching ``predicate``, waiting for closes."""
    while True:
        records = proxy.records
        for record in records:
            if record.closed_at is not None and predicate(record):
                return record
        await proxy.wait_closed(sum(r.closed_at is not None for r in records) + 1)


# --- one matrix row ------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Run:
    """What one followed run produced (see the module docstring)."""

    job_id: str
    trainer: Trainer
    result: TrainingResult
    calls: list[Identity]
    saved: list[str]
    log: list[tuple[str, Identity]]
    records: list[ConnectionRecord]
    elapsed: float

    @property
    def streams(self) -> list[ConnectionRecord]:
        """The stream connections (the job creation excluded)."""
        return stream_records(self.records[1:])


def assert_run(run: Run, *, status: str = "completed") -> list[str | None]:
    """The checks every row makes; returns the Last-Event-ID values seen, for row checks."""
    create = run.records[0]
    assert (create.method, create.status) == ("POST", 201)
    assert create.path is not None
    assert create.path.startswith("/v1/jobs?")
    assert_exactly_once(run.calls, run.saved, run.log)
    assert run.trainer.job is not None
    assert run.trainer.job.status == status
    assert run.result.job.status == status
    assert run.trainer.cursor == run.log[-1][0]
    assert len(run.streams) == len(run.records) - 1, "a request that is not a stream"
    return assert_resume_chain(run.streams, total=len(run.log))


@asynccontextmanager
async def backend_and_proxy(
    tmp_path: Path, engine: Engine | None
) -> AsyncIterator[tuple[LocalBackend, ChaosProxy]]:
    """A local backend on ``tmp_path/data`` and a chaos proxy (no plan yet) in front of it."""
    async with (
        open_local_backend(tmp_path / "data", engine=engine, ping_interval=PING_INTERVAL) as b,
        open_chaos_proxy(b.base_url) as proxy,
    ):
        yield b, proxy


async def follow_through_proxy(
    tmp_path: Path,
    plan: Plan,
    *,
    engine: Engine | None = None,
    policy: ReconnectPolicy = FAST,
    steps: int = 60,
    save_steps: int = 20,
    real: bool = False,
    hook: ProxyHook | None = None,
    transport: str = "sse",
) -> Run:
    """Create a job through the proxy, install ``plan``, follow the job to its end.

    Args:
        tmp_path: Where the backend keeps its data.
        plan: The faults of the stream connections.
        engine: The backend's engine (default: a :class:`ScriptedEngine` paced at 2 ms).
        policy: The trainer's reconnect policy.
        steps: ``max_steps`` of the job.
        save_steps: ``save_steps`` of the job.
        real: Train with the NumPy engine on the bundled demo dataset (``dry_run``).
        hook: Awaited as ``hook(proxy, n, identity)`` inside the n-th callback (see
            :class:`Recorder`).
        transport: The trainer's transport (``"sse"`` or ``"websocket"``).
    """
    if engine is None and not real:
        engine = ScriptedEngine(pace=0.002).engine()
    dataset = BlobDataset.demo() if real else HuggingfaceDataset("arkorlab/triage-demo")
    extra: dict[str, Any] = {"logging_steps": 1, "eval_steps": 4, "dry_run": True} if real else {}
    with trio.fail_after(BOUND):
        async with backend_and_proxy(tmp_path, engine) as (backend, proxy):
            bound = None if hook is None else functools.partial(hook, proxy)
            recorder, store = Recorder(bound), RecordingStore()
            async with proxy_client(proxy.url, backend) as client:
                trainer = create_trainer(
                    name="resilience",
                    model=MODEL,
                    dataset=dataset,
                    max_steps=steps,
                    save_steps=save_steps,
                    callbacks=recorder.callbacks(),
                    client=client,
                    reconnect=policy,
                    cursor_store=store,
                    transport=transport,
                    **extra,
                )
                job_id = await trainer.start()
                proxy.set_plan(plan)
                began = trio.current_time()
                result = await trainer.wait()
                elapsed = trio.current_time() - began
                # A finished trainer answers from memory: no connection, no callback.
                opened, called = len(proxy.records), len(recorder.calls)
                assert await trainer.wait() is result
                assert (len(proxy.records), len(recorder.calls)) == (opened, called)
                await proxy.wait_closed(opened)
                log = await backend_log(backend, job_id)
            records = proxy.records
    return Run(
        job_id=job_id,
        trainer=trainer,
        result=result,
        calls=recorder.calls,
        saved=store.saved,
        log=log,
        records=records,
        elapsed=elapsed,
    )
