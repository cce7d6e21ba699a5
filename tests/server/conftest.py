"""Local backend test fixtures: a fake engine, a running backend, an httpx client."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from arkor_trio._version import USER_AGENT
from arkor_trio.server import Engine, LocalBackend, open_local_backend
from arkor_trio.server._store import Store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping
    from pathlib import Path

SCOPE = {"orgSlug": "local", "projectSlug": "default"}
FAKE_MODEL = "fake/tiny-model"


class FakeConfigRejected(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class FakeTrainingFailure(Exception):
    def __init__(self, message: str, step: int | None = None) -> None:
        super().__init__(message)
        self.step = step


class FakeInferenceRejected(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class FakeEngine:
    """A deterministic engine driven by the job config.

    Config keys: ``logs`` (number of training.log events, default 3), ``gate`` (name of a
    threading.Event to wait on after the logs, released by the test or by should_stop),
    ``fail`` (raise TrainingFailure), ``crash`` (raise RuntimeError), ``outcome`` (return
    this without a terminal event), ``script`` (name of a function in ``scripts`` called with
    ``emit`` after the logs: a test's own events, such as a long run).
    """

    def __init__(self) -> None:
        self.gates: defaultdict[str, threading.Event] = defaultdict(threading.Event)
        self.started: list[str] = []
        self.outcomes: dict[str, str] = {}
        self.weights: set[tuple[str, int | None]] = set()
        self.validate_error: Exception | None = None
        self.scripts: dict[str, Any] = {}

    def engine(self) -> Engine:
        return Engine(
            name="fake-engine",
            supported_models=(FAKE_MODEL,),
            validate_config=self.validate_config,
            run_training=self.run_training,
            load_weights=self.load_weights,
            base_model=lambda name: f"base:{name}",
            generate=self.generate,
            score_choices=lambda model, messages, choices: choices[-1],
            config_rejected=FakeConfigRejected,
            training_failure=FakeTrainingFailure,
            inference_rejected=FakeInferenceRejected,
        )

    def validate_config(self, config: Mapping[str, Any]) -> None:
        if self.validate_error is not None:
            raise self.validate_error
        if config.get("model") != FAKE_MODEL:
            raise FakeConfigRejected("model", f"unsupported model {config.get('model')!r}")

    def run_training(self, *, job_id, config, data_dir, emit, should_stop) -> str:
        self.started.append(job_id)
        outcome = self._train(job_id, config, emit, should_stop)
        self.outcomes[job_id] = outcome
        return outcome

    def _train(self, job_id, config, emit, should_stop) -> str:
        emit({"type": "training.started", "metadata": {"backend": "local", "engine": "fake"}})
        logs = int(config.get("logs", 3))
        for step in range(1, logs + 1):
            emit({"type": "training.log", "step": step, "loss": 1.0 / step})
        if "script" in config:
            self.scripts[config["script"]](emit)
        gate = config.get("gate")
        if gate is not None:
            # The engine checks should_stop between steps; the fake does the same while idle.
            while not self.gates[gate].wait(0.002):
                if should_stop():
                    return "cancelled"
        if should_stop():
            return "cancelled"
        if "fail" in config:
            raise FakeTrainingFailure(config["fail"], step=logs)
        if "crash" in config:
            raise RuntimeError(config["crash"])
        if "outcome" in config:
            return str(config["outcome"])
        self.weights.add((job_id, logs))
        emit({"type": "checkpoint.saved", "step": logs, "artifacts": [{"pathname": "ckpt"}]})
        self.weights.add((job_id, None))
        emit({"type": "training.completed", "artifacts": [{"pathname": "adapter.json"}]})
        return "completed"

    def load_weights(self, data_dir: Path, job_id: str, step: int | None) -> str:
        if (job_id, step) not in self.weights:
            raise FileNotFoundError(job_id)
        return f"{job_id}@{step}"

    def generate(self, model, messages, *, temperature=1.0, top_p=1.0, max_tokens=128, seed=None):
        if temperature > 50:
            raise FakeInferenceRejected("temperature", "temperature too hot for the fake")
        return self._pieces(f"hi from {model}", max_tokens)

    @staticmethod
    def _pieces(text: str, max_tokens: int) -> Iterator[str]:
        yield from text[:max_tokens]


@pytest.fixture
def fake() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
async def backend(fake: FakeEngine, tmp_path: Path) -> AsyncIterator[LocalBackend]:
    async with open_local_backend(tmp_path / "data", engine=fake.engine()) as b:
        yield b


def prefill(data_dir: Path, job_id: str, logs: int) -> None:
    """Write a completed job with ``logs`` log events straight into a data dir's store."""
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store.in_dir(data_dir)
    try:
        store.create_job(
            job_id=job_id, org_id="org_local", project_id="proj_default", name=job_id, config={}
        )
        events = [{"type": "training.started"}]
        events += [{"type": "training.log", "step": s, "loss": 1 / s} for s in range(1, logs + 1)]
        events.append({"type": "training.completed", "artifacts": []})
        store.append_many(job_id, events)
    finally:
        store.close()


def headers_for(backend: LocalBackend) -> dict[str, str]:
    return {"Authorization": f"Bearer {backend.token}", "X-Arkor-Client": USER_AGENT}


@pytest.fixture
async def http(backend: LocalBackend) -> AsyncIterator[httpx.AsyncClient]:
    # verify=False: plain http on loopback, and it skips loading the CA bundle (~0.1 s each).
    async with httpx.AsyncClient(
        base_url=backend.base_url, headers=headers_for(backend), verify=False
    ) as c:
        yield c


async def create_job(http: httpx.AsyncClient, name: str = "job", **config: Any) -> dict[str, Any]:
    response = await http.post(
        "/v1/jobs", params=SCOPE, json={"name": name, "config": {"model": FAKE_MODEL, **config}}
    )
    assert response.status_code == 201, response.text
    return response.json()["job"]


def parse_frames(text: str) -> list[dict[str, str]]:
    """Complete SSE frames of our server's simple shape (one line per field)."""
    frames = []
    for block in text.split("\n\n")[:-1]:
        frame = {}
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            frame[field] = value
        frames.append(frame)
    return frames


class FrameReader:
    """Reads SSE frames from a streaming httpx response, one at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self._chunks = response.aiter_text()
        self._buffer = ""
        self.chunks = 0

    async def next(self) -> dict[str, str] | None:
        while "\n\n" not in self._buffer:
            try:
                self._buffer += await self._chunks.__anext__()
                self.chunks += 1
            except StopAsyncIteration:
                return None
        block, self._buffer = self._buffer.split("\n\n", 1)
        return parse_frames(block + "\n\n")[0]

    async def until(self, event: str) -> list[dict[str, str]]:
        """Frames up to and including the first one named ``event``."""
        seen = []
        while (frame := await self.next()) is not None:
            seen.append(frame)
            if frame.get("event") == event:
                return seen
        raise AssertionError(f"stream ended before {event!r}; got {seen}")


def data_of(frame: dict[str, str]) -> dict[str, Any]:
    return json.loads(frame["data"])


async def read_stream(
    http: httpx.AsyncClient, job_id: str, last_event_id: str | None = None
) -> list[dict[str, str]]:
    """Every frame of a job's stream until the server closes it."""
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    url = f"/v1/jobs/{job_id}/events/stream"
    async with http.stream("GET", url, params=SCOPE, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        return parse_frames((await response.aread()).decode())
