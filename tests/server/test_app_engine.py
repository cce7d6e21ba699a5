"""The local backend with its real NumPy engine: one tiny run, then chat on what it saved."""

from __future__ import annotations

import json

import httpx

from arkor_trio import BlobDataset
from arkor_trio.server import open_local_backend

from .conftest import SCOPE, data_of, headers_for, read_stream

MODEL = "unsloth/gemma-4-E4B-it"
MESSAGES = [{"role": "user", "content": "my invoice is wrong"}]


async def test_tiny_real_run_then_chat_on_final_and_checkpoint(tmp_path) -> None:
    config = {
        "model": MODEL,
        "datasetSource": {"type": "blob", "url": BlobDataset.demo().url},
        "maxSteps": 2,
        "saveSteps": 1,
        "evalSteps": 2,
        "dryRun": True,
    }
    async with (
        open_local_backend(tmp_path) as backend,
        httpx.AsyncClient(
            base_url=backend.base_url, headers=headers_for(backend), verify=False
        ) as http,
    ):
        created = await http.post("/v1/jobs", params=SCOPE, json={"name": "tiny", "config": config})
        assert created.status_code == 201, created.text
        job_id = created.json()["job"]["id"]
        frames = await read_stream(http, job_id)
        kinds = [f["event"] for f in frames]
        assert kinds[0] == "training.started"
        assert kinds[-2:] == ["training.completed", "end"]
        metadata = data_of(frames[0])["metadata"]
        assert (metadata["backend"], metadata["stands_in_for"]) == ("local", MODEL)
        logs = [data_of(f) for f in frames if f["event"] == "training.log"]
        assert logs[-1]["step"] == 2
        assert all(isinstance(log["loss"], float) for log in logs)
        steps = [data_of(f)["step"] for f in frames if f["event"] == "checkpoint.saved"]
        assert steps[:1] == [1]
        job = (await http.get(f"/v1/jobs/{job_id}", params=SCOPE)).json()["job"]
        assert job["status"] == "completed"
        assert job["artifacts"]

        final = await http.post(
            "/v1/inference/chat",
            params=SCOPE,
            json={
                "messages": MESSAGES,
                "adapter": {"kind": "final", "jobId": job_id},
                "stream": False,
                "maxTokens": 12,
                "seed": 7,
            },
        )
        assert final.status_code == 200, final.text
        reply = final.json()["choices"][0]
        assert isinstance(reply["message"]["content"], str)
        assert len(reply["message"]["content"]) <= 12
        assert reply["finish_reason"] in ("stop", "length")

        streamed = await http.post(
            "/v1/inference/chat",
            params=SCOPE,
            json={
                "messages": MESSAGES,
                "adapter": {"kind": "checkpoint", "jobId": job_id, "step": 1},
                "maxTokens": 12,
            },
        )
        frames = streamed.text.split("\n\n")[:-1]
        assert frames[-1] == "data: [DONE]"
        last = json.loads(frames[-2].removeprefix("data: "))
        assert last["choices"][0]["finish_reason"] in ("stop", "length")

        hub = await http.post(
            "/v1/jobs",
            params=SCOPE,
            json={"name": "hf", "config": {**config, "datasetSource": {"type": "huggingface",
                                                                       "name": "a/b"}}},
        )  # fmt: skip
        assert hub.status_code == 400
        assert hub.json()["field"] == "config.datasetSource"
