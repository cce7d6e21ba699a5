"""Validation of the wire ``JobConfig`` for the local engine, and the settings it resolves to.

The local backend is strict where the cloud client is tolerant: an unknown key, a wrong type or
an out-of-range value is a :class:`ConfigRejected` naming the wire path (``config.maxSteps``),
which the app answers with HTTP 400.
"""

from __future__ import annotations

import ipaddress
import math
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ._dataset_read import ReadError, file_path, not_regular_problem

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "SUPPORTED_MODELS",
    "ConfigRejected",
    "Settings",
    "parse_config",
]

SUPPORTED_MODELS: tuple[str, ...] = ("unsloth/gemma-4-E4B-it", "arkor-trio/char-mlp")
"""Model names the local backend accepts; it trains its character model in their place."""
SCHEDULES = ("linear", "cosine", "constant")
OPTIMIZERS = ("adamw (and adamw_*, paged_adamw_*)", "adam", "sgd")
HF_MESSAGE = (
    "Hugging Face datasets are not available on the local backend; "
    "use a file:// dataset (BlobDataset)"
)
MAX_POSITIONS = 131072
"""Upper bound of ``batchSize * maxLength`` (characters per step), which bounds memory use."""
MAX_STEPS = 1_000_000
"""Upper bound of ``maxSteps``, ``warmupSteps``, ``loggingSteps``, ``saveSteps``, ``evalSteps``."""
MAX_EPOCHS = 1000.0
MAX_LEARNING_RATE = 1000.0
MAX_WEIGHT_DECAY = 100.0
MAX_URL_CHARS = 4096
MAX_TOKEN_CHARS = 4096
_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


class ConfigRejected(ValueError):
    """The job config is not acceptable; ``field`` is the wire path, ``str(exc)`` the message."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.field, self.message))


@attrs.frozen(kw_only=True)
class Settings:
    """A validated config with the engine's defaults filled in (``max_steps`` None: use epochs)."""

    model: str
    url: str
    token: str | None
    max_steps: int | None
    epochs: float | None
    batch_size: int = 16
    learning_rate: float = 1e-2
    schedule: str = "linear"
    warmup_steps: int = 0
    #: ``warmupSteps`` given as a ratio in (0, 1) of the total steps (0: use ``warmup_steps``).
    warmup_ratio: float = 0.0
    optim: str = "adamw"
    weight_decay: float = 0.0
    logging_steps: int | None = None
    save_steps: int | None = None
    eval_steps: int | None = None
    max_length: int = 1024
    responses_only: bool = False
    dry_run: bool = False
    eval_fraction: float = 0.1
    seed: int = 0
    ignored: tuple[str, ...] = ()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _int_in(lo: int, hi: int) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(lo, f"an integer >= {lo}")
        return None if _is_int(v) and lo <= v <= hi else f"must be {kind} (at most {hi})"

    return check


def _number_in(hi: float, *, zero: bool) -> Callable[[Any], str | None]:
    kind = "a non-negative number" if zero else "a positive number"

    def check(v: Any) -> str | None:
        ok = _is_number(v) and (v >= 0 if zero else v > 0) and v <= hi
        return None if ok else f"must be {kind} (at most {hi:g})"

    return check


_positive_int = _int_in(1, MAX_STEPS)


def _warmup(v: Any) -> str | None:
    if (_is_int(v) and 0 <= v <= MAX_STEPS) or (isinstance(v, float) and 0 < v < 1):
        return None
    return (
        f"must be a non-negative integer of steps (at most {MAX_STEPS}) or a ratio of the "
        "total steps in (0, 1)"
    )


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def _optim(v: Any) -> str | None:
    ok = isinstance(v, str) and (v in ("adam", "sgd") or v.startswith(("adamw", "paged_adamw")))
    return None if ok else f"must be one of {', '.join(OPTIMIZERS)}"


def _schedule(v: Any) -> str | None:
    return None if v in SCHEDULES else f"must be one of {', '.join(SCHEDULES)}"


def _format(v: Any) -> str | None:
    ok = v == "chatml" or (isinstance(v, dict) and v == {"type": "chatml"})
    return None if ok else 'must be {"type": "chatml"} (the only format the local backend reads)'


def _split(v: Any) -> str | None:
    if isinstance(v, str) and v:
        return None
    if _is_number(v) and 0 <= v <= 0.5:
        return None
    return "must be a split name or a held-out fraction between 0 and 0.5"


_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "loraR": _int_in(1, 65536),
    "loraAlpha": _int_in(1, 65536),
    "maxLength": _int_in(1, MAX_POSITIONS),
    "loadIn4bit": _bool,
    "maxSteps": _positive_int,
    "numTrainEpochs": _number_in(MAX_EPOCHS, zero=False),
    "learningRate": _number_in(MAX_LEARNING_RATE, zero=False),
    "batchSize": _int_in(1, MAX_POSITIONS),
    "optim": _optim,
    "lrSchedulerType": _schedule,
    "weightDecay": _number_in(MAX_WEIGHT_DECAY, zero=True),
    "warmupSteps": _warmup,
    "loggingSteps": _positive_int,
    "saveSteps": _positive_int,
    "evalSteps": _positive_int,
    "trainOnResponsesOnly": _bool,
    "datasetFormat": _format,
    "datasetSplit": _split,
    "dryRun": _bool,
    "seed": _int_in(0, 2**63 - 1),
}
_IGNORED = ("loraR", "loraAlpha", "loadIn4bit")


def _dataset(source: Any) -> tuple[str, str | None]:
    path = "config.datasetSource"
    if source is None:
        raise ConfigRejected(path, f"{path} is required (a BlobDataset with a file:// URL)")
    if not isinstance(source, dict):
        raise ConfigRejected(path, f"{path} must be an object")
    kind = source.get("type")
    if kind == "huggingface":
        raise ConfigRejected(path, HF_MESSAGE)
    if kind != "blob":
        raise ConfigRejected(f"{path}.type", f'{path}.type must be "blob" or "huggingface"')
    for key in source:
        if key not in ("type", "url", "token"):
            raise ConfigRejected(f"{path}.{key}", f"{path}.{key} is not a known key")
    url, token = source.get("url"), source.get("token")
    if token is not None and not isinstance(token, str):
        raise ConfigRejected(f"{path}.token", f"{path}.token must be a string")
    if token is not None and len(token) > MAX_TOKEN_CHARS:
        raise ConfigRejected(f"{path}.token", f"{path}.token is longer than {MAX_TOKEN_CHARS}")
    if isinstance(url, str) and len(url) > MAX_URL_CHARS:
        raise ConfigRejected(f"{path}.url", f"{path}.url is longer than {MAX_URL_CHARS}")
    if not isinstance(url, str) or not _local_url(url):
        raise ConfigRejected(
            f"{path}.url",
            f"{path}.url must be a file:// URL or an http(s) URL on 127.0.0.1, localhost or ::1",
        )
    if url.lower().startswith("file:"):
        try:
            problem = not_regular_problem(file_path(url))
        except ReadError as exc:
            problem = str(exc)
        if problem is not None:
            raise ConfigRejected(f"{path}.url", f"{path}.url: {problem}")
    return url, token


def _local_url(url: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  # raises ValueError for an invalid port
    except ValueError:
        return False
    if parts.scheme == "file":
        return parts.netloc in ("", "localhost") and bool(parts.path)
    if parts.scheme not in ("http", "https") or not host:
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_config(config: Any) -> Settings:
    """Validate a wire ``JobConfig`` and resolve it to :class:`Settings`.

    Raises:
        ConfigRejected: For the first problem found; ``field`` is its wire path.
    """
    if not isinstance(config, Mapping):
        raise ConfigRejected("config", "config must be a JSON object")
    known = {"model", "datasetSource", *_CHECKS}
    for key in config:
        if key not in known:
            raise ConfigRejected(f"config.{key}", f"config.{key} is not a known JobConfig key")
    model = config.get("model")
    if model not in SUPPORTED_MODELS:
        supported = ", ".join(SUPPORTED_MODELS)
        what = "is required" if model is None else f"{model!r} is not supported"
        raise ConfigRejected("config.model", f"config.model {what}; supported: {supported}")
    url, token = _dataset(config.get("datasetSource"))
    values = {k: v for k, v in config.items() if k in _CHECKS and v is not None}
    for key, value in values.items():
        problem = _CHECKS[key](value)
        if problem:
            raise ConfigRejected(f"config.{key}", f"config.{key} {problem} (got {value!r})")
    batch, length = values.get("batchSize", 16), values.get("maxLength", 1024)
    if batch * length > MAX_POSITIONS:
        raise ConfigRejected(
            "config.batchSize",
            f"config.batchSize * config.maxLength must be at most {MAX_POSITIONS} characters "
            f"per step on the local backend (got {batch} * {length})",
        )
    split = values.get("datasetSplit")
    optim = values.get("optim", "adamw")
    return Settings(
        model=str(model),
        url=url,
        token=token,
        max_steps=values.get("maxSteps", None if "numTrainEpochs" in values else 300),
        epochs=values.get("numTrainEpochs"),
        batch_size=batch,
        learning_rate=float(values.get("learningRate", 1e-2)),
        schedule=values.get("lrSchedulerType", "linear"),
        warmup_steps=warmup if _is_int(warmup := values.get("warmupSteps", 0)) else 0,
        warmup_ratio=0.0 if _is_int(warmup) else float(warmup),
        optim="adamw" if optim not in ("adam", "sgd") else optim,
        weight_decay=float(values.get("weightDecay", 0.0)),
        logging_steps=values.get("loggingSteps"),
        save_steps=values.get("saveSteps"),
        eval_steps=values.get("evalSteps"),
        max_length=length,
        responses_only=values.get("trainOnResponsesOnly", False),
        dry_run=values.get("dryRun", False),
        eval_fraction=float(split) if split is not None and not isinstance(split, str) else 0.1,
        seed=values.get("seed", 0),
        ignored=tuple(k for k in _IGNORED if k in values),
    )
