"""Job config validation of the local engine: every rejection names its wire path."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from arkor_trio.server._training import (
    SUPPORTED_MODELS,
    ConfigRejected,
    TrainingFailure,
    validate_config,
)

MODEL = "unsloth/gemma-4-E4B-it"
SOURCE = {"type": "blob", "url": "file:///tmp/data.jsonl"}


def config(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"model": MODEL, "datasetSource": SOURCE}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def rejected(cfg: Any, *, names_field: bool = True) -> ConfigRejected:
    with pytest.raises(ConfigRejected) as info:
        validate_config(cfg)
    exc = info.value
    assert str(exc) == exc.message
    if names_field:
        assert exc.field in exc.message
    return exc


def test_minimal_and_full_wire_configs_are_accepted() -> None:
    assert MODEL in SUPPORTED_MODELS
    validate_config(config())
    validate_config(
        config(
            loraR=16,
            loraAlpha=16,
            maxLength=512,
            loadIn4bit=False,
            maxSteps=100,
            numTrainEpochs=1.5,
            learningRate=2e-4,
            batchSize=8,
            optim="adamw_8bit",
            lrSchedulerType="cosine",
            weightDecay=0.01,
            warmupSteps=5,
            loggingSteps=1,
            saveSteps=25,
            evalSteps=25,
            trainOnResponsesOnly=True,
            datasetFormat={"type": "chatml"},
            datasetSplit="train",
            dryRun=True,
            seed=7,
        )
    )


@pytest.mark.parametrize(
    "url",
    [
        "file:///data/x.jsonl",
        "file://localhost/data/x.jsonl",
        "http://127.0.0.1:8000/x.jsonl",
        "https://localhost/x.jsonl",
        "http://[::1]:9/x.jsonl",
        "http://127.0.0.2/x.jsonl",
    ],
)
def test_local_dataset_urls_are_accepted(url: str) -> None:
    validate_config(config(datasetSource={"type": "blob", "url": url, "token": "t"}))


@pytest.mark.parametrize(
    ("cfg", "field", "words"),
    [
        (config(model=...), "config.model", "is required"),
        (config(model="gpt-2"), "config.model", MODEL),
        (config(datasetSource=...), "config.datasetSource", "required"),
        (config(datasetSource="file:///x"), "config.datasetSource", "object"),
        (config(datasetSource={"type": "s3", "url": "s3://x"}), "config.datasetSource.type", ""),
        (config(datasetSource={**SOURCE, "extra": 1}), "config.datasetSource.extra", "known"),
        (config(datasetSource={**SOURCE, "token": 5}), "config.datasetSource.token", "string"),
        (config(maxSteps="10"), "config.maxSteps", "positive integer"),
        (config(maxSteps=True), "config.maxSteps", "positive integer"),
        (config(maxSteps=2.0), "config.maxSteps", "positive integer"),
        (config(maxSteps=0), "config.maxSteps", "positive integer"),
        (config(saveSteps=-1), "config.saveSteps", "positive integer"),
        (config(evalSteps=0), "config.evalSteps", "positive integer"),
        (config(loggingSteps=0), "config.loggingSteps", "positive integer"),
        (config(batchSize=0), "config.batchSize", "positive integer"),
        (config(learningRate=0), "config.learningRate", "positive number"),
        (config(learningRate=-1e-3), "config.learningRate", "positive number"),
        (config(learningRate=float("nan")), "config.learningRate", "positive number"),
        (config(numTrainEpochs=0), "config.numTrainEpochs", "positive number"),
        (config(weightDecay=-0.1), "config.weightDecay", "non-negative"),
        (config(warmupSteps=-1), "config.warmupSteps", "non-negative"),
        (config(warmupSteps=1.0), "config.warmupSteps", "ratio of the total steps in (0, 1)"),
        (config(warmupSteps=0.0), "config.warmupSteps", "ratio"),
        (config(warmupSteps=1.5), "config.warmupSteps", "ratio"),
        (config(warmupSteps=float("nan")), "config.warmupSteps", "ratio"),
        (
            config(lrSchedulerType="polynomial"),
            "config.lrSchedulerType",
            "linear, cosine, constant",
        ),
        (config(optim="lion"), "config.optim", "sgd"),
        (config(dryRun="yes"), "config.dryRun", "true or false"),
        (config(trainOnResponsesOnly=1), "config.trainOnResponsesOnly", "true or false"),
        (config(datasetFormat={"type": "alpaca"}), "config.datasetFormat", "chatml"),
        (config(datasetSplit=0.9), "config.datasetSplit", "fraction"),
        (config(seed=-1), "config.seed", "non-negative"),
        (config(fooBar=1), "config.fooBar", "not a known"),
        (config(batchSize=512, maxLength=4096), "config.batchSize", "maxLength"),
    ],
)
def test_rejections_name_the_field(cfg: dict[str, Any], field: str, words: str) -> None:
    exc = rejected(cfg)
    assert exc.field == field
    assert words in exc.message


def test_huggingface_source_has_a_clear_message() -> None:
    hf = {"type": "huggingface", "name": "arkorlab/triage-demo"}
    exc = rejected(config(datasetSource=hf), names_field=False)
    assert exc.field == "config.datasetSource"
    assert exc.message == (
        "Hugging Face datasets are not available on the local backend; "
        "use a file:// dataset (BlobDataset)"
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/x.jsonl",
        "http://10.0.0.1/x.jsonl",
        "http://127.0.0.1.example.com/x.jsonl",
        "ftp://127.0.0.1/x.jsonl",
        "file://server/share/x.jsonl",
        "http://127.0.0.1:99999/x.jsonl",
        "relative/path.jsonl",
    ],
)
def test_remote_or_odd_dataset_urls_are_rejected(url: str) -> None:
    exc = rejected(config(datasetSource={"type": "blob", "url": url}))
    assert exc.field == "config.datasetSource.url"
    assert "127.0.0.1" in exc.message


def test_non_object_config_is_rejected() -> None:
    assert rejected(["model"]).field == "config"
    assert rejected(None).message == "config must be a JSON object"


def test_null_values_count_as_absent() -> None:
    validate_config(config(maxSteps=None, optim=None, datasetSplit=None))


def test_errors_survive_pickling() -> None:
    exc = pickle.loads(pickle.dumps(ConfigRejected("config.maxSteps", "bad")))
    assert (exc.field, exc.message) == ("config.maxSteps", "bad")
    failure = pickle.loads(pickle.dumps(TrainingFailure("boom", step=3)))
    assert (str(failure), failure.step) == ("boom", 3)
