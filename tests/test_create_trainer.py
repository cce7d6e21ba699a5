from __future__ import annotations

import re

import pytest

from arkor_trio import (
    ArkorClient,
    BlobDataset,
    ConfigError,
    HuggingfaceDataset,
    Lora,
    Trainer,
    create_trainer,
)
from arkor_trio.wire._codec import encode

BASE = {"name": "n", "model": "unsloth/gemma-4-E4B-it", "dataset": HuggingfaceDataset("a/b")}


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "  "}, "name"),
        ({"name": None}, "name"),
        ({"model": ""}, "model"),
        ({"dataset": {"type": "huggingface", "name": "a/b"}}, "dataset"),
        ({"dataset": "a/b"}, "dataset"),
        ({"max_steps": 0}, "max_steps"),
        ({"max_steps": -5}, "max_steps"),
        ({"max_steps": 2.5}, "max_steps"),
        ({"max_steps": True}, "max_steps"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"num_train_epochs": -1}, "num_train_epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"save_steps": 0}, "save_steps"),
        ({"eval_steps": 0}, "eval_steps"),
        ({"logging_steps": 0}, "logging_steps"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"warmup_steps": 1.0}, "warmup_steps"),
        ({"warmup_steps": 0.0}, "warmup_steps"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"optim": ""}, "optim"),
        ({"dry_run": "yes"}, "dry_run"),
        ({"lora": {"r": 16}}, "lora"),
        ({"lora": Lora(r=0)}, "lora.r"),
        ({"callbacks": {"on_finish": print}}, "callbacks.on_finish"),
        ({"client": "http://x"}, "client"),
        ({"reconnect": {"max_attempts": 3}}, "reconnect"),
        ({"cursor_store": object()}, "cursor_store"),
    ],
)
def test_bad_input_names_the_field(override, field):
    with pytest.raises(ConfigError) as info:
        create_trainer(**{**BASE, **override})
    assert info.value.field == field
    assert field.split(".")[0] in str(info.value)


def test_config_maps_to_the_wire_exactly():
    trainer = create_trainer(
        **BASE,
        lora=Lora(r=8, alpha=16, max_length=512, load_in_4bit=False),
        max_steps=100,
        num_train_epochs=2,
        learning_rate=2e-4,
        batch_size=4,
        optim="adamw_8bit",
        lr_scheduler_type="cosine",
        weight_decay=0.01,
        warmup_steps=5,
        logging_steps=1,
        save_steps=25,
        eval_steps=25,
        train_on_responses_only=True,
        dataset_format={"type": "chatml"},
        dataset_split="train",
        dry_run=True,
        client=ArkorClient(base_url="http://127.0.0.1:9", token="t"),
    )
    assert encode(trainer._config) == {
        "model": "unsloth/gemma-4-E4B-it",
        "datasetSource": {"type": "huggingface", "name": "a/b"},
        "loraR": 8,
        "loraAlpha": 16,
        "maxLength": 512,
        "loadIn4bit": False,
        "maxSteps": 100,
        "numTrainEpochs": 2.0,
        "learningRate": 2e-4,
        "batchSize": 4,
        "optim": "adamw_8bit",
        "lrSchedulerType": "cosine",
        "weightDecay": 0.01,
        "warmupSteps": 5,
        "loggingSteps": 1,
        "saveSteps": 25,
        "evalSteps": 25,
        "trainOnResponsesOnly": True,
        "datasetFormat": {"type": "chatml"},
        "datasetSplit": "train",
        "dryRun": True,
    }


def test_none_is_omitted_and_blob_dataset_carries_its_token():
    trainer = create_trainer(
        name="n",
        model="m",
        dataset=BlobDataset("https://x/d.jsonl", token="blob-secret"),
        client=ArkorClient(base_url="http://127.0.0.1:9", token="t"),
    )
    assert encode(trainer._config) == {
        "model": "m",
        "datasetSource": {"type": "blob", "url": "https://x/d.jsonl", "token": "blob-secret"},
    }
    assert "blob-secret" not in repr(trainer._config)


def test_demo_dataset_points_at_the_bundled_file():
    url = BlobDataset.demo().url
    assert url.startswith("file://")
    assert url.endswith("triage-demo.jsonl")


@pytest.mark.parametrize(
    ("dataset", "hint"),
    [
        ("org/name", "write HuggingfaceDataset('org/name') for a Hugging Face dataset name"),
        ("https://x/d.jsonl", "or BlobDataset('https://x/d.jsonl') for a URL of a JSONL file"),
        ({"name": "a/b"}, "a dict is not accepted: wrap it"),
        (42, "BlobDataset.demo() the bundled one"),
    ],
)
def test_a_bad_dataset_says_what_a_dataset_is(dataset, hint):
    with pytest.raises(ConfigError, match=re.escape(hint)):
        create_trainer(**{**BASE, "dataset": dataset})


def test_configure_changes_settings_before_start_and_checks_them():
    client = ArkorClient(base_url="http://127.0.0.1:9", token="t")
    trainer = create_trainer(**BASE, max_steps=10, logging_steps=2, client=client)
    trainer.configure(name="sweep-1", max_steps=500, learning_rate=3e-4, lora=Lora(r=4, alpha=8))
    wire = encode(trainer._config)
    assert trainer.name == "sweep-1"
    assert (wire["maxSteps"], wire["learningRate"], wire["loggingSteps"]) == (500, 3e-4, 2)
    assert (wire["loraR"], wire["loraAlpha"]) == (4, 8)
    assert wire["datasetSource"] == {"type": "huggingface", "name": "a/b"}
    with pytest.raises(ConfigError) as info:
        trainer.configure(max_steps=0)
    assert info.value.field == "max_steps"
    assert encode(trainer._config)["maxSteps"] == 500  # a refused change changes nothing
    with pytest.raises(ConfigError, match="unknown training setting 'steps'"):
        trainer.configure(steps=3)
    with pytest.raises(ConfigError) as info:
        trainer.configure(name="")
    assert info.value.field == "name"
    with pytest.raises(ConfigError, match="no settings"):
        Trainer.attach("job_1", client=client).configure(max_steps=3)
