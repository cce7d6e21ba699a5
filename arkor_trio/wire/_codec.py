"""The one cattrs converter: snake_case attrs models <-> the wire's camelCase JSON.

Decoding tolerates unknown keys (the backend may add fields); encoding omits None.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.json import make_converter

from .._errors import ArkorError
from ._models import (
    Adapter,
    BlobDataset,
    CheckpointSaved,
    DatasetSource,
    HuggingfaceDataset,
    JobEvent,
    TrainingCancelled,
    TrainingCompleted,
    TrainingFailed,
    TrainingJob,
    TrainingLog,
    TrainingStarted,
    UnknownEvent,
)

_fast_loads: Callable[[str], Any]
try:  # a C parser, ~4x faster than json.loads on event payloads; the decoded values are the same
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - orjson is a dependency; keep working without it
    _fast_loads = json.loads


__all__ = [
    "EVENT_TYPES",
    "MalformedPayload",
    "decode_event",
    "decode_event_json",
    "decode_job",
    "encode",
    "event_to_wire",
    "to_camel",
]

T = TypeVar("T")

_CAMEL_RE = re.compile(r"_([a-z0-9])")

#: Fields whose wire name is not the plain camelCase of the attribute.
_RENAMES: dict[str, str] = {"load_in_4bit": "loadIn4bit"}

#: Attributes that never go on the wire.
_LOCAL_ONLY = frozenset({"event_id"})

EVENT_TYPES: dict[str, type[Any]] = {
    "training.started": TrainingStarted,
    "training.log": TrainingLog,
    "checkpoint.saved": CheckpointSaved,
    "training.completed": TrainingCompleted,
    "training.failed": TrainingFailed,
    "training.cancelled": TrainingCancelled,
}

_DATASET_TAGS: dict[type[Any], str] = {HuggingfaceDataset: "huggingface", BlobDataset: "blob"}


class MalformedPayload(ArkorError, ValueError):
    """A JSON payload did not have the shape of the model it was decoded into."""


def to_camel(name: str) -> str:
    """Map a snake_case attribute name to its wire name (``eval_loss`` -> ``evalLoss``)."""
    return _RENAMES.get(name) or _CAMEL_RE.sub(lambda m: m.group(1).upper(), name)


#: Where ``decode_event`` puts the SSE id for the structure hook (overwritten on every decode,
#: so a payload cannot choose it).
_EVENT_ID_KEY = "\x00eventId"


def _overrides(cls: type[Any], *, structure: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in attrs.fields(cls):
        if a.name == "event_id" and structure:
            out[a.name] = override(rename=_EVENT_ID_KEY)
        elif a.name in _LOCAL_ONLY:
            out[a.name] = override(omit=True)
        else:
            out[a.name] = override(rename=to_camel(a.name))
    return out


def _make_converter() -> cattrs.Converter:
    conv = make_converter()

    def unstructure_factory(cls: type[Any]) -> Callable[[Any], dict[str, Any]]:
        base = make_dict_unstructure_fn(cls, conv, **_overrides(cls))

        def unstructure(obj: Any) -> dict[str, Any]:
            out = {k: v for k, v in base(obj).items() if v is not None}
            tag = _DATASET_TAGS.get(type(obj))
            return {"type": tag, **out} if tag else out

        return unstructure

    def structure_factory(cls: type[Any]) -> Callable[[Any, Any], Any]:
        return make_dict_structure_fn(cls, conv, **_overrides(cls, structure=True))

    conv.register_unstructure_hook_factory(attrs.has, unstructure_factory)
    conv.register_structure_hook_factory(attrs.has, structure_factory)

    def structure_dataset(value: Any, _: Any) -> DatasetSource:
        if not isinstance(value, Mapping):
            raise TypeError("datasetSource must be an object")
        kind = value.get("type")
        cls = {"huggingface": HuggingfaceDataset, "blob": BlobDataset}.get(str(kind))
        if cls is None:
            raise ValueError(f"unknown datasetSource type {kind!r}")
        return conv.structure(value, cls)

    conv.register_structure_hook(DatasetSource, structure_dataset)
    return conv


converter = _make_converter()


def encode(obj: Any) -> dict[str, Any]:
    """Unstructure an attrs model to wire JSON (camelCase, None omitted)."""
    out = converter.unstructure(obj)
    assert isinstance(out, dict)
    return out


_TYPE_NAMES: dict[type[Any], str] = {cls: name for name, cls in EVENT_TYPES.items()}


def event_to_wire(event: JobEvent) -> dict[str, Any]:
    """A job event back in its wire form: the JSON object its SSE frame's ``data`` carried.

    ``type`` first (``"training.log"``), then the fields in camelCase (``jobId``, ``evalLoss``),
    None fields left out; an :class:`UnknownEvent` gives back the object it was read from. The
    frame's SSE id is not part of it: it is ``event.event_id``. ``decode_event(event_to_wire(e),
    e.event_id) == e`` for every event.
    """
    if isinstance(event, UnknownEvent):
        return dict(event.data)
    return {"type": _TYPE_NAMES[type(event)], **encode(event)}


def _structure(data: Any, cls: type[T], what: str) -> T:
    if not isinstance(data, Mapping):
        raise MalformedPayload(f"{what}: expected a JSON object, got {type(data).__name__}")
    try:
        return converter.structure(data, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError, OverflowError) as exc:
        detail = (
            "; ".join(cattrs.transform_error(exc))
            if isinstance(exc, cattrs.BaseValidationError)
            else str(exc)
        )
        raise MalformedPayload(f"{what}: {detail}") from exc


def load_json(text: str) -> Any:
    """``json.loads(text)``, fast: orjson first, the standard library where orjson refuses.

    orjson accepts a subset of what ``json.loads`` does (no ``NaN``/``Infinity``, no integers
    beyond 64 bits, no lone surrogates, nesting up to 1024 deep); those inputs take the
    standard parser, so the result is always what ``json.loads`` gives.

    Raises:
        ValueError: Not JSON (``json.JSONDecodeError``).
        RecursionError: Nested deeper than the standard parser can go.
    """
    try:
        return _fast_loads(text)
    except ValueError:
        return json.loads(text)


def decode_job(data: Any) -> TrainingJob:
    """Decode a ``TrainingJob`` JSON object (unknown keys ignored)."""
    return _structure(data, TrainingJob, "job")


def decode_adapter(data: Any) -> Adapter:
    """Decode an adapter reference."""
    return _structure(data, Adapter, "adapter")


def decode_event(data: Any, event_id: str | None = None) -> JobEvent:
    """Decode one event payload by its JSON ``type``.

    Raises:
        MalformedPayload: The payload is not an object, has no string ``type``, or a known
            type's required field is missing or of the wrong type.
    """
    if type(data) is not dict and not isinstance(data, Mapping):
        raise MalformedPayload(f"event: expected a JSON object, got {type(data).__name__}")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise MalformedPayload("event: missing string field 'type'")
    if kind == "training.log":
        fast = _fast_log(data, event_id)
        if fast is not None:
            return fast
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        return UnknownEvent(
            type=kind,
            data=dict(data),
            job_id=str(data.get("jobId", "")),
            timestamp=data.get("timestamp") if isinstance(data.get("timestamp"), str) else None,
            event_id=event_id,
        )
    payload = dict(data)
    payload[_EVENT_ID_KEY] = event_id
    event: JobEvent = _structure(payload, cls, f"event {kind!r}")
    return event


def decode_event_json(text: str, event_id: str | None = None) -> JobEvent:
    """Decode one SSE ``data`` payload (JSON text) into an event: the stream's one entry point.

    Raises:
        MalformedPayload: The text is not JSON (or nests too deeply for the parser), or
            :func:`decode_event` refuses the value. Nothing else escapes, so a stream can skip
            and count every undecodable frame.
    """
    try:
        data = _fast_loads(text)
    except ValueError:
        data = _slow_loads(text)
    if type(data) is dict and data.get("type") == "training.log":  # the hot path, inlined
        fast = _fast_log(data, event_id)
        if fast is not None:
            return fast
    return decode_event(data, event_id)


def _slow_loads(text: str) -> Any:
    """The standard parser, for what orjson refuses (NaN, big integers, lone surrogates)."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise MalformedPayload(f"event: not JSON ({exc})") from None
    except RecursionError:
        raise MalformedPayload("event: JSON nested too deeply") from None


_LOG_METRICS = ("loss", "evalLoss", "learningRate", "epoch", "samplesPerSecond")
#: The metric types the fast path passes through as they are.
_EXACT = frozenset({float, type(None)})


def _ints_to_floats(data: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return {k: float(data[k]) for k in _LOG_METRICS if type(data.get(k)) is int}
    except OverflowError:  # an integer of hundreds of digits is no float metric
        raise MalformedPayload("event 'training.log': a metric is too large for a float") from None


def _fast_log(data: Mapping[str, Any], event_id: str | None) -> TrainingLog | None:
    """``training.log`` without the converter when every field already has its exact type.

    The stream's hot path: logs are most of a job's events. Anything unusual (a string number, a
    bool, a missing step) returns None and takes the converter's path, so both paths agree.
    """
    step = data.get("step")
    job_id = data.get("jobId", "")
    timestamp = data.get("timestamp")
    if type(step) is not int or type(job_id) is not str:
        return None
    if timestamp is not None and type(timestamp) is not str:
        return None
    get = data.get
    loss, eval_loss, learning_rate = get("loss"), get("evalLoss"), get("learningRate")
    epoch, samples_per_second = get("epoch"), get("samplesPerSecond")
    exact = _EXACT
    if not (
        type(loss) in exact
        and type(eval_loss) in exact
        and type(learning_rate) in exact
        and type(epoch) in exact
        and type(samples_per_second) in exact
    ):
        for value in (loss, eval_loss, learning_rate, epoch, samples_per_second):
            if value is not None and type(value) is not float and type(value) is not int:
                return None
        return _fast_log({**data, **_ints_to_floats(data)}, event_id)
    # TrainingLog(job_id=..., ...) without attrs' __init__: the frozen class's __init__ goes
    # through object.__setattr__ per field; filling the slots directly halves the cost.
    # tests/test_codec.py checks the field list and the equality with TrainingLog(...).
    log = _new(TrainingLog)
    s_job, s_time, s_id, s_step, s_loss, s_eval, s_lr, s_epoch, s_sps = _LOG_SETTERS
    s_job(log, job_id)
    s_time(log, timestamp)
    s_id(log, event_id)
    s_step(log, step)
    s_loss(log, loss)
    s_eval(log, eval_loss)
    s_lr(log, learning_rate)
    s_epoch(log, epoch)
    s_sps(log, samples_per_second)
    return log


#: The fields the fast path fills, in the order of its setters.
LOG_FIELDS = (
    "job_id",
    "timestamp",
    "event_id",
    "step",
    "loss",
    "eval_loss",
    "learning_rate",
    "epoch",
    "samples_per_second",
)
_new = object.__new__


def _slot_setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    descriptor = next(c.__dict__[name] for c in cls.__mro__ if name in c.__dict__)
    setter: Callable[[Any, Any], None] = descriptor.__set__
    return setter


_LOG_SETTERS = tuple(_slot_setter(TrainingLog, name) for name in LOG_FIELDS)
