"""Runs training jobs in worker threads, in submission order, a few at a time.

Each job runs ``engine.run_training`` in a trio worker thread; the engine emits events through
``emit``, which appends them to the store (the store then wakes the stream followers). The
runner appends what the engine does not: ``training.cancelled`` when a cancel stopped the run
(immediately for a job still queued), ``training.failed`` for a ``TrainingFailure`` or any other
exception (``"internal error: ..."``), so every job reaches a terminal event unless the backend
itself stops.

A write the store refuses (:class:`~arkor_trio.server._store.StoreError`: disk full, database
locked) never escapes a thread: the job fails with that reason (``"disk full: ..."``). When the
failure itself cannot be written yet, the runner keeps it and retries on the event loop (every
``RECORD_RETRY`` seconds, doubling up to ``RECORD_RETRY_MAX``) until it is recorded or the backend
stops; the backend stays up meanwhile.

Shutdown (:meth:`JobRunner.run` being cancelled, or :meth:`JobRunner.stop`) sets every job's stop
flag and joins the threads for at most ``join_timeout`` seconds (the engine returns within about
one step). A job interrupted by shutdown gets no event: the next start marks it failed
("backend restarted"). A thread still alive after the timeout is abandoned; its later writes
hit the closed store and are dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._store import RECOVERY_ID_GAP, TERMINAL_STATUSES, StoreClosed, StoreError

if TYPE_CHECKING:
    from pathlib import Path

    from ._engine import Engine
    from ._store import Store

__all__ = ["RESTARTED", "JobRunner", "recover_unfinished"]

log = logging.getLogger("arkor_trio.server")

#: First delay before retrying to record a failure the store refused, then doubled up to the max.
RECORD_RETRY = 0.5
RECORD_RETRY_MAX = 8.0


@attrs.define(eq=False)
class _Run:
    job_id: str
    config: Mapping[str, Any]
    stop: threading.Event = attrs.field(factory=threading.Event)
    cancel_requested: bool = False
    started: bool = False
    #: Set (on the loop) when the worker thread has returned, even if the task abandoned it.
    finished: trio.Event = attrs.field(factory=trio.Event)


#: The event recovery appends to a job a previous process left unfinished.
RESTARTED = {"type": "training.failed", "error": "backend restarted"}


def recover_unfinished(store: Store) -> tuple[list[str], list[str]]:
    """Fail every job a previous process left ``queued``/``running`` ("backend restarted").

    The failure event skips ``RECOVERY_ID_GAP`` ids: after a power loss the log may have lost
    its last events, which streams may already have sent; their ids are never given again.

    Returns:
        The ids of the jobs it failed (each got a terminal ``training.failed`` event), and of
        those whose event the store refused (disk full, locked): pass them to
        :meth:`JobRunner.record_later` once the runner runs, the backend starts anyway.
    """
    recorded, refused = [], []
    for job_id in store.unfinished_jobs():
        try:
            store.append(job_id, RESTARTED, skip=RECOVERY_ID_GAP)
        except StoreError as exc:
            log.error("cannot mark job %s failed (backend restarted) yet: %s", job_id, exc)
            refused.append(job_id)
        else:
            recorded.append(job_id)
    return recorded, refused


class JobRunner:
    """Queues jobs and runs them in threads (see the module docstring).

    Create it inside the trio run; start :meth:`run` in a nursery before :meth:`submit`.

    Args:
        store: Where events are appended.
        engine: The training engine.
        data_dir: Passed to the engine for its data and checkpoints.
        max_concurrent: How many jobs train at once; the rest wait ``queued`` (FIFO).
        join_timeout: How long shutdown waits for running threads to return.
    """

    def __init__(
        self,
        store: Store,
        engine: Engine,
        data_dir: Path,
        *,
        max_concurrent: int = 1,
        join_timeout: float = 10.0,
    ) -> None:
        self._store = store
        self._engine = engine
        self._data_dir = data_dir
        self._slots = trio.Semaphore(max_concurrent)
        # Its own thread limiter: trio's default one (40 threads) would silently cap the jobs.
        self._threads = trio.CapacityLimiter(max_concurrent)
        self._join_timeout = join_timeout
        self._token = trio.lowlevel.current_trio_token()
        self._runs: dict[str, _Run] = {}
        self._nursery: trio.Nursery | None = None
        self._stop_requested = trio.Event()
        self._stopping = False
        #: Jobs whose terminal event waits in :meth:`record_later` -> the ids it skips.
        self._unrecorded: dict[str, int] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve submitted jobs until :meth:`stop` or cancellation; then join the threads.

        The join runs shielded and takes at most ``join_timeout`` seconds.
        """
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await self._stop_requested.wait()
                self._signal_stop()
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self._signal_stop()
            await self._join()

    def stop(self) -> None:
        """Ask every job thread to stop and :meth:`run` to return (after joining them)."""
        self._signal_stop()
        self._stop_requested.set()

    def _signal_stop(self) -> None:
        self._stopping = True
        for run in self._runs.values():
            run.stop.set()

    async def _join(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(self._join_timeout):
            for run in list(self._runs.values()):
                if run.started:
                    await run.finished.wait()
        alive = [r.job_id for r in self._runs.values() if r.started and not r.finished.is_set()]
        if alive:
            log.warning("abandoning training threads that did not stop in time: %s", alive)

    @property
    def accepting(self) -> bool:
        """True while :meth:`submit` accepts jobs (running, not shutting down)."""
        return self._nursery is not None and not self._stopping

    def submit(self, job_id: str, config: Mapping[str, Any]) -> None:
        """Queue a job that is already in the store as ``queued``.

        Raises:
            RuntimeError: The runner is not running (not started yet, or shutting down).
        """
        if self._nursery is None or self._stopping:
            raise RuntimeError("the job runner is not running")  # callers check .accepting
        run = self._runs[job_id] = _Run(job_id, config)
        self._nursery.start_soon(self._run_job, run, name=f"job {job_id}")

    async def cancel(self, job_id: str) -> bool:
        """Stop a queued or running job; its terminal ``training.cancelled`` follows.

        A job still waiting for a slot is cancelled at once; a running one when its thread
        returns (within about one engine step).

        Returns:
            False when the job had already reached a terminal event (nothing was done).

        Raises:
            StoreError: The store refused the ``training.cancelled`` of a queued job.
        """
        run = self._runs.get(job_id)
        if run is not None and run.started:
            run.cancel_requested = True
            run.stop.set()
            return True
        if run is not None:
            run.cancel_requested = True
        # A job whose recovery waits to be recorded skips the same ids recovery would: the
        # ids after its last kept event may have been sent by a stream before the crash.
        appended = await self._store.in_thread(
            self._store.append,
            job_id,
            {"type": "training.cancelled"},
            skip=self._unrecorded.get(job_id, 0),
        )
        return appended is not None

    async def _run_job(self, run: _Run) -> None:
        try:
            async with self._slots:
                if run.cancel_requested or self._stopping:
                    return
                run.started = True
                try:
                    await trio.to_thread.run_sync(
                        self._thread_main, run, abandon_on_cancel=True, limiter=self._threads
                    )
                except Exception:  # _thread_main catches everything; never take the server down
                    log.exception("training thread of job %s crashed", run.job_id)
        finally:
            if not run.started:
                self._runs.pop(run.job_id, None)

    def _finished(self, run: _Run) -> None:
        run.finished.set()
        if not self._stopping:
            self._runs.pop(run.job_id, None)

    def _thread_main(self, run: _Run) -> None:
        """Run the engine for one job (worker thread) and append the events it does not."""
        job_id = run.job_id
        engine = self._engine

        def emit(payload: dict[str, Any]) -> None:
            self._store.append(job_id, payload)

        try:
            outcome = engine.run_training(
                job_id=job_id,
                config=run.config,
                data_dir=self._data_dir,
                emit=emit,
                should_stop=run.stop.is_set,
            )
            if outcome == "cancelled" and run.cancel_requested:
                self._store.append(job_id, {"type": "training.cancelled"})
            elif outcome == "cancelled" and self._stopping:
                pass  # interrupted by shutdown: the next start marks it failed
            elif self._store.job_status_any_thread(job_id) not in TERMINAL_STATUSES:
                self._store.append(
                    job_id,
                    {
                        "type": "training.failed",
                        "error": f"internal error: engine returned {outcome!r} "
                        "without a terminal event",
                    },
                )
        except StoreClosed:
            log.warning("job %s wrote after the backend shut down; dropped", job_id)
        except StoreError as exc:
            log.error("job %s: the store refused a write: %s", job_id, exc)
            self._fail(job_id, str(exc), None)
        except engine.training_failure as exc:
            self._fail(job_id, str(exc), getattr(exc, "step", None))
        except Exception as exc:
            log.exception("training job %s crashed", job_id)
            self._fail(job_id, f"internal error: {exc}", None)
        finally:
            with suppress(trio.RunFinishedError):  # the run ended: nobody waits any more
                self._token.run_sync_soon(self._finished, run)

    def _fail(self, job_id: str, error: str, step: Any) -> None:
        """Record ``training.failed`` (worker thread); hand it to the loop if the store refuses."""
        payload: dict[str, Any] = {"type": "training.failed", "error": error}
        if isinstance(step, int):
            payload["step"] = step
        try:
            self._store.append(job_id, payload)
        except StoreClosed:
            log.warning("job %s failed after the backend shut down: %s", job_id, error)
        except StoreError as exc:
            log.error("job %s failed (%s); recording it failed too (%s): retrying", job_id,
                      error, exc)  # fmt: skip
            with suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self.record_later, job_id, payload)

    def record_later(self, job_id: str, payload: Mapping[str, Any], *, skip: int = 0) -> None:
        """Append a terminal event the store refused, retrying in the background (event loop).

        Retries every ``RECORD_RETRY`` seconds, doubling up to ``RECORD_RETRY_MAX``, until the
        store accepts it, the job ended meanwhile (a cancel: nothing is appended), or the runner
        stops (then the next start marks the job failed). A cancel meanwhile skips ``skip`` ids.
        """
        if self._nursery is None:
            log.error("job %s: failure not recorded before shutdown: %s", job_id, payload["error"])
            return
        self._unrecorded[job_id] = skip
        self._nursery.start_soon(self._retry_record, job_id, payload, skip, name=f"record {job_id}")

    async def _retry_record(self, job_id: str, payload: Mapping[str, Any], skip: int) -> None:
        delay = RECORD_RETRY
        try:
            while True:
                await trio.sleep(delay)
                try:
                    seq = await self._store.in_thread(
                        self._store.append, job_id, payload, skip=skip
                    )
                except StoreClosed:
                    return
                except StoreError as exc:
                    log.warning("job %s: still cannot record its failure: %s", job_id, exc)
                    delay = min(delay * 2, RECORD_RETRY_MAX)
                    continue
                if seq is None:  # a cancel recorded the job's end meanwhile
                    status = self._store.job_status(job_id)
                    log.warning("job %s already ended (%s); its failure is not recorded: %s",
                                job_id, status, payload["error"])  # fmt: skip
                else:
                    log.warning("job %s: recorded its failure: %s", job_id, payload["error"])
                return
        except trio.Cancelled:
            log.error("job %s: failure not recorded before shutdown: %s", job_id, payload["error"])
            raise
        finally:
            self._unrecorded.pop(job_id, None)
