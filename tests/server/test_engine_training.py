"""The local training engine end to end, on tiny datasets and a tiny network (fast)."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from arkor_trio.server._data import BASE_CHARS, render
from arkor_trio.server._model import CharModel, Hyper
from arkor_trio.server._training import (
    TrainingFailure,
    checkpoint_path,
    learning_rate_at,
    run_training,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

TINY = Hyper(context=8, embed=8, memory=8, hidden=32, buckets=1024)
MODEL = "unsloth/gemma-4-E4B-it"
TOPICS = ["invoice", "login", "crash", "export", "outage"]


def chats(count: int = 40, *, reply: Callable[[int], str] | None = None) -> list[dict[str, Any]]:
    rows = []
    for i in range(count):
        topic = TOPICS[i % len(TOPICS)]
        answer = reply(i) if reply else f"{topic}: we are on it."
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"problem {i % 7} with {topic}"},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    return rows


def write(tmp_path: Path, rows: list[Any] | str, name: str = "data.jsonl") -> str:
    path = tmp_path / name
    text = rows if isinstance(rows, str) else "".join(json.dumps(r) + "\n" for r in rows)
    path.write_text(text, encoding="utf-8")
    return path.as_uri()


def train(
    tmp_path: Path,
    url: str,
    *,
    job_id: str = "job-1",
    should_stop: Callable[[], bool] = lambda: False,
    events: list[dict[str, Any]] | None = None,
    **overrides: Any,
) -> tuple[str, list[dict[str, Any]]]:
    cfg: dict[str, Any] = {
        "model": MODEL,
        "datasetSource": {"type": "blob", "url": url},
        "maxSteps": 40,
        "batchSize": 8,
        "learningRate": 1e-2,
        "loggingSteps": 2,
        "evalSteps": 10,
        "saveSteps": 20,
        **overrides,
    }
    events = [] if events is None else events
    outcome = run_training(
        job_id=job_id,
        config=cfg,
        data_dir=tmp_path / "data",
        emit=events.append,
        should_stop=should_stop,
        hyper=TINY,
    )
    return outcome, events


def logs(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "training.log"]


def test_events_in_order_with_falling_loss(tmp_path: Path) -> None:
    outcome, events = train(tmp_path, write(tmp_path, chats()))
    assert outcome == "completed"
    assert json.loads(json.dumps(events)) == events  # plain JSON types only
    kinds = [e["type"] for e in events]
    assert kinds[0] == "training.started"
    assert kinds[-1] == "training.completed"
    assert kinds.count("checkpoint.saved") == 2
    meta = events[0]["metadata"]
    assert meta["backend"] == "local"
    assert meta["stands_in_for"] == MODEL
    assert meta["engine"]
    steps = [e["step"] for e in logs(events)]
    assert steps == [1, *range(2, 41, 2)]
    for e in logs(events):
        assert not {"jobId", "timestamp"} & set(e)
        assert min(e["samplesPerSecond"], e["learningRate"], e["epoch"]) > 0
        assert ("evalLoss" in e) == (e["step"] % 10 == 0)
    losses = [e["loss"] for e in logs(events)]
    quarter = len(losses) // 4
    assert losses[0] == pytest.approx(math.log(len(BASE_CHARS)), abs=0.3)
    assert np.mean(losses[-quarter:]) < 0.5 * np.mean(losses[:quarter])
    evals = [e["evalLoss"] for e in logs(events) if "evalLoss" in e]
    assert evals[-1] < evals[0]
    # A checkpoint follows the log of its step.
    saved = [i for i, e in enumerate(events) if e["type"] == "checkpoint.saved"]
    assert [events[i]["step"] for i in saved] == [20, 40]
    assert all(events[i - 1]["step"] == events[i]["step"] for i in saved)
    completed = events[-1]
    assert completed["metrics"]["steps"] == 40
    assert completed["metrics"]["evalLoss"] == evals[-1]
    for artifact in [*events[saved[0]]["artifacts"], *completed["artifacts"]]:
        path = tmp_path / "data" / artifact["pathname"]
        assert path.stat().st_size == artifact["bytes"]
    assert completed["artifacts"][0]["pathname"] == "models/job-1/final.npz"


def test_same_config_and_seed_give_identical_losses(tmp_path: Path) -> None:
    url = write(tmp_path, chats())

    def losses(**kw: Any) -> list[tuple[float, float | None]]:
        _, events = train(tmp_path, url, maxSteps=12, **kw)
        return [(e["loss"], e.get("evalLoss")) for e in logs(events)]

    first = losses()
    assert losses() == first
    assert losses(seed=1) != first


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("constant", {1: 0.0, 3: 0.5, 5: 1.0, 20: 1.0}),
        ("linear", {1: 0.0, 5: 1.0, 12: 1 - 7 / 16, 20: 1 / 16}),
        ("cosine", {1: 0.0, 5: 1.0, 13: 0.5, 20: 0.5 * (1 + math.cos(math.pi * 15 / 16))}),
    ],
)
def test_learning_rate_schedules(schedule: str, expected: dict[int, float]) -> None:
    for step, factor in expected.items():
        lr = learning_rate_at(step, base=0.1, total=20, warmup=4, schedule=schedule)
        assert lr == pytest.approx(0.1 * factor), step


def test_logged_learning_rates_follow_the_schedule(tmp_path: Path) -> None:
    _, events = train(
        tmp_path, write(tmp_path, chats()), maxSteps=8, loggingSteps=1, warmupSteps=2,
        lrSchedulerType="linear", learningRate=0.04,
    )  # fmt: skip
    got = [e["learningRate"] for e in logs(events)]
    factors = [0, 1 / 2, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6]
    assert got == pytest.approx([0.04 * f for f in factors])
    assert learning_rate_at(1, base=0.1, total=10, warmup=0, schedule="linear") == 0.1


def test_warmup_ratio_is_a_share_of_the_total_steps(tmp_path: Path) -> None:
    # warmupSteps 0.25 of 8 steps = 2 warmup steps: the same schedule as warmupSteps=2.
    started, *_ = events = train(
        tmp_path, write(tmp_path, chats()), maxSteps=8, loggingSteps=1, warmupSteps=0.25,
        lrSchedulerType="linear", learningRate=0.04,
    )[1]  # fmt: skip
    got = [e["learningRate"] for e in logs(events)]
    factors = [0, 1 / 2, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6]
    assert got == pytest.approx([0.04 * f for f in factors])
    assert started["metadata"]["settings"]["warmupSteps"] == 0.25


def test_should_stop_cancels_within_a_step(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    url = write(tmp_path, chats())
    outcome, _ = train(
        tmp_path, url, loggingSteps=1, should_stop=lambda: len(events) >= 3, events=events
    )
    assert outcome == "cancelled"
    assert [e["type"] for e in events] == ["training.started", "training.log", "training.log"]


def test_stop_before_start_and_during_loading(tmp_path: Path) -> None:
    url = write(tmp_path, chats())
    assert train(tmp_path, url, should_stop=lambda: True) == ("cancelled", [])
    calls: list[int] = []

    def stop_after_first_poll() -> bool:
        calls.append(1)
        return len(calls) > 1

    outcome, events = train(tmp_path, url, should_stop=stop_after_first_poll)
    assert outcome == "cancelled"
    assert [e["type"] for e in events] == ["training.started"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"messages": [{"role": "user", "content": "hi"}]}\n\n{oops\n', "line 3: invalid JSON"),
        ('{"messages": []}\n', "line 1: 'messages' must be a non-empty list"),
        ('{"text": "hi"}\n', 'line 1: expected an object with a "messages" list'),
        ('{"messages": [{"role": "user", "content": "a"}]}\n[1]\n', "line 2: expected an object"),
        ('{"messages": [{"role": "bot", "content": "hi"}]}\n', "line 1: message 1 has role 'bot'"),
        ('{"messages": [{"role": "user", "content": 3}]}\n', "line 1: message 1 'content'"),
        ("\n  \n", "the dataset is empty"),
    ],
)
def test_malformed_datasets_fail_naming_the_line(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(TrainingFailure) as info:
        train(tmp_path, write(tmp_path, text))
    assert words in str(info.value)
    assert info.value.step is None


def test_missing_file_fails(tmp_path: Path) -> None:
    with pytest.raises(TrainingFailure, match="cannot read"):
        train(tmp_path, (tmp_path / "absent.jsonl").as_uri())


def test_responses_only_masks_everything_but_assistant_text(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noise = ["".join(rng.choice(list("abcdefghij"), 12)) for _ in range(40)]
    rows = [
        {"messages": [{"role": "user", "content": n}, {"role": "assistant", "content": "ok"}]}
        for n in noise
    ]
    url = write(tmp_path, rows)
    _, masked = train(tmp_path, url, trainOnResponsesOnly=True, maxSteps=30)
    _, full = train(tmp_path, url, trainOnResponsesOnly=False, maxSteps=30)
    # Assistant text ("ok" + end) is trivial; the random user text is not.
    assert logs(masked)[-1]["loss"] < 0.2
    assert logs(full)[-1]["loss"] > 1.0
    rendered = render(rows[0]["messages"])
    assert rendered.text.endswith("ok\x05")
    assert rendered.mask == (False,) * 15 + (True,) * 3


def test_responses_only_without_assistant_text_fails(tmp_path: Path) -> None:
    rows = [{"messages": [{"role": "user", "content": "hello"}]}] * 5
    with pytest.raises(TrainingFailure, match="no conversation has assistant text"):
        train(tmp_path, write(tmp_path, rows), trainOnResponsesOnly=True)


def test_epochs_dry_run_and_defaults(tmp_path: Path) -> None:
    url = write(tmp_path, chats(40))
    # 40 conversations, 4 held out: 2 epochs of 36 at batch 8 = 9 steps.
    _, events = train(tmp_path, url, maxSteps=None, numTrainEpochs=2)
    assert events[-1]["metrics"]["steps"] == 9
    assert events[-1]["metrics"]["trainConversations"] == 36
    assert logs(events)[-1]["epoch"] == pytest.approx(2.0)
    _, events = train(tmp_path, url, maxSteps=500, dryRun=True)
    assert events[-1]["metrics"]["steps"] == 10
    _, events = train(tmp_path, url, maxSteps=20, loggingSteps=None, evalSteps=None, saveSteps=None)
    assert [e["step"] for e in logs(events)] == list(range(1, 21))
    assert [e["step"] for e in logs(events) if "evalLoss" in e] == [4, 8, 12, 16, 20]
    assert [e["step"] for e in events if e["type"] == "checkpoint.saved"] == [5, 10, 15, 20]


def test_one_conversation_evaluates_on_itself(tmp_path: Path) -> None:
    outcome, events = train(tmp_path, write(tmp_path, chats(1)), maxSteps=3)
    assert outcome == "completed"
    assert events[-1]["metrics"]["evalOn"] == "train"


def test_divergence_fails_with_the_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = CharModel.loss_and_grads

    def poisoned(self: CharModel, batch: Any) -> Any:
        loss, grads = real(self, batch)
        return (float("nan") if self.params["b2"].any() else loss), grads

    monkeypatch.setattr(CharModel, "loss_and_grads", poisoned)
    with pytest.raises(TrainingFailure, match="diverged") as info:
        train(tmp_path, write(tmp_path, chats()))
    assert info.value.step == 2


def test_checkpoint_path_layout_and_guard(tmp_path: Path) -> None:
    assert checkpoint_path(tmp_path, "j1", 5) == tmp_path / "models" / "j1" / "checkpoint-5.npz"
    assert checkpoint_path(tmp_path, "j1", None) == tmp_path / "models" / "j1" / "final.npz"
    for bad_id in ("../x", "a/b", "", ".hidden", "a..b"):
        with pytest.raises(ValueError, match="job id"):
            checkpoint_path(tmp_path, bad_id, None)
    with pytest.raises(ValueError, match="step"):
        checkpoint_path(tmp_path, "j1", -1)


class _Handler(BaseHTTPRequestHandler):
    body = b""
    seen: list[str | None] = []  # noqa: RUF012  # test-only class state

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization"))
        if self.path != "/data.jsonl":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_dataset() -> Iterator[str]:
    _Handler.body = "".join(json.dumps(r) + "\n" for r in chats(12)).encode()
    _Handler.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_http_dataset_on_loopback(tmp_path: Path, http_dataset: str) -> None:
    cfg = {"type": "blob", "url": f"{http_dataset}/data.jsonl", "token": "s3cret"}
    outcome, events = train(tmp_path, "", datasetSource=cfg, maxSteps=2)
    assert outcome == "completed"
    assert events[-1]["metrics"]["trainConversations"] == 11
    assert _Handler.seen == ["Bearer s3cret"]
    with pytest.raises(TrainingFailure, match="HTTP 404") as info:
        train(tmp_path, f"{http_dataset}/missing.jsonl")
    assert "s3cret" not in str(info.value)


def test_bundled_demo_dataset_is_reproducible_and_valid() -> None:
    import importlib.util
    from pathlib import Path

    from arkor_trio import BlobDataset
    from arkor_trio.server._data import parse_jsonl, read_source

    root = Path(__file__).resolve().parents[2]
    script_path = root / "scripts" / "make_demo_dataset.py"
    spec = importlib.util.spec_from_file_location("make_demo", script_path)
    assert spec is not None
    assert spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    text = read_source(BlobDataset.demo().url, None, lambda: False)
    assert text == script.render()
    assert len(text.encode()) < 200_000
    conversations = parse_jsonl(text)
    assert conversations is not None
    assert 300 <= len(conversations) <= 400
    firsts = {c[-1]["content"].split("\n")[0] for c in conversations}
    assert firsts == {"billing", "bug", "account", "feature-request", "outage"}
