"""Validation of ``create_trainer`` arguments and their mapping onto ``JobConfig``.

Bad input raises ``ConfigError`` naming the argument, at construction, before any I/O. The model
name is not checked here: the backend is the authority on what it can train.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import attrs

from .._errors import ConfigError
from ..wire._models import BlobDataset, DatasetSource, HuggingfaceDataset, JobConfig, Lora

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["build_job_config", "check_name", "update_job_config"]


def check_name(name: object) -> str:
    """A job name: a non-empty string."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"name must be a non-empty string, got {name!r}", field="name")
    return name


def _int(field: str, value: Any, *, minimum: int) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        need = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{field} must be {need}, got {value!r}", field=field)
    return value


def _warmup(value: Any) -> float | None:
    """``warmup_steps``: a step count, or a ratio in (0, 1) of the total steps."""
    if isinstance(value, float) and 0 < value < 1:
        return value
    if (isinstance(value, int) and not isinstance(value, bool) and value >= 0) or value is None:
        return value
    raise ConfigError(
        "warmup_steps must be an integer >= 0 (steps) or a ratio of the total steps in (0, 1), "
        f"got {value!r}",
        field="warmup_steps",
    )


def _number(field: str, value: Any, *, positive: bool) -> float | None:
    if value is None:
        return None
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value <= 0 if positive else value < 0):
        ok = False
    if not ok:
        need = "a positive number" if positive else "a non-negative number"
        raise ConfigError(f"{field} must be {need}, got {value!r}", field=field)
    return float(value)


def _str(field: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{field} must be a non-empty string, got {value!r}", field=field)
    return value


def _dataset(value: Any) -> DatasetSource:
    if isinstance(value, HuggingfaceDataset):
        if not isinstance(value.name, str) or not value.name:
            raise ConfigError("dataset.name must be a non-empty string", field="dataset.name")
        return value
    if isinstance(value, BlobDataset):
        if not isinstance(value.url, str) or not value.url:
            raise ConfigError("dataset.url must be a non-empty string", field="dataset.url")
        return value
    if isinstance(value, str):
        hint = (
            f"for the string {value!r}, write HuggingfaceDataset({value!r}) for a Hugging Face "
            f"dataset name or BlobDataset({value!r}) for a URL of a JSONL file"
        )
    elif isinstance(value, dict):
        hint = "a dict is not accepted: wrap it, e.g. HuggingfaceDataset('org/name')"
    else:
        hint = (
            "HuggingfaceDataset('org/name') names a Hugging Face dataset, "
            "BlobDataset('https://.../data.jsonl') a JSONL file, BlobDataset.demo() the bundled one"
        )
    raise ConfigError(
        f"dataset must be HuggingfaceDataset(...) or BlobDataset(...), got {type(value).__name__}"
        f": {hint}",
        field="dataset",
    )


def _lora(value: Any) -> Lora | None:
    if value is None:
        return None
    if not isinstance(value, Lora):
        raise ConfigError(
            f"lora must be Lora(r=..., alpha=...), got {type(value).__name__}", field="lora"
        )
    _int("lora.r", value.r, minimum=1)
    _int("lora.alpha", value.alpha, minimum=1)
    _int("lora.max_length", value.max_length, minimum=1)
    if value.load_in_4bit is not None and not isinstance(value.load_in_4bit, bool):
        raise ConfigError("lora.load_in_4bit must be a bool", field="lora.load_in_4bit")
    return value


def build_job_config(
    *,
    model: Any,
    dataset: Any,
    lora: Any = None,
    max_steps: Any = None,
    num_train_epochs: Any = None,
    learning_rate: Any = None,
    batch_size: Any = None,
    optim: Any = None,
    lr_scheduler_type: Any = None,
    weight_decay: Any = None,
    warmup_steps: Any = None,
    logging_steps: Any = None,
    save_steps: Any = None,
    eval_steps: Any = None,
    train_on_responses_only: Any = None,
    dataset_format: Any = None,
    dataset_split: Any = None,
    dry_run: Any = None,
) -> JobConfig:
    """Check ``create_trainer``'s training arguments and map them onto the wire's ``JobConfig``.

    Raises:
        ConfigError: An argument of the wrong type or out of range; ``field`` names it.
    """
    model_name = _str("model", model)
    if model_name is None:
        raise ConfigError("model is required (e.g. 'unsloth/gemma-4-E4B-it')", field="model")
    checked_lora = _lora(lora)
    if dry_run is not None and not isinstance(dry_run, bool):
        raise ConfigError(f"dry_run must be a bool, got {dry_run!r}", field="dry_run")
    if train_on_responses_only is not None and not isinstance(train_on_responses_only, bool):
        raise ConfigError(
            f"train_on_responses_only must be a bool, got {train_on_responses_only!r}",
            field="train_on_responses_only",
        )
    return JobConfig(
        model=model_name,
        dataset_source=_dataset(dataset),
        lora_r=checked_lora.r if checked_lora else None,
        lora_alpha=checked_lora.alpha if checked_lora else None,
        max_length=checked_lora.max_length if checked_lora else None,
        load_in_4bit=checked_lora.load_in_4bit if checked_lora else None,
        max_steps=_int("max_steps", max_steps, minimum=1),
        num_train_epochs=_number("num_train_epochs", num_train_epochs, positive=True),
        learning_rate=_number("learning_rate", learning_rate, positive=True),
        batch_size=_int("batch_size", batch_size, minimum=1),
        optim=_str("optim", optim),
        lr_scheduler_type=_str("lr_scheduler_type", lr_scheduler_type),
        weight_decay=_number("weight_decay", weight_decay, positive=False),
        warmup_steps=_warmup(warmup_steps),
        logging_steps=_int("logging_steps", logging_steps, minimum=1),
        save_steps=_int("save_steps", save_steps, minimum=1),
        eval_steps=_int("eval_steps", eval_steps, minimum=1),
        train_on_responses_only=train_on_responses_only,
        dataset_format=dataset_format,
        dataset_split=dataset_split,
        dry_run=dry_run,
    )


#: ``create_trainer``'s training keywords that ``Trainer.configure`` accepts.
_SETTINGS = frozenset(
    {
        "model", "dataset", "lora", "max_steps", "num_train_epochs", "learning_rate",
        "batch_size", "optim", "lr_scheduler_type", "weight_decay", "warmup_steps",
        "logging_steps", "save_steps", "eval_steps", "train_on_responses_only",
        "dataset_format", "dataset_split", "dry_run",
    }
)  # fmt: skip
#: The ``JobConfig`` fields a keyword sets, where they are not named alike.
_FIELDS_OF = {
    "dataset": ("dataset_source",),
    "lora": ("lora_r", "lora_alpha", "max_length", "load_in_4bit"),
}


def update_job_config(config: JobConfig, settings: Mapping[str, Any]) -> JobConfig:
    """``config`` with some of ``create_trainer``'s training keywords changed, checked alike.

    Raises:
        ConfigError: An unknown keyword or an invalid value; ``field`` names it.
    """
    unknown = sorted(set(settings) - _SETTINGS)
    if unknown:
        raise ConfigError(
            f"unknown training setting {unknown[0]!r}; known: {', '.join(sorted(_SETTINGS))}",
            field=unknown[0],
        )
    given = {k: v for k, v in settings.items() if k not in ("model", "dataset")}
    checked = build_job_config(
        model=settings.get("model", config.model),
        dataset=settings.get("dataset", config.dataset_source),
        **given,
    )
    changes = {
        field: getattr(checked, field) for key in settings for field in _FIELDS_OF.get(key, (key,))
    }
    return attrs.evolve(config, **changes)
