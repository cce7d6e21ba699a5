"""The serial dispatcher: one event -> the job's new state -> one context -> its callbacks.

Callbacks run one at a time in the task that iterates the stream, each awaited before the next
event. A callback's exception propagates as that very exception, with a PEP 678 note naming the
callback, the event id and the job.
"""

from __future__ import annotations

import inspect
from types import CoroutineType
from typing import TYPE_CHECKING, Any

import attrs

from ..wire._models import (
    Adapter,
    CheckpointSaved,
    JobEvent,
    TrainingCancelled,
    TrainingCompleted,
    TrainingFailed,
    TrainingJob,
    TrainingLog,
    TrainingResult,
    TrainingStarted,
)
from ._contexts import (
    CancelledContext,
    CheckpointContext,
    CompletedContext,
    FailedContext,
    LogContext,
    StartedContext,
)
from ._infer import Infer

if TYPE_CHECKING:
    from ..stream import Delivery, Ledger
    from ..wire._client import ArkorClient
    from ._callbacks import Callbacks

__all__ = ["Dispatcher", "apply_event", "dispatch", "result_for", "result_for_job"]


def apply_event(job: TrainingJob, event: JobEvent) -> TrainingJob:
    """The job as it stands after ``event`` (status, timestamps, error, artifacts)."""
    if type(event) is TrainingLog:  # most events: nothing changes
        return job
    if isinstance(event, TrainingStarted):
        return attrs.evolve(job, status="running", started_at=event.timestamp or job.started_at)
    if isinstance(event, TrainingCompleted):
        artifacts = list(event.artifacts) if event.artifacts is not None else job.artifacts
        return attrs.evolve(
            job,
            status="completed",
            completed_at=event.timestamp or job.completed_at,
            artifacts=artifacts,
        )
    if isinstance(event, TrainingFailed):
        return attrs.evolve(
            job,
            status="failed",
            error=event.error,
            completed_at=event.timestamp or job.completed_at,
        )
    if isinstance(event, TrainingCancelled):
        return attrs.evolve(
            job, status="cancelled", completed_at=event.timestamp or job.completed_at
        )
    return job


def result_for(job: TrainingJob, event: JobEvent) -> TrainingResult:
    """The ``TrainingResult`` a terminal event stands for."""
    if isinstance(event, TrainingCompleted):
        return TrainingResult(job=job, artifacts=list(event.artifacts or job.artifacts or []))
    return TrainingResult(job=job, artifacts=[])


def result_for_job(job: TrainingJob) -> TrainingResult:
    """The ``TrainingResult`` of a job known to be terminal, from the job alone."""
    artifacts = list(job.artifacts or []) if job.status == "completed" else []
    return TrainingResult(job=job, artifacts=artifacts)


_CALLBACK_NAMES: dict[type[Any], str] = {
    TrainingLog: "on_log",
    CheckpointSaved: "on_checkpoint",
    TrainingStarted: "on_started",
    TrainingCompleted: "on_completed",
    TrainingFailed: "on_failed",
    TrainingCancelled: "on_cancelled",
}


def _context(
    event: JobEvent, job: TrainingJob, client: ArkorClient, delivery: Delivery | None = None
) -> Any:
    if type(event) is TrainingLog:
        return _log_context(event, job, delivery)
    if isinstance(event, CheckpointSaved):
        adapter = Adapter(kind="checkpoint", job_id=job.id, step=event.step)
        return CheckpointContext(
            step=event.step,
            adapter=adapter,
            job=job,
            infer=Infer(client, adapter),
            artifacts=list(event.artifacts or []),
            delivery=delivery,
        )
    if isinstance(event, TrainingStarted):
        return StartedContext(job=job, delivery=delivery)
    if isinstance(event, TrainingCompleted):
        return CompletedContext(job=job, artifacts=list(event.artifacts or []), delivery=delivery)
    if isinstance(event, TrainingFailed):
        return FailedContext(job=job, error=event.error, delivery=delivery)
    assert isinstance(event, TrainingCancelled)
    return CancelledContext(job=job, delivery=delivery)


class Dispatcher:
    """The callbacks of one trainer, looked up once: ``await dispatcher(event, job)`` per event."""

    __slots__ = ("_client", "_handlers")

    def __init__(self, callbacks: Callbacks, client: ArkorClient) -> None:
        self._client = client
        self._handlers: dict[type[Any], tuple[str, Any]] = {}
        for event_type, name in _CALLBACK_NAMES.items():
            fn = getattr(callbacks, name)
            if fn is not None:
                self._handlers[event_type] = (name, fn)

    def wants(self, event: JobEvent) -> bool:
        """Whether a callback runs for this event (else :meth:`__call__` would do nothing)."""
        return type(event) in self._handlers

    async def __call__(
        self, event: JobEvent, job: TrainingJob, ledger: Ledger | None = None
    ) -> None:
        """As :func:`dispatch`; with the follower's ``ledger``, contexts carry ``delivery``."""
        handler = self._handlers.get(type(event))
        if handler is None:
            return
        name, fn = handler
        delivery = ledger.delivery() if ledger is not None else None
        try:
            result = fn(_context(event, job, self._client, delivery))
            if result is not None and (
                type(result) is CoroutineType or inspect.isawaitable(result)
            ):
                await result
        except Exception as exc:
            _note(exc, name, event, job)
            raise


def _note(exc: Exception, name: str, event: JobEvent, job: TrainingJob) -> None:
    exc.add_note(
        f"raised by callback {name} on event id {event.event_id!r} of job {job.id}; "
        "the cursor stays before this event, so the next wait()/attach re-delivers it"
    )


#: The fields _log_context fills, in its order (tests/test_callbacks.py checks the list).
LOG_CONTEXT_FIELDS = (
    "step",
    "loss",
    "eval_loss",
    "learning_rate",
    "epoch",
    "samples_per_second",
    "job",
    "delivery",
)
_SETTERS = tuple(LogContext.__dict__[name].__set__ for name in LOG_CONTEXT_FIELDS)
_new = object.__new__


def _log_context(
    event: TrainingLog, job: TrainingJob, delivery: Delivery | None = None
) -> LogContext:
    """``LogContext(step=event.step, ..., job=job)`` filling the frozen slots directly: the
    dispatcher builds one per log event, and attrs' frozen ``__init__`` costs twice as much."""
    ctx = _new(LogContext)
    s_step, s_loss, s_eval, s_lr, s_epoch, s_sps, s_job, s_delivery = _SETTERS
    s_step(ctx, event.step)
    s_loss(ctx, event.loss)
    s_eval(ctx, event.eval_loss)
    s_lr(ctx, event.learning_rate)
    s_epoch(ctx, event.epoch)
    s_sps(ctx, event.samples_per_second)
    s_job(ctx, job)
    s_delivery(ctx, delivery)
    return ctx


async def dispatch(
    event: JobEvent, job: TrainingJob, callbacks: Callbacks, client: ArkorClient
) -> None:
    """Run the callback for ``event`` (if any), sync or async, to completion.

    Raises:
        Exception: Whatever the callback raised, with a note naming it, the event and the job.
    """
    name = _CALLBACK_NAMES.get(type(event))
    if name is None:
        return  # UnknownEvent: nothing to call
    fn = getattr(callbacks, name)
    if fn is None:
        return
    ctx = _context(event, job, client)
    try:
        result = fn(ctx)
        if result is not None and (type(result) is CoroutineType or inspect.isawaitable(result)):
            await result
    except Exception as exc:
        _note(exc, name, event, job)
        raise
