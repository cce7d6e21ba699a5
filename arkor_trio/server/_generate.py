"""Inference with the local engine: loading weights, sampling replies, scoring choices.

Prompts are rendered exactly as training renders conversations, ending with an open assistant
marker; the reply is sampled one character at a time until the model emits the end marker (or
any role marker) or ``max_tokens`` characters (one character is one token here).
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from ._data import BASE_CHARS, PAD, SPECIALS, UNK, DatasetError, check_messages, render
from ._jobconfig import SUPPORTED_MODELS
from ._model import CharModel, Floats, Ints, single_threaded_blas
from ._training import checkpoint_path

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from pathlib import Path

__all__ = ["InferenceRejected", "base_model", "generate", "load_weights", "score_choices"]

PIECE_CHARS = 4
"""Characters per yielded piece (the granularity of streamed deltas)."""
_CACHE_SIZE = 8
_cache: dict[tuple[str, int, int], CharModel] = {}
_cache_lock = threading.Lock()


class InferenceRejected(ValueError):
    """An inference request the engine cannot answer; ``field`` names the request field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.field, str(self)))


def load_weights(data_dir: Path, job_id: str, step: int | None) -> CharModel:
    """The weights a job saved: its checkpoint at ``step``, or its final weights (``None``).

    Loaded models are cached (keyed on path, size and mtime) and must not be modified.

    Raises:
        FileNotFoundError: No such job, checkpoint or final weights (also for an id that is not
            a valid job id, so a request can never reach outside the data dir).
    """
    try:
        path = checkpoint_path(data_dir, job_id, step)
        stat = path.stat()
    except (ValueError, OSError):
        raise FileNotFoundError(f"no weights for job {job_id!r} at step {step!r}") from None
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    model = CharModel.load(path)
    with _cache_lock:
        while len(_cache) >= _CACHE_SIZE:
            del _cache[next(iter(_cache))]
        _cache[key] = model
    return model


@functools.lru_cache(maxsize=4)
def base_model(model: str) -> CharModel:
    """The untrained stand-in for a supported model name; the same name gives the same weights.

    Raises:
        InferenceRejected: ``model`` is not in ``SUPPORTED_MODELS`` (field ``baseModel``).
    """
    if model not in SUPPORTED_MODELS:
        supported = ", ".join(SUPPORTED_MODELS)
        raise InferenceRejected("baseModel", f"unknown baseModel {model!r}; supported: {supported}")
    return CharModel.seeded_from_name(model, BASE_CHARS)


def _prompt(model: CharModel, messages: Any, extra: str = "") -> tuple[Ints, int]:
    try:
        checked = check_messages(messages, "messages")
    except DatasetError as exc:
        raise InferenceRejected("messages", str(exc)) from None
    text = render(checked, prompt=True).text
    return model.encode(text + extra), len(text)


def generate(
    model: CharModel,
    messages: list[dict[str, Any]],
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_tokens: int = 128,
    seed: int | None = None,
) -> Iterator[str]:
    """Sample an assistant reply to ``messages``, yielding it a few characters at a time.

    The arguments are checked before this returns; the iterator then does the work lazily (each
    ``next()`` computes a few characters, so it can run in a worker thread piece by piece).

    Args:
        model: From :func:`load_weights` or :func:`base_model`.
        messages: Chat messages ``{"role", "content"}``.
        temperature: 0 picks the most likely character every time (greedy).
        top_p: Nucleus sampling: sample among the most likely characters whose probabilities
            add up to ``top_p`` (0 keeps only the most likely one).
        max_tokens: At most this many characters are generated.
        seed: Makes sampling reproducible; None draws fresh entropy.

    Raises:
        InferenceRejected: A malformed message list or an out-of-range parameter.
    """
    if not 0 <= temperature <= 100:
        raise InferenceRejected("temperature", "temperature must be between 0 and 100")
    if not 0 <= top_p <= 1:
        raise InferenceRejected("topP", "topP must be between 0 and 1")
    if max_tokens < 1:
        raise InferenceRejected("maxTokens", "maxTokens must be at least 1")
    tokens, _ = _prompt(model, messages)
    return _sample(model, tokens, temperature, top_p, max_tokens, np.random.default_rng(seed))


def _sample(
    model: CharModel,
    tokens: Ints,
    temperature: float,
    top_p: float,
    max_tokens: int,
    rng: np.random.Generator,
) -> Iterator[str]:
    n = model.hyper.context
    history = [0] * n + tokens.tolist()
    pairs = zip(history[n - 1 : -1], history[n:], strict=True)
    grams = model.params["U"][[model.bigram(a, b) for a, b in pairs]]
    memory = grams.sum(axis=0, dtype=np.float32)
    count = len(tokens)
    banned = [model.vocab.index(c) for c in PAD + UNK]
    stops = {model.vocab.index(c) for c in SPECIALS} - set(banned)
    piece = ""
    for _ in range(max_tokens):
        logp = model.next_logprobs(np.array(history[-n:] if n else []), memory / max(count, 1))
        token = _pick(logp, banned, temperature, top_p, rng)
        if token in stops:
            break
        memory += model.params["U"][model.bigram(history[-1], token)]
        history.append(token)
        count += 1
        piece += model.vocab[token]
        if len(piece) >= PIECE_CHARS:
            yield piece
            piece = ""
    if piece:
        yield piece


def _pick(
    logp: Floats, banned: list[int], temperature: float, top_p: float, rng: np.random.Generator
) -> int:
    logp = logp.astype(np.float64)
    logp[banned] = -np.inf
    if temperature == 0 or top_p == 0:
        return int(np.argmax(logp))
    scaled = logp / temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if top_p < 1:
        order = np.argsort(-probs, kind="stable")
        keep = int(np.searchsorted(np.cumsum(probs[order]), top_p)) + 1
        kept = order[:keep]
        nucleus = np.zeros_like(probs)
        nucleus[kept] = probs[kept]
        probs = nucleus / nucleus.sum()
    return int(rng.choice(len(probs), p=probs))


def score_choices(
    model: CharModel, messages: Sequence[Mapping[str, Any]], choices: list[str]
) -> str:
    """The choice the model finds most likely as the start of its reply to ``messages``.

    Each choice is scored by the summed log-probability of its characters right after the
    assistant marker (as with vLLM's guided choice, the reply ends after the choice, so no end
    marker is scored). Ties go to the earlier choice.

    Raises:
        InferenceRejected: ``choices`` is empty or holds a non-string (field
            ``structuredOutputs.choice``), or the messages are malformed.
    """
    if not choices or not all(isinstance(c, str) for c in choices):
        raise InferenceRejected(
            "structuredOutputs.choice",
            "structuredOutputs.choice must be a non-empty list of strings",
        )
    # One choice at a time: memory is bounded by one (prompt + choice), whatever the count.
    scores = []
    with single_threaded_blas():
        for choice in choices:
            clean = "".join(c for c in choice if c not in SPECIALS)
            tokens, start = _prompt(model, messages, clean)
            weight = np.zeros(len(tokens), np.bool_)
            weight[start:] = True
            batch = model.batch([tokens], [weight])
            scores.append(float(model.token_logprobs(batch).sum()))
    return choices[int(np.argmax(scores))]
