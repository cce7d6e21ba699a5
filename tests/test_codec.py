from __future__ import annotations

import math

import attrs
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from arkor_trio import (
    BlobDataset,
    CheckpointSaved,
    HuggingfaceDataset,
    JobConfig,
    TrainingCancelled,
    TrainingCompleted,
    TrainingFailed,
    TrainingLog,
    TrainingStarted,
    UnknownEvent,
)
from arkor_trio.wire._codec import (
    MalformedPayload,
    converter,
    decode_event,
    decode_job,
    encode,
    to_camel,
)


def test_camel_names():
    assert to_camel("eval_loss") == "evalLoss"
    assert to_camel("samples_per_second") == "samplesPerSecond"
    assert to_camel("load_in_4bit") == "loadIn4bit"
    assert to_camel("step") == "step"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"type": "training.started", "jobId": "j", "metadata": {"a": 1}}, TrainingStarted),
        ({"type": "training.log", "step": 1, "loss": 2}, TrainingLog),
        ({"type": "checkpoint.saved", "step": 5}, CheckpointSaved),
        ({"type": "training.completed", "artifacts": [{"pathname": "x"}]}, TrainingCompleted),
        ({"type": "training.failed", "error": "oom", "step": 3}, TrainingFailed),
        ({"type": "training.cancelled"}, TrainingCancelled),
        ({"type": "something.new", "x": 1}, UnknownEvent),
    ],
)
def test_event_types(payload, expected):
    event = decode_event({**payload, "extraKey": [1, 2]}, "9")
    assert type(event) is expected
    assert event.event_id == "9"


def test_log_metrics_and_missing_ones():
    event = decode_event(
        {"type": "training.log", "step": 7, "loss": 1, "evalLoss": None, "learningRate": 0.5}, None
    )
    assert isinstance(event, TrainingLog)
    assert (event.step, event.loss, event.eval_loss, event.learning_rate) == (7, 1.0, None, 0.5)
    assert event.epoch is None
    assert event.samples_per_second is None


@pytest.mark.parametrize(
    "payload",
    [
        None,
        3,
        "training.log",
        [],
        {"step": 1},
        {"type": 5},
        {"type": "training.log"},
        {"type": "training.log", "step": "abc"},
        {"type": "checkpoint.saved", "step": None},
    ],
)
def test_malformed_payloads(payload):
    with pytest.raises(MalformedPayload):
        decode_event(payload, "1")


def test_the_payload_cannot_choose_the_event_id():
    event = decode_event({"type": "training.log", "step": 1, "\x00eventId": "evil"}, "real")
    assert event.event_id == "real"


def test_job_decoding_is_tolerant():
    job = decode_job(
        {
            "id": "j",
            "name": "n",
            "status": "running",
            "orgId": "o",
            "projectId": "p",
            "config": {"model": "m", "futureKey": True},
            "createdAt": "2026-01-01T00:00:00Z",
            "somethingNew": {"x": 1},
        }
    )
    assert (job.id, job.status, job.org_id, job.config["futureKey"]) == ("j", "running", "o", True)
    assert not job.is_terminal
    with pytest.raises(MalformedPayload, match="job"):
        decode_job({"name": "n"})


def test_job_config_round_trip_with_both_dataset_kinds():
    for ds in (HuggingfaceDataset("a/b", split="train", subset="en"), BlobDataset("file:///x")):
        config = JobConfig(model="m", dataset_source=ds, max_steps=3, load_in_4bit=True)
        wire = encode(config)
        assert wire["datasetSource"]["type"] in ("huggingface", "blob")
        assert "loraR" not in wire
        assert converter.structure(wire, JobConfig) == config


def test_the_sse_id_never_goes_on_the_wire():
    assert "eventId" not in encode(TrainingLog(step=1, event_id="x"))


_METRIC_KEYS = ("loss", "evalLoss", "learningRate", "epoch", "samplesPerSecond")
_metric = st.one_of(
    st.none(),
    st.floats(allow_nan=False),
    st.integers(-(10**6), 10**6),
    st.booleans(),
    st.text(max_size=3),
)


def _comparable(event: object) -> object:
    """The decoded event as a tuple in which NaN equals NaN (a float field may come as "NaN")."""
    if event is None:
        return None
    fields = attrs.astuple(event, recurse=False)
    return (type(event), *("NaN" if isinstance(v, float) and math.isnan(v) else v for v in fields))


@given(
    step=st.one_of(st.integers(-5, 10**9), st.booleans(), st.floats(allow_nan=False), st.none()),
    metrics=st.fixed_dictionaries(
        {},
        optional=dict.fromkeys(
            ("loss", "evalLoss", "learningRate", "epoch", "samplesPerSecond"), _metric
        ),
    ),
    job_id=st.one_of(st.text(max_size=5), st.integers()),
)
@example(step=1, metrics={"loss": "NAN", "epoch": float("nan")}, job_id="j")  # nan != nan
@example(step=1, metrics={"evalLoss": "-inf", "learningRate": float("inf")}, job_id="j")
def test_the_log_fast_path_agrees_with_the_converter(step, metrics, job_id):
    payload = {"type": "training.log", "jobId": job_id, **metrics}
    if step is not None:
        payload["step"] = step
    try:
        expected = converter.structure({**payload, "\x00eventId": "7"}, TrainingLog)
    except Exception:
        expected = None
    try:
        got = decode_event(payload, "7")
    except MalformedPayload:
        got = None
    assert _comparable(got) == _comparable(expected)


def test_the_fast_log_constructor_fills_every_field():
    # The fast path builds TrainingLog without its __init__: a new field, a validator or a
    # converter must show up here first.
    from arkor_trio.wire._codec import LOG_FIELDS

    fields = attrs.fields(TrainingLog)
    assert sorted(f.name for f in fields) == sorted(LOG_FIELDS)
    assert all(f.validator is None and f.converter is None for f in fields)
    assert not hasattr(TrainingLog, "__attrs_post_init__")
    data = {"type": "training.log", "jobId": "j", "timestamp": "t", "step": 3, "loss": 0.5}
    got = decode_event(data, "7")
    want = TrainingLog(job_id="j", timestamp="t", event_id="7", step=3, loss=0.5)
    assert type(got) is TrainingLog
    assert got == want
    assert hash(got) == hash(want)
    assert repr(got) == repr(want)


def test_event_to_wire_gives_back_the_wire_object_of_every_event_type():
    from arkor_trio import UnknownEvent, event_to_wire
    from arkor_trio.wire._codec import decode_event

    wire = [
        {"type": "training.started", "jobId": "j", "timestamp": "t", "metadata": {"a": 1}},
        {"type": "training.log", "jobId": "j", "step": 3, "loss": 0.5, "evalLoss": 0.75,
         "learningRate": 0.001, "samplesPerSecond": 12.5},
        {"type": "checkpoint.saved", "jobId": "j", "step": 3, "artifacts": [{"pathname": "c"}]},
        {"type": "training.completed", "jobId": "j", "artifacts": []},
        {"type": "training.failed", "jobId": "j", "error": "boom"},
        {"type": "training.cancelled", "jobId": "j"},
        {"type": "model.exported", "jobId": "j", "format": "gguf"},
    ]  # fmt: skip
    for data in wire:
        event = decode_event(data, "7")
        assert event_to_wire(event) == data
        assert next(iter(event_to_wire(event))) == "type"
        assert event.event_id == "7"
        assert decode_event(event_to_wire(event), event.event_id) == event
    assert isinstance(decode_event(wire[-1]), UnknownEvent)
