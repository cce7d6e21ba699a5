"""``create_trainer`` and ``Trainer``: start a job, follow it with callbacks, cancel it.

Guarantees (design.md section 3): one job per trainer, also under concurrent ``start()``; callbacks
run serially in stream order, each event id at most once per trainer (and across processes with a
``FileCursorStore``); the committed cursor moves only after a callback returned; a callback's
exception ends ``wait()`` as itself; leaving a cancel scope stops the local wait at once, while
``cancel()`` stops the job on the backend.
"""

from __future__ import annotations

import logging
import random
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import trio

from .. import aio
from .._errors import ApiError, ArkorError, ConfigError, ReconnectsExhausted, StreamError
from .._loops import called_from_asyncio
from ..stream import (
    DEFAULT_LEASE_TTL,
    Backoff,
    CursorStore,
    Ledger,
    MemoryCursorStore,
    ReconnectPolicy,
    as_cursor_store,
)
from ..wire._client import ArkorClient
from ..wire._feed import JobFeed
from ..wire._job_stream import TERMINAL_TYPES, EventStream
from ..wire._models import TrainingLog
from ..wire._ws_stream import WebSocketEventStream
from ._callbacks import Callbacks, CallbacksLike, as_callbacks
from ._dispatch import Dispatcher, apply_event, result_for, result_for_job
from ._validate import check_name, update_job_config

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..wire._models import JobConfig, TrainingJob, TrainingResult

__all__ = ["Trainer"]

log = logging.getLogger("arkor_trio.trainer")

#: How long ``run(cancel_on_abort=True)`` spends on the backend cancel after an abort.
CANCEL_ON_ABORT_TIMEOUT = 10.0


def _check_type(field: str, value: object, cls: type[Any], hint: str) -> None:
    if value is not None and not isinstance(value, cls):
        raise ConfigError(f"{field} must be {hint}, got {type(value).__name__}", field=field)


class Trainer:
    """One training job: ``start()`` it, ``wait()`` for it with callbacks, ``cancel()`` it.

    Build one with :func:`create_trainer`, or :meth:`attach` to follow a job started elsewhere.

    Attributes:
        name: The job name.
    """

    def __init__(
        self,
        *,
        name: str,
        config: JobConfig | None,
        callbacks: CallbacksLike | None = None,
        client: ArkorClient | None = None,
        reconnect: ReconnectPolicy | None = None,
        cursor_store: CursorStore | None = None,
        job_id: str | None = None,
        transport: str | JobFeed = "sse",
    ) -> None:
        _check_type("client", client, ArkorClient, "an ArkorClient")
        if not isinstance(transport, JobFeed) and transport not in ("sse", "websocket"):
            raise ConfigError(
                f"transport must be 'sse', 'websocket' or a JobFeed, got {transport!r}",
                field="transport",
            )
        self._transport = transport
        _check_type("reconnect", reconnect, ReconnectPolicy, "a ReconnectPolicy")
        self.name = name
        self.callbacks: Callbacks = as_callbacks(callbacks)
        self._config = config
        self._client = client if client is not None else ArkorClient()
        self._owns_client = client is None
        self._active = 0
        self._policy = reconnect if reconnect is not None else ReconnectPolicy()
        self._store: CursorStore = (
            as_cursor_store(cursor_store) if cursor_store is not None else MemoryCursorStore()
        )
        self._job_id = job_id
        self._job: TrainingJob | None = None
        self._created_at: float | None = None
        self._result: TrainingResult | None = None
        self._start_lock = trio.Lock()
        self._wait_lock = trio.Lock()
        #: The exactly-once rule of this trainer's job (commit, dedupe, lease), kept across
        #: wait()s: created with the job id.
        self._ledger: Ledger | None = None
        #: Seconds a lease of the job lasts without renewal (design.md section 14).
        self.lease_ttl = DEFAULT_LEASE_TTL
        #: The log events whose callbacks returned, in order (``TrainingResult.history``).
        self._history: list[TrainingLog] = []

    def __repr__(self) -> str:
        return f"Trainer(name={self.name!r}, job_id={self._job_id!r})"

    @classmethod
    def attach(
        cls,
        job_id: str,
        *,
        callbacks: CallbacksLike | None = None,
        client: ArkorClient | None = None,
        cursor_store: CursorStore | None = None,
        reconnect: ReconnectPolicy | None = None,
        transport: str | JobFeed = "sse",
    ) -> Trainer:
        """Follow a job started elsewhere; ``wait()`` resumes after the stored cursor.

        With a :class:`FileCursorStore`, a process restarted mid-run resumes where the previous
        one stopped, without dispatching any event twice. ``transport`` is ``"sse"``,
        ``"websocket"`` or a running :class:`JobFeed` shared with other trainers.
        """
        if not isinstance(job_id, str) or not job_id:
            raise ConfigError(f"job_id must be a non-empty string, got {job_id!r}", field="job_id")
        return cls(
            name=job_id,
            config=None,
            callbacks=callbacks,
            client=client,
            reconnect=reconnect,
            cursor_store=cursor_store,
            job_id=job_id,
            transport=transport,
        )

    @property
    def client(self) -> ArkorClient:
        """The client this trainer talks through."""
        return self._client

    @property
    def job_id(self) -> str | None:
        """The job's id, None before ``start()``."""
        return self._job_id

    @property
    def job(self) -> TrainingJob | None:
        """The job as last seen (updated by every dispatched event)."""
        return self._job

    @property
    def cursor(self) -> str | None:
        """The id of the last event whose callback returned (the committed cursor).

        Read from the store when it has a sync ``peek`` (the built-in stores do); for another
        store, what this trainer last loaded or committed (None before its first ``wait()``).
        """
        if self._job_id is None:
            return None
        peek = getattr(self._store, "peek", None)  # the built-in stores read synchronously
        if callable(peek):
            return cast("str | None", peek(self._job_id).id)
        return self._ledger.committed if self._ledger is not None else None

    @property
    def result(self) -> TrainingResult | None:
        """The result, once a terminal event was dispatched."""
        return self._result

    def configure(self, *, name: str | None = None, **settings: Any) -> None:
        """Change the job name or training arguments before ``start()`` (a sweep from one file).

        ``settings`` are :func:`create_trainer`'s training keywords (``max_steps=500``,
        ``learning_rate=3e-4``, ``model=...``), checked as it checks them.

        Raises:
            ConfigError: An unknown or invalid setting (``field`` names it), a trainer that
                already started its job, or one made by ``attach`` (it has no settings).
        """
        if self._config is None:
            raise ConfigError("an attached trainer has no settings to change", field="config")
        if self._job_id is not None:
            raise ConfigError(
                f"job {self._job_id} was already started: its settings can no longer change",
                field="name" if name is not None else next(iter(settings), None),
            )
        config = update_job_config(self._config, settings)
        self.name = check_name(name) if name is not None else self.name
        self._config = config

    async def start(self) -> str:
        """Create the job on the backend (once: later and concurrent calls return the same id).

        Returns:
            The job id.

        Raises:
            ApiError: The backend refused the job (its message says why, e.g. an unknown model).
        """
        if called_from_asyncio():
            return await aio.run(self.start)
        async with self._start_lock:
            if self._job_id is not None:
                return self._job_id
            assert self._config is not None
            async with self._using_client():
                job = await self._client.create_job(self.name, self._config)
            self._job, self._job_id = job, job.id
            self._created_at = trio.current_time()
            return job.id

    async def wait(self) -> TrainingResult:
        """Follow the job to its end, dispatching callbacks; starts the job if needed.

        A failed or cancelled job is a result too (inspect ``result.job.status``). After a
        terminal event was dispatched, later calls return the stored result without I/O.
        Concurrent calls are serialised.

        Raises:
            Exception: A callback's own exception (the event is re-delivered by the next wait).
            ApiError: A permanent error from the backend (401, 403, 410, 426, unknown job ...).
            ReconnectsExhausted: ``ReconnectPolicy.max_attempts`` was exceeded.
        """
        if called_from_asyncio():
            return await aio.run(self.wait)
        async with self._wait_lock, self._using_client():
            if self._result is not None:
                await trio.lowlevel.checkpoint()
                return self._result
            job_id = await self.start()
            if self._ledger is None:
                self._ledger = Ledger(self._store, job_id)
            ledger = self._ledger
            # One follower per job per store: wait while another (process) holds the lease.
            async with self._store.lease(job_id, ttl=self.lease_ttl) as lease:
                ledger.lease = lease
                try:
                    stored = await ledger.load()
                    if self._job is None or stored.finished:
                        self._job = await self._fetch_job(job_id)
                    if stored.finished:
                        # Another follower already ran the terminal callback: report it.
                        self._result = result_for_job(self._job, tuple(self._history))
                        return self._result
                    return await self._follow(job_id, ledger)
                finally:
                    ledger.lease = None

    async def _fetch_job(self, job_id: str) -> TrainingJob:
        """``GET /v1/jobs/:id``, retried like a stream connection on transient failures."""
        backoff = Backoff(self._policy, random.Random())
        while True:
            try:
                return await self._client.get_job(job_id)
            except ApiError as exc:
                grace = (
                    exc.status == 404
                    and self._created_at is not None
                    and trio.current_time() - self._created_at < self._policy.not_found_grace
                )
                if not (grace or exc.status in (0, 408, 429) or exc.status >= 500):
                    raise
                if backoff.exhausted():
                    raise ReconnectsExhausted(
                        f"GET job {job_id} failed {backoff.attempt + 1} times in a row; giving up"
                    ) from exc
                await trio.sleep(backoff.after_failure())

    async def _follow(self, job_id: str, ledger: Ledger) -> TrainingResult:
        assert self._job is not None
        # The ledger owns the rule: it commits an event once its callback returned (when the
        # loop asks for the next one, or leaves after the terminal one), drops what this
        # trainer dispatched before, and forgets what an earlier wait() only read ahead.
        after = ledger.committed
        stream: EventStream | WebSocketEventStream
        if self._transport == "sse":
            stream = EventStream(
                self._client.stream_source(job_id),
                after=after,
                policy=self._policy,
                created_at=self._created_at,
                ledger=ledger,
            )
        else:
            feed = self._transport if isinstance(self._transport, JobFeed) else None
            stream = WebSocketEventStream(
                self._client,
                job_id,
                feed=feed,
                after=after,
                policy=self._policy,
                created_at=self._created_at,
                ledger=ledger,
            )
        dispatcher = Dispatcher(self.callbacks, self._client)
        async with stream:
            async for event in stream:
                job = self._job
                if type(event) is not TrainingLog:  # logs leave the job as it is
                    job = self._job = apply_event(job, event)
                await dispatcher(event, job, ledger)
                if type(event) is TrainingLog:
                    self._history.append(event)
                if type(event) in TERMINAL_TYPES:
                    self._result = result_for(job, event, tuple(self._history))
                    return self._result
        raise StreamError(f"the event stream of job {job_id} ended without a terminal event")

    @asynccontextmanager
    async def _using_client(self) -> AsyncIterator[None]:
        """Close a client this trainer created once no call of it is using it any more.

        The client reopens lazily, so a later call (or a kept ``ctx.infer``) still works.
        """
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1
            # Not under a stream the user opened on trainer.client (its pool would close).
            if self._owns_client and self._active == 0 and not self._client.streams_open:
                with trio.CancelScope(shield=True):
                    await self._client.aclose()

    async def cancel(self) -> None:
        """Ask the backend to stop the job. No-op before ``start()``; a finished job is fine.

        This does not stop a local ``wait()``: leave its cancel scope for that (or use ``run``).
        """
        if called_from_asyncio():
            return await aio.run(self.cancel)
        if self._job_id is None:
            await trio.lowlevel.checkpoint()
            return
        try:
            async with self._using_client():
                await self._client.cancel_job(self._job_id)
        except ApiError as exc:
            if exc.status != 409:
                raise
            log.debug("cancel of job %s: already finished (%s)", self._job_id, exc.message)

    async def run(self, *, cancel_on_abort: bool = True) -> TrainingResult:
        """``start()`` then ``wait()``; on abort, also stop the job on the backend.

        If the wait is cancelled from outside (a cancel scope, KeyboardInterrupt) and
        ``cancel_on_abort`` is true, the backend cancel is sent in a shielded scope bounded to
        10 s before the cancellation propagates.
        """
        if called_from_asyncio():
            return await aio.run(partial(self.run, cancel_on_abort=cancel_on_abort))
        try:
            await self.start()
            return await self.wait()
        except BaseException as exc:
            if cancel_on_abort and _is_abort(exc) and self._job_id is not None:
                await self._cancel_shielded()
            raise

    async def _cancel_shielded(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(CANCEL_ON_ABORT_TIMEOUT) as scope:
            try:
                await self.cancel()
            except ArkorError as exc:
                log.warning("could not cancel job %s on the backend: %s", self._job_id, exc)
        if scope.cancelled_caught:
            log.warning(
                "cancel of job %s timed out after %s s", self._job_id, CANCEL_ON_ABORT_TIMEOUT
            )


def _is_abort(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_abort(e) for e in exc.exceptions)
    return isinstance(exc, trio.Cancelled | KeyboardInterrupt)
