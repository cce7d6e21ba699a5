"""``POST /v1/inference/chat`` on the local backend (fake engine)."""

from __future__ import annotations

import json

import pytest

from .conftest import FAKE_MODEL, SCOPE, create_job, read_stream

MESSAGES = [{"role": "user", "content": "hello"}]
BASE = {"messages": MESSAGES, "baseModel": FAKE_MODEL}


async def _chat(http, body):
    return await http.post("/v1/inference/chat", params=SCOPE, json=body)


def _chunks(text: str) -> list[str]:
    assert text.endswith("\n\n")
    frames = text.split("\n\n")[:-1]
    assert all(f.startswith("data: ") for f in frames)
    return [f.removeprefix("data: ") for f in frames]


async def test_non_streaming_completion_shape(http) -> None:
    response = await _chat(http, {**BASE, "stream": False, "maxTokens": 64})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int)
    assert body["model"] == FAKE_MODEL
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": f"hi from base:{FAKE_MODEL}"},
            "finish_reason": "stop",
        }
    ]
    n = len(f"hi from base:{FAKE_MODEL}")
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}


async def test_max_tokens_reached_is_finish_reason_length(http) -> None:
    response = await _chat(http, {**BASE, "stream": False, "maxTokens": 4})
    choice = response.json()["choices"][0]
    assert choice["message"]["content"] == "hi f"
    assert choice["finish_reason"] == "length"


async def test_streaming_is_the_default_and_ends_with_done(http) -> None:
    response = await _chat(http, {**BASE, "maxTokens": 5})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    chunks = _chunks(response.text)
    assert chunks[-1] == "[DONE]"
    parsed = [json.loads(c) for c in chunks[:-1]]
    assert {p["object"] for p in parsed} == {"chat.completion.chunk"}
    assert len({p["id"] for p in parsed}) == 1
    assert parsed[0]["choices"][0]["delta"] == {"role": "assistant", "content": "h"}
    text = "".join(p["choices"][0]["delta"].get("content", "") for p in parsed)
    assert text == "hi fr"
    assert [p["choices"][0]["finish_reason"] for p in parsed] == [None] * 5 + ["length"]
    assert parsed[-1]["choices"][0]["delta"] == {}


async def test_choice_is_answered_by_scoring(http) -> None:
    body = {**BASE, "structuredOutputs": {"choice": ["yes", "no"]}}
    response = await _chat(http, {**body, "stream": False})
    assert response.json()["choices"][0]["message"]["content"] == "no"
    assert response.json()["choices"][0]["finish_reason"] == "stop"
    streamed = _chunks((await _chat(http, body)).text)
    deltas = [json.loads(c)["choices"][0]["delta"] for c in streamed[:-1]]
    assert deltas == [{"role": "assistant", "content": "no"}, {}]


async def test_adapter_final_and_checkpoint(http) -> None:
    job = await create_job(http, logs=2)
    await read_stream(http, job["id"])
    final = {"kind": "final", "jobId": job["id"]}
    response = await _chat(http, {"messages": MESSAGES, "adapter": final, "stream": False})
    assert response.status_code == 200
    assert response.json()["model"] == f"adapter:{job['id']}"
    assert response.json()["choices"][0]["message"]["content"].startswith(f"hi from {job['id']}")
    ckpt = {"kind": "checkpoint", "jobId": job["id"], "step": 2}
    response = await _chat(http, {"messages": MESSAGES, "adapter": ckpt, "stream": False})
    assert response.json()["model"] == f"adapter:{job['id']}@2"
    missing = {"kind": "checkpoint", "jobId": job["id"], "step": 7}
    response = await _chat(http, {"messages": MESSAGES, "adapter": missing})
    assert response.status_code == 404
    assert response.json() == {
        "error": f"job {job['id']} has no checkpoint at step 7; saved steps: 2",
        "steps": [2],
    }


async def test_adapter_errors(http) -> None:
    running = await create_job(http, gate="hold")
    cases = [
        ({"kind": "final", "jobId": "job_nope"}, 404, "job job_nope not found"),
        ({"kind": "final", "jobId": running["id"]}, 409, "has no final adapter"),
        ({"kind": "checkpoint", "jobId": running["id"]}, 400, "adapter.step"),
        ({"kind": "lora", "jobId": running["id"]}, 400, "adapter.kind"),
        ({"kind": "final"}, 400, "adapter.jobId"),
    ]
    for adapter, status, needle in cases:
        response = await _chat(http, {"messages": MESSAGES, "adapter": adapter})
        assert response.status_code == status, adapter
        assert needle in response.json()["error"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"toolChoice": "auto"}, 'toolChoice "auto"'),
        ({"responseFormat": {"type": "json_object"}}, 'responseFormat "json_object"'),
        ({"responseFormat": {"type": "json_schema", "json_schema": {}}}, "json_schema"),
        ({"structuredOutputs": {"regex": "a+"}}, "structuredOutputs.regex"),
        ({"structuredOutputs": {"grammar": "g"}}, "structuredOutputs.grammar"),
        ({"structuredOutputs": {"json": {}}}, "structuredOutputs.json"),
    ],
)
async def test_unsupported_options_are_named(http, extra, needle) -> None:
    response = await _chat(http, {**BASE, **extra})
    assert response.status_code == 400
    assert response.json()["error"].startswith("the local backend does not support: ")
    assert needle in response.json()["error"]


async def test_supported_no_op_options_pass(http) -> None:
    body = {**BASE, "stream": False, "toolChoice": "none", "responseFormat": {"type": "text"}}
    assert (await _chat(http, {**body, "tools": []})).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": MESSAGES}, "adapter"),
        ({**BASE, "adapter": {"kind": "final", "jobId": "j"}}, "adapter"),
        ({"baseModel": FAKE_MODEL}, "messages"),
        ({**BASE, "messages": []}, "messages"),
        ({**BASE, "messages": [{"role": "robot", "content": "x"}]}, "messages[0]"),
        ({**BASE, "messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({**BASE, "baseModel": "unknown/model"}, "baseModel"),
        ({**BASE, "temperature": "hot"}, "temperature"),
        ({**BASE, "topP": 1.5}, "topP"),
        ({**BASE, "maxTokens": 0}, "maxTokens"),
        ({**BASE, "maxTokens": 2.5}, "maxTokens"),
        ({**BASE, "stream": "yes"}, "stream"),
        ({**BASE, "model": "x"}, "model"),
        ({**BASE, "structuredOutputs": {}}, "structuredOutputs"),
        ({**BASE, "structuredOutputs": {"choice": ["a"], "regex": "a"}}, "structuredOutputs"),
        ({**BASE, "structuredOutputs": {"choice": []}}, "structuredOutputs.choice"),
        ({**BASE, "temperature": 60}, "temperature"),  # rejected by the engine itself
    ],
)
async def test_bad_requests_name_the_field(http, body, field) -> None:
    response = await _chat(http, body)
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert isinstance(response.json()["error"], str)
