"""Chat request bodies, completion parsing, and Infer bound to an adapter."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from arkor_trio._errors import ApiError, ConfigError
from arkor_trio.trainer._infer import Infer
from arkor_trio.wire._chat import build_chat_body, parse_completion
from arkor_trio.wire._client import ArkorClient
from arkor_trio.wire._codec import MalformedPayload
from arkor_trio.wire._models import Adapter, ChatCompletion

USER = [{"role": "user", "content": "hi"}]
CKPT = Adapter(kind="checkpoint", job_id="job-1", step=20)


def body(messages: Any = USER, **kw: Any) -> dict[str, Any]:
    kw.setdefault("adapter", None)
    kw.setdefault("base_model", None if kw["adapter"] else "m")
    kw.setdefault("stream", False)
    return build_chat_body(messages, **kw)


def test_body_is_camel_case_at_the_top_and_verbatim_inside():
    schema = {"name": "ticket", "schema": {"type": "object"}, "strict": True}
    tool_call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "assistant", "content": None, "tool_calls": [tool_call]},
        {"role": "tool", "content": "42", "tool_call_id": "c1"},
    ]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    out = body(
        messages,
        adapter=CKPT,
        stream=True,
        temperature=0,
        top_p=0.9,
        max_tokens=64,
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "f"}},
        response_format={"type": "json_schema", "json_schema": schema},
        structured_outputs={"choice": ["a", "b"], "disable_any_whitespace": True},
    )
    assert out == {
        "messages": messages,
        "adapter": {"kind": "checkpoint", "jobId": "job-1", "step": 20},
        "temperature": 0,
        "topP": 0.9,
        "maxTokens": 64,
        "tools": tools,
        "toolChoice": {"type": "function", "function": {"name": "f"}},
        "responseFormat": {"type": "json_schema", "json_schema": schema},
        "structuredOutputs": {"choice": ["a", "b"], "disable_any_whitespace": True},
        "stream": True,
    }


def test_none_options_are_omitted():
    out = body(
        base_model="base",
        temperature=None,
        top_p=None,
        max_tokens=None,
        tools=None,
        tool_choice=None,
        response_format=None,
        structured_outputs=None,
    )
    assert out == {"messages": USER, "baseModel": "base", "stream": False}


def test_final_adapter_has_no_step():
    out = body(adapter=Adapter(kind="final", job_id="j"))
    assert out["adapter"] == {"kind": "final", "jobId": "j"}


def test_messages_are_copied_not_shared():
    messages = [{"role": "user", "content": "x"}]
    out = body(messages)
    out["messages"][0]["content"] = "changed"
    assert messages[0]["content"] == "x"


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ("hello", "messages"),
        ({"role": "user"}, "messages"),
        ([], "messages"),
        ([{"role": "user"}, "text"], "messages[1]"),
        ([{"content": "x"}], "messages[0].role"),
        ([{"role": "user"}, {"role": "developer"}], "messages[1].role"),
        ([{"role": 1}], "messages[0].role"),
    ],
)
def test_bad_messages_name_the_field(messages, field):
    with pytest.raises(ConfigError) as info:
        body(messages)
    assert info.value.field == field
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"adapter": None, "base_model": None}, "adapter"),
        ({"adapter": CKPT, "base_model": "m"}, "adapter"),
        ({"adapter": Adapter(kind="checkpoint", job_id="j")}, "adapter.step"),
        ({"adapter": {"kind": "final", "jobId": "j"}}, "adapter"),
        ({"base_model": ""}, "base_model"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"top_p": float("nan")}, "top_p"),
        ({"top_p": float("-inf")}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 2.0}, "max_tokens"),
        ({"max_tokens": False}, "max_tokens"),
        ({"seed": 3}, "seed"),
    ],
)
def test_bad_arguments_name_the_field(kw, field):
    with pytest.raises(ConfigError) as info:
        body(**kw)
    assert info.value.field == field


def test_parse_completion_text():
    raw = {
        "id": "c",
        "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": '{"a": 1}'}}],
        "usage": {"total_tokens": 3},
    }
    completion = parse_completion(raw)
    assert completion == ChatCompletion(text='{"a": 1}', finish_reason="stop", raw=raw)
    assert completion.tool_calls == []


def test_parse_completion_tool_calls():
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    raw = {"choices": [{"finish_reason": "tool_calls", "message": {"tool_calls": [call]}}]}
    completion = parse_completion(raw)
    assert (completion.text, completion.tool_calls) == (None, [call])
    assert completion.finish_reason == "tool_calls"


@pytest.mark.parametrize(
    "raw",
    [
        [],
        {},
        {"choices": []},
        {"choices": ["x"]},
        {"choices": [{"message": "x"}]},
        {"choices": [{"message": {"content": 3}}]},
        {"choices": [{"message": {"content": "x", "tool_calls": "f"}}]},
        {"choices": [{"message": {"content": "x", "tool_calls": ["f"]}}]},
    ],
)
def test_parse_completion_rejects_other_shapes(raw):
    with pytest.raises(MalformedPayload):
        parse_completion(raw)


# --- Infer -------------------------------------------------------------------------------------


def client_answering(handler) -> ArkorClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return ArkorClient("http://arkor.test", "tok", org_slug="o", project_slug="p", http=http)


async def test_infer_posts_its_adapter_and_parses():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"choices": [{"finish_reason": "length", "message": {"content": "ok"}}]}
        )

    infer = Infer(client_answering(handler), CKPT)
    assert repr(infer) == f"Infer(adapter={CKPT!r})"
    completion = await infer(USER, max_tokens=8, response_format={"type": "json_object"})
    assert (completion.text, completion.finish_reason) == ("ok", "length")
    assert json.loads(seen[0].content) == {
        "messages": USER,
        "adapter": {"kind": "checkpoint", "jobId": "job-1", "step": 20},
        "maxTokens": 8,
        "responseFormat": {"type": "json_object"},
        "stream": False,
    }


async def test_infer_stream_yields_text_deltas():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        frames = [
            b'data: {"choices":[{"delta":{"content":"to"}}]}\n\n',
            b'data: {"choices":[{"delta":{"content":"ken"}}]}\n\n',
            b"data: [DONE]\n\n",
        ]
        return httpx.Response(200, content=b"".join(frames))

    infer = Infer(client_answering(handler), CKPT)
    async with infer.stream(USER, temperature=0.2) as deltas:
        assert [text async for text in deltas] == ["to", "ken"]
    sent = json.loads(seen[0].content)
    assert (sent["stream"], sent["temperature"], sent["adapter"]["step"]) == (True, 0.2, 20)


async def test_infer_surfaces_backend_errors():
    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": "invalid_schema"})

    with pytest.raises(ApiError, match="invalid_schema") as info:
        await Infer(client_answering(handler), CKPT)(USER)
    assert info.value.status == 400


async def test_infer_validates_before_sending():
    def handler(_: httpx.Request) -> httpx.Response:  # pragma: no cover
        raise AssertionError("no request expected")

    with pytest.raises(ConfigError) as info:
        await Infer(client_answering(handler), CKPT)([{"role": "robot", "content": "x"}])
    assert info.value.field == "messages[0].role"
