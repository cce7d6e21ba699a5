"""Inference with the local engine: weights from a run, sampling, choice scoring, rejections."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from arkor_trio.server._generate import (
    PIECE_CHARS,
    InferenceRejected,
    base_model,
    generate,
    load_weights,
    score_choices,
)
from arkor_trio.server._model import Hyper
from arkor_trio.server._training import SUPPORTED_MODELS, run_training

if TYPE_CHECKING:
    from pathlib import Path

    from arkor_trio.server._model import CharModel

TINY = Hyper(context=8, embed=8, memory=8, hidden=48, buckets=1024)
ASK = [{"role": "user", "content": "pick a fruit #7"}]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A job whose every answer is "pineapple", trained for 150 steps (about a second)."""
    data_dir = tmp_path_factory.mktemp("engine")
    questions = ["what fruit today?", "pick a fruit", "fruit please", "which fruit?", "hungry"]
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"{questions[i % 5]} #{i}"},
                {"role": "assistant", "content": "pineapple"},
            ]
        }
        for i in range(30)
    ]
    path = data_dir / "fruit.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {
        "model": SUPPORTED_MODELS[0],
        "datasetSource": {"type": "blob", "url": path.as_uri()},
        "maxSteps": 150,
        "batchSize": 8,
        "learningRate": 1e-2,
        "saveSteps": 50,
    }
    events: list[dict[str, Any]] = []
    outcome = run_training(
        job_id="fruit",
        config=config,
        data_dir=data_dir,
        emit=events.append,
        should_stop=lambda: False,
        hyper=TINY,
    )
    assert outcome == "completed"
    return data_dir


def test_trained_model_prefers_its_answer(trained: Path) -> None:
    model = load_weights(trained, "fruit", None)
    assert score_choices(model, ASK, ["tomato", "pineapple", "pear"]) == "pineapple"
    assert score_choices(model, ASK, ["pineapple", "tomato"]) == "pineapple"
    assert "".join(generate(model, ASK, temperature=0.0)) == "pineapple"


def test_checkpoints_load_and_generate_pieces(trained: Path) -> None:
    model = load_weights(trained, "fruit", 50)
    pieces = list(generate(model, ASK, max_tokens=30, seed=1, temperature=1.5))
    assert pieces
    assert all(0 < len(p) <= PIECE_CHARS for p in pieces)
    assert len("".join(pieces)) <= 30
    assert load_weights(trained, "fruit", 50) is model  # cached
    with pytest.raises(FileNotFoundError):
        load_weights(trained, "fruit", 7)
    with pytest.raises(FileNotFoundError):
        load_weights(trained, "other-job", None)
    with pytest.raises(FileNotFoundError):
        load_weights(trained, "../fruit", None)


def test_sampling_is_reproducible_with_a_seed() -> None:
    model = base_model(SUPPORTED_MODELS[0])
    first = "".join(generate(model, ASK, seed=42, max_tokens=64))
    assert first == "".join(generate(model, ASK, seed=42, max_tokens=64))
    assert first != "".join(generate(model, ASK, seed=43, max_tokens=64))
    assert len("".join(generate(model, ASK, seed=1, max_tokens=5))) <= 5
    greedy = "".join(generate(model, ASK, temperature=0, max_tokens=20))
    assert greedy == "".join(generate(model, ASK, temperature=0, max_tokens=20, seed=9))
    narrow = "".join(generate(model, ASK, top_p=0.0, seed=3, max_tokens=20))
    assert narrow == greedy


def test_base_model_is_deterministic_per_name() -> None:
    a, b = base_model(SUPPORTED_MODELS[0]), base_model(SUPPORTED_MODELS[-1])
    again = base_model.__wrapped__(SUPPORTED_MODELS[0])
    np.testing.assert_array_equal(a.params["W1"], again.params["W1"])
    assert not np.array_equal(a.params["W1"], b.params["W1"])
    with pytest.raises(InferenceRejected) as info:
        base_model("gpt-2")
    assert info.value.field == "baseModel"
    assert SUPPORTED_MODELS[0] in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 1.5}, "topP"),
        ({"max_tokens": 0}, "maxTokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "messages"),
        ({"messages": "hello"}, "messages"),
    ],
)
def test_bad_requests_are_rejected_before_iterating(kwargs: dict[str, Any], field: str) -> None:
    model: CharModel = base_model(SUPPORTED_MODELS[0])
    messages = kwargs.pop("messages", ASK)
    with pytest.raises(InferenceRejected) as info:
        generate(model, messages, **kwargs)
    assert info.value.field == field


def test_score_choices_rejects_bad_choices() -> None:
    model = base_model(SUPPORTED_MODELS[0])
    for choices in ([], ["a", 1]):
        with pytest.raises(InferenceRejected) as info:
            score_choices(model, ASK, choices)  # type: ignore[arg-type]
        assert info.value.field == "structuredOutputs.choice"


def test_content_parts_and_unknown_characters_are_accepted() -> None:
    model = base_model(SUPPORTED_MODELS[0])
    messages = [{"role": "user", "content": [{"type": "text", "text": "héllo ☃"}]}]
    assert isinstance("".join(generate(model, messages, seed=0, max_tokens=8)), str)
    assert score_choices(model, messages, ["☃", "x"]) in ("☃", "x")
