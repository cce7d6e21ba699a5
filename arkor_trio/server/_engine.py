"""The seam between the HTTP side of the local backend and its training/inference engine.

The HTTP layer never imports the NumPy engine directly: it calls the functions gathered in an
:class:`Engine`. :func:`default_engine` imports the real one lazily (so the server modules load
without NumPy work); tests pass a fake one to :func:`~arkor_trio.server.open_local_backend`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

__all__ = ["Engine", "default_engine"]


@attrs.frozen(kw_only=True)
class Engine:
    """The functions (and exception types) the backend needs from an engine.

    Attributes:
        name: A short engine description reported by ``GET /v1/models`` and chat responses.
        supported_models: The cloud model names the engine stands in for.
        validate_config: Raises ``config_rejected`` for a job config the engine cannot run.
        run_training: Blocking; runs one job, emitting events, and returns ``"completed"`` or
            ``"cancelled"``; raises ``training_failure`` when training itself fails.
        load_weights: ``(data_dir, job_id, step)`` -> model; ``FileNotFoundError`` when absent.
        base_model: ``(model_name)`` -> the untrained stand-in model for that name.
        generate: ``(model, messages, *, temperature, top_p, max_tokens, seed)`` -> text pieces.
        score_choices: ``(model, messages, choices)`` -> the most likely choice.
        config_rejected: Exception type with ``field`` and ``message`` (answered with 400).
        training_failure: Exception type with ``step`` (answered with ``training.failed``).
        inference_rejected: Exception type with ``field`` (answered with 400).
    """

    name: str
    supported_models: tuple[str, ...]
    validate_config: Callable[[Mapping[str, Any]], None]
    run_training: Callable[..., str]
    load_weights: Callable[[Path, str, int | None], Any]
    base_model: Callable[[str], Any]
    generate: Callable[..., Iterator[str]]
    score_choices: Callable[[Any, Sequence[Mapping[str, Any]], list[str]], str]
    config_rejected: type[Exception]
    training_failure: type[Exception]
    inference_rejected: type[Exception]


def default_engine() -> Engine:
    """The NumPy character-level engine shipped with arkor-trio (imported on first call)."""
    from . import _generate, _training

    return Engine(
        name=str(getattr(_training, "ENGINE_NAME", "numpy-char-lm")),
        supported_models=tuple(_training.SUPPORTED_MODELS),
        validate_config=_training.validate_config,
        run_training=_training.run_training,
        load_weights=_generate.load_weights,
        base_model=_generate.base_model,
        generate=_generate.generate,
        score_choices=_generate.score_choices,
        config_rejected=_training.ConfigRejected,
        training_failure=_training.TrainingFailure,
        inference_rejected=_generate.InferenceRejected,
    )
