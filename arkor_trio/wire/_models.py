"""Wire models, job events and callback contexts (attrs, frozen).

Field names are snake_case here; :mod:`arkor_trio.wire._codec` maps them to the wire's camelCase.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeAlias

import attrs

__all__ = [
    "TERMINAL_STATUSES",
    "TERMINAL_TYPES",
    "Adapter",
    "BlobDataset",
    "ChatCompletion",
    "CheckpointSaved",
    "DatasetSource",
    "HuggingfaceDataset",
    "JobConfig",
    "JobEvent",
    "JobStatus",
    "Lora",
    "TrainingCancelled",
    "TrainingCompleted",
    "TrainingFailed",
    "TrainingJob",
    "TrainingLog",
    "TrainingResult",
    "TrainingStarted",
    "UnknownEvent",
    "terminal_event",
]

JobStatus: TypeAlias = Literal["queued", "running", "completed", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


# --- job description -------------------------------------------------------------------------


@attrs.frozen
class HuggingfaceDataset:
    """A dataset on the Hugging Face hub (``{"type": "huggingface", ...}`` on the wire).

    Args:
        name: The hub id, e.g. ``"arkorlab/triage-demo"``.
        split: The split to train on (backend default when None).
        subset: The configuration / subset name.
    """

    name: str
    split: str | None = attrs.field(default=None, kw_only=True)
    subset: str | None = attrs.field(default=None, kw_only=True)


@attrs.frozen
class BlobDataset:
    """A JSONL dataset at a URL (``{"type": "blob", ...}`` on the wire).

    Args:
        url: ``https://...``, or ``file:///...`` for the local backend.
        token: An optional bearer token the backend uses to fetch it.
    """

    url: str
    token: str | None = attrs.field(default=None, kw_only=True, repr=False)

    @classmethod
    def demo(cls) -> BlobDataset:
        """The support-triage chat dataset bundled with arkor-trio, for the local backend."""
        from importlib.resources import files

        path = files("arkor_trio.server").joinpath("data/triage-demo.jsonl")
        return cls(f"file://{path}")


DatasetSource: TypeAlias = HuggingfaceDataset | BlobDataset


@attrs.frozen(kw_only=True)
class Lora:
    """LoRA adapter settings.

    Args:
        r: Rank (``loraR``).
        alpha: Scaling (``loraAlpha``).
        max_length: Maximum sequence length (``maxLength``).
        load_in_4bit: Load the base model quantised (``loadIn4bit``).
    """

    r: int = 16
    alpha: int = 16
    max_length: int | None = None
    load_in_4bit: bool | None = None


@attrs.frozen(kw_only=True)
class JobConfig:
    """The ``config`` object of ``POST /v1/jobs`` (None fields are omitted on the wire)."""

    model: str
    dataset_source: DatasetSource
    lora_r: int | None = None
    lora_alpha: int | None = None
    max_length: int | None = None
    load_in_4bit: bool | None = None
    max_steps: int | None = None
    num_train_epochs: float | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    optim: str | None = None
    lr_scheduler_type: str | None = None
    weight_decay: float | None = None
    warmup_steps: float | None = None
    logging_steps: int | None = None
    save_steps: int | None = None
    eval_steps: int | None = None
    train_on_responses_only: Any = None
    dataset_format: Any = None
    dataset_split: Any = None
    dry_run: bool | None = None


@attrs.frozen(kw_only=True)
class TrainingJob:
    """A training job as the backend reports it.

    ``config`` is kept as the raw JSON object the backend echoed (it may hold keys this client
    does not know). ``artifacts`` is filled by backends that report them on the job.
    """

    id: str
    name: str
    status: str
    org_id: str = ""
    project_id: str = ""
    config: Mapping[str, Any] = attrs.field(factory=dict)
    error: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    artifacts: list[Any] | None = None

    @property
    def is_terminal(self) -> bool:
        """True when the status is completed, failed or cancelled."""
        return self.status in TERMINAL_STATUSES


@attrs.frozen(kw_only=True)
class Adapter:
    """Which trained weights to run inference on: the final adapter or a checkpoint's."""

    kind: Literal["final", "checkpoint"]
    job_id: str
    step: int | None = None


# --- events ----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _EventBase:
    job_id: str = ""
    timestamp: str | None = None
    #: The SSE ``id:`` of the frame that carried this event (not part of the JSON).
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class TrainingStarted(_EventBase):
    """``training.started``: the backend began training."""

    metadata: Any = None


@attrs.frozen(kw_only=True)
class TrainingLog(_EventBase):
    """``training.log``: metrics for one step (absent metrics are None)."""

    step: int
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    epoch: float | None = None
    samples_per_second: float | None = None


@attrs.frozen(kw_only=True)
class CheckpointSaved(_EventBase):
    """``checkpoint.saved``: an adapter checkpoint exists for ``step``."""

    step: int
    artifacts: list[Any] | None = None


@attrs.frozen(kw_only=True)
class TrainingCompleted(_EventBase):
    """``training.completed`` (terminal)."""

    metrics: Any = None
    artifacts: list[Any] | None = None


@attrs.frozen(kw_only=True)
class TrainingFailed(_EventBase):
    """``training.failed`` (terminal); ``error`` is the backend's message."""

    error: str = "unknown error"
    step: int | None = None


@attrs.frozen(kw_only=True)
class TrainingCancelled(_EventBase):
    """``training.cancelled`` (terminal): the job was cancelled on the backend."""


@attrs.frozen(kw_only=True)
class UnknownEvent(_EventBase):
    """An event whose ``type`` this client does not know; skipped by the trainer."""

    type: str
    data: Mapping[str, Any] = attrs.field(factory=dict)


JobEvent: TypeAlias = (
    TrainingStarted
    | TrainingLog
    | CheckpointSaved
    | TrainingCompleted
    | TrainingFailed
    | TrainingCancelled
    | UnknownEvent
)


@attrs.frozen(kw_only=True)
class TrainingResult:
    """What ``Trainer.wait()`` returns: the final job, its artifacts and its loss curve.

    A failed or cancelled job is a result too: inspect ``job.status``.

    Attributes:
        job: The job as it ended.
        artifacts: The final artifacts (``[]`` unless completed).
        history: Every ``training.log`` event the trainer dispatched, in step order (as W&B's
            ``run.history()``): ``[(log.step, log.loss) for log in result.history]`` is the loss
            curve. A trainer that resumed from a stored cursor (``attach`` with a
            ``FileCursorStore``) has only the logs after it. Not part of ``==``.
    """

    job: TrainingJob
    artifacts: list[Any] = attrs.field(factory=list)
    history: tuple[TrainingLog, ...] = attrs.field(default=(), eq=False, repr=False)


@attrs.frozen(kw_only=True)
class ChatCompletion:
    """A parsed, non-streaming chat completion.

    Attributes:
        text: The assistant message's content (None when it only called tools).
        tool_calls: The raw ``tool_calls`` list of the message (empty when none).
        finish_reason: ``"stop"``, ``"length"``, ``"tool_calls"``, ... or None.
        raw: The whole JSON response.
    """

    text: str | None
    tool_calls: list[Mapping[str, Any]] = attrs.field(factory=list)
    finish_reason: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict)


#: The event types that end a job's stream.
TERMINAL_TYPES: frozenset[type[Any]] = frozenset(
    {TrainingCompleted, TrainingFailed, TrainingCancelled}
)


def terminal_event(job: TrainingJob, event_id: str | None) -> JobEvent:
    """The terminal event a finished job stands for (an ``end`` frame came without one)."""
    common: dict[str, Any] = {"job_id": job.id, "timestamp": job.completed_at, "event_id": event_id}
    if job.status == "completed":
        return TrainingCompleted(artifacts=list(job.artifacts or []), **common)
    if job.status == "failed":
        return TrainingFailed(error=job.error or "unknown error", **common)
    return TrainingCancelled(**common)
