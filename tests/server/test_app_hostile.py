"""Hostile values against the real backend: each is a 400 naming the field, never a 500."""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from arkor_trio.server import open_local_backend
from arkor_trio.server._limits import MAX_JSON_DEPTH, MAX_NAME_CHARS

from ._probes import DripServer
from .conftest import SCOPE, FrameReader, headers_for

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

MODEL = "unsloth/gemma-4-E4B-it"


@pytest.fixture
async def real(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        open_local_backend(tmp_path / "data") as backend,
        httpx.AsyncClient(
            base_url=backend.base_url, headers=headers_for(backend), verify=False
        ) as http,
    ):
        yield http


def job(url: str, **config: Any) -> dict[str, Any]:
    return {
        "name": "hostile",
        "config": {"model": MODEL, "datasetSource": {"type": "blob", "url": url}, **config},
    }


async def post_raw(http: httpx.AsyncClient, path: str, raw: bytes) -> httpx.Response:
    return await http.post(
        path, params=SCOPE, content=raw, headers={"content-type": "application/json"}
    )


def assert_400(response: httpx.Response, field: str | None, words: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body.get("field") == field, body
    assert words in body["error"], body


async def test_json_nested_100000_deep_is_a_400(real: httpx.AsyncClient) -> None:
    raw = b'{"name":"x","config":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = await post_raw(real, "/v1/jobs", raw)
    assert_400(response, None, "nested deeper than")


async def test_json_nested_past_the_depth_limit_names_the_field(real: httpx.AsyncClient) -> None:
    deep: Any = "x"
    for _ in range(MAX_JSON_DEPTH):
        deep = [deep]
    response = await real.post("/v1/jobs", params=SCOPE, json={"name": "x", "config": deep})
    assert_400(response, "config" + "[0]" * (MAX_JSON_DEPTH - 1), "nested deeper than")


async def test_lone_surrogate_in_a_name_is_a_400(real: httpx.AsyncClient) -> None:
    raw = b'{"name":"bad \\ud800 name","config":{"model":"%s"}}' % MODEL.encode()
    assert_400(await post_raw(real, "/v1/jobs", raw), "name", "lone surrogate")
    chat = b'{"messages":[{"role":"user","content":"\\udfff"}],"baseModel":"%s"}' % MODEL.encode()
    assert_400(
        await post_raw(real, "/v1/inference/chat", chat), "messages[0].content", "lone surrogate"
    )


async def test_huge_name_is_a_400_and_the_limit_is_accepted(
    real: httpx.AsyncClient, tmp_path
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"messages":[{"role":"user","content":"hi"}]}\n')
    body = job(data.as_uri(), dryRun=True, maxSteps=1)
    body["name"] = "n" * 3_900_000
    assert_400(await real.post("/v1/jobs", params=SCOPE, json=body), "name", str(MAX_NAME_CHARS))
    body["name"] = "n" * MAX_NAME_CHARS
    assert (await real.post("/v1/jobs", params=SCOPE, json=body)).status_code == 201


@pytest.mark.parametrize("seed", [-1, 2**63, 10**30])
async def test_chat_seed_out_of_range_is_a_400(real: httpx.AsyncClient, seed: int) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "baseModel": MODEL, "seed": seed}
    response = await real.post("/v1/inference/chat", params=SCOPE, json=body)
    assert_400(response, "seed", "seed must be between 0 and")


@pytest.mark.parametrize(
    ("key", "value"),
    [("numTrainEpochs", 1e308), ("maxSteps", 10**12), ("learningRate", 1e300), ("seed", -1)],
)
async def test_numbers_out_of_range_are_a_400(
    real: httpx.AsyncClient, tmp_path: Path, key: str, value: Any
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("{}\n")
    response = await real.post("/v1/jobs", params=SCOPE, json=job(data.as_uri(), **{key: value}))
    assert_400(response, f"config.{key}", "at most")


async def test_nul_in_a_file_path_is_a_400(real: httpx.AsyncClient) -> None:
    response = await real.post("/v1/jobs", params=SCOPE, json=job("file:///tmp/a%00b.jsonl"))
    assert_400(response, "config.datasetSource.url", "NUL")


async def test_devices_fifos_and_directories_are_a_400(real: httpx.AsyncClient, tmp_path) -> None:
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    for url, words in [
        ("file:///dev/zero", "character device"),
        (fifo.as_uri(), "FIFO"),
        (tmp_path.as_uri(), "directory"),
    ]:
        response = await real.post("/v1/jobs", params=SCOPE, json=job(url))
        assert_400(response, "config.datasetSource.url", words)


async def test_cancel_during_a_1_byte_per_second_dataset_ends_the_job_within_a_second(
    real: httpx.AsyncClient,
) -> None:
    drip = DripServer(interval=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(drip.run)
        created = await real.post("/v1/jobs", params=SCOPE, json=job(drip.url))
        assert created.status_code == 201, created.text
        job_id = created.json()["job"]["id"]
        url = f"/v1/jobs/{job_id}/events/stream"
        with trio.fail_after(10):
            async with real.stream("GET", url, params=SCOPE) as response:
                frames = FrameReader(response)
                await frames.until("training.started")
                await drip.sending.wait()
                cancelled_at = time.monotonic()
                assert (
                    await real.post(f"/v1/jobs/{job_id}/cancel", params=SCOPE)
                ).status_code == 200
                seen = await frames.until("training.cancelled")
                latency = time.monotonic() - cancelled_at
            await drip.closed.wait()
        nursery.cancel_scope.cancel()
    assert [f["event"] for f in seen][-1] == "training.cancelled"
    assert latency < 1.0
    assert json.loads(seen[-1]["data"])["jobId"] == job_id
