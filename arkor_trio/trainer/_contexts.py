"""The contexts passed to lifecycle callbacks (the trainer layer: a checkpoint's has ``infer``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from ..stream import Delivery  # noqa: TC004
    from ..wire._models import Adapter, TrainingJob  # noqa: TC004
    from ._infer import Infer  # noqa: TC004  # contexts are never structured by cattrs

__all__ = [
    "CancelledContext",
    "CheckpointContext",
    "CompletedContext",
    "FailedContext",
    "LogContext",
    "StartedContext",
]


@attrs.frozen(kw_only=True)
class StartedContext:
    """Passed to ``on_started``."""

    job: TrainingJob
    #: Which dispatch this is (job_id, event_id, lease token, holder): the idempotency key
    #: for side effects that must not run twice (design.md section 14).
    delivery: Delivery | None = None


@attrs.frozen(kw_only=True)
class LogContext:
    """Passed to ``on_log``; metrics the backend did not send on this step are None."""

    step: int
    loss: float | None
    eval_loss: float | None
    learning_rate: float | None
    epoch: float | None
    samples_per_second: float | None
    job: TrainingJob
    #: Which dispatch this is (job_id, event_id, lease token, holder): the idempotency key
    #: for side effects that must not run twice (design.md section 14).
    delivery: Delivery | None = None


@attrs.frozen(kw_only=True)
class CheckpointContext:
    """Passed to ``on_checkpoint``; ``infer`` runs chat inference on this checkpoint."""

    step: int
    adapter: Adapter
    job: TrainingJob
    infer: Infer
    artifacts: list[Any]
    #: Which dispatch this is (job_id, event_id, lease token, holder): the idempotency key
    #: for side effects that must not run twice (design.md section 14).
    delivery: Delivery | None = None


@attrs.frozen(kw_only=True)
class CompletedContext:
    """Passed to ``on_completed``."""

    job: TrainingJob
    artifacts: list[Any]
    #: Which dispatch this is (job_id, event_id, lease token, holder): the idempotency key
    #: for side effects that must not run twice (design.md section 14).
    delivery: Delivery | None = None


@attrs.frozen(kw_only=True)
class FailedContext:
    """Passed to ``on_failed``; ``error`` is the backend's message (a string)."""

    job: TrainingJob
    error: str
    #: Which dispatch this is (job_id, event_id, lease token, holder): the idempotency key
    #: for side effects that must not run twice (design.md section 14).
    delivery: Delivery | None = None


@attrs.frozen(kw_only=True)
class CancelledContext:
    """Passed to ``on_cancelled`` (arkor-trio's sixth callback)."""

    job: TrainingJob
    #: Which dispatch this is (job_id, event_id, lease token, holder): the idempotency key
    #: for side effects that must not run twice (design.md section 14).
    delivery: Delivery | None = None
