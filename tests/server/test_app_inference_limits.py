"""Chat inference is bounded: prompt, choices, maxTokens, concurrency; memory per request."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import pytest
import trio

from arkor_trio.server import open_local_backend
from arkor_trio.server._limits import (
    MAX_CHOICE_CHARS,
    MAX_CHOICES,
    MAX_CONCURRENT_INFERENCE,
    MAX_MESSAGES,
    MAX_PROMPT_CHARS,
)

from ._probes import PeakRSS
from .conftest import FAKE_MODEL, SCOPE, headers_for

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from .conftest import FakeEngine

MODEL = "unsloth/gemma-4-E4B-it"


def chat(model: str = FAKE_MODEL, content: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "baseModel": model, **extra}


@pytest.mark.parametrize(
    ("body", "field", "limit"),
    [
        (chat(content="x" * (MAX_PROMPT_CHARS + 1)), "messages", MAX_PROMPT_CHARS),
        (
            {**chat(), "messages": [{"role": "user", "content": ""}] * (MAX_MESSAGES + 1)},
            "messages",
            MAX_MESSAGES,
        ),
        (
            chat(structuredOutputs={"choice": ["a"] * (MAX_CHOICES + 1)}),
            "structuredOutputs.choice",
            MAX_CHOICES,
        ),
        (
            chat(structuredOutputs={"choice": ["a", "b" * (MAX_CHOICE_CHARS + 1)]}),
            "structuredOutputs.choice",
            MAX_CHOICE_CHARS,
        ),
        (chat(maxTokens=4097), "maxTokens", 4096),
    ],
)
async def test_over_a_limit_is_a_400_naming_field_and_limit(
    http: httpx.AsyncClient, body: dict[str, Any], field: str, limit: int
) -> None:
    response = await http.post("/v1/inference/chat", params=SCOPE, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert str(limit) in response.json()["error"]


async def test_at_the_limits_is_accepted(http: httpx.AsyncClient) -> None:
    body = chat(
        content="x" * MAX_PROMPT_CHARS,
        structuredOutputs={"choice": ["c" * MAX_CHOICE_CHARS] * MAX_CHOICES},
        stream=False,
    )
    response = await http.post("/v1/inference/chat", params=SCOPE, json=body)
    assert response.status_code == 200, response.text


async def test_one_request_over_the_concurrency_limit_is_a_429(
    tmp_path: Path, fake: FakeEngine
) -> None:
    gate = threading.Event()
    entered = trio.Semaphore(0)
    token = trio.lowlevel.current_trio_token()

    def held(model: Any, messages: Any, **kwargs: Any) -> Iterator[str]:
        token.run_sync_soon(entered.release)
        gate.wait(10)
        yield "done"

    engine = attrs.evolve(fake.engine(), generate=held)
    async with (
        open_local_backend(tmp_path / "data", engine=engine) as backend,
        httpx.AsyncClient(
            base_url=backend.base_url, headers=headers_for(backend), verify=False
        ) as http,
        trio.open_nursery() as nursery,
    ):
        answers: list[int] = []
        answered = trio.Semaphore(0)

        async def ask() -> None:
            body = chat(stream=False)
            answers.append(
                (await http.post("/v1/inference/chat", params=SCOPE, json=body)).status_code
            )
            answered.release()

        for _ in range(MAX_CONCURRENT_INFERENCE):
            nursery.start_soon(ask)
        with trio.fail_after(10):
            for _ in range(MAX_CONCURRENT_INFERENCE):
                await entered.acquire()  # every slot is busy generating
        over = await http.post("/v1/inference/chat", params=SCOPE, json=chat())
        assert over.status_code == 429
        assert f"limit is {MAX_CONCURRENT_INFERENCE}" in over.json()["error"]
        gate.set()
        with trio.fail_after(10):
            for _ in range(MAX_CONCURRENT_INFERENCE):
                await answered.acquire()
        # Every slot came back, streamed answers included (they release when the stream ends).
        for _ in range(MAX_CONCURRENT_INFERENCE + 2):
            async with http.stream("POST", "/v1/inference/chat", params=SCOPE, json=chat()) as r:
                assert r.status_code == 200
                await r.aread()
    assert answers == [200] * MAX_CONCURRENT_INFERENCE


async def test_largest_requests_stay_within_100_mb(tmp_path: Path) -> None:
    rss = PeakRSS()
    async with (
        open_local_backend(tmp_path / "data") as backend,
        httpx.AsyncClient(
            base_url=backend.base_url, headers=headers_for(backend), verify=False, timeout=60
        ) as http,
    ):
        warm = await http.post("/v1/inference/chat", params=SCOPE, json=chat(MODEL, stream=False))
        assert warm.status_code == 200
        rss.reset()
        if not rss.available:
            pytest.skip("cannot measure peak memory here (/proc/self/clear_refs)")
        prompt = "how do I reset my password? " * (MAX_PROMPT_CHARS // 28)
        choices = [f"{i} " + "answer " * (MAX_CHOICE_CHARS // 7 - 1) for i in range(MAX_CHOICES)]
        picked = await http.post(
            "/v1/inference/chat",
            params=SCOPE,
            json=chat(MODEL, prompt, structuredOutputs={"choice": choices}, stream=False),
        )
        assert picked.status_code == 200, picked.text
        assert picked.json()["choices"][0]["message"]["content"] in choices
        generated = await http.post(
            "/v1/inference/chat",
            params=SCOPE,
            json=chat(MODEL, prompt, maxTokens=64, stream=False, seed=1),
        )
        assert generated.status_code == 200, generated.text
        growth = rss.growth()
    assert growth < 100 * 1024 * 1024, f"peak RSS grew by {growth / 2**20:.0f} MiB"
