"""``POST /v1/inference/chat`` on the local backend: sampling or choice scoring, in a thread.

Exactly one of ``adapter`` (a job's final weights or a checkpoint's) and ``baseModel`` picks the
model. ``stream`` (default true, as the SDK sends) answers with OpenAI ``chat.completion.chunk``
frames ending with ``data: [DONE]``; false with one ``chat.completion`` JSON. Everything is
validated, the weights loaded and the first piece generated before the status line is sent, so
errors get a real status: 400 for a bad body, an unsupported option or a value over a limit
(named; see ``_limits``), 404 for an unknown job or missing weights, 409 for a final adapter of
a job that has not completed, 429 when ``MAX_CONCURRENT_INFERENCE`` requests are already running
(a streamed answer holds its slot until the stream ends).

The engine is character level (one token is one character, streamed a few at a time):
``usage`` counts characters, and ``finish_reason`` is ``"length"`` when the reply reached
``maxTokens`` characters, else ``"stop"``.
"""

from __future__ import annotations

import json
import secrets
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from starlette.responses import Response

from ._events import SSEStream
from ._http import (
    ApiProblem,
    fail,
    json_response,
    read_json_object,
    require_job_in_scope,
    require_project_scope,
)
from ._limits import (
    MAX_CHOICE_CHARS,
    MAX_CHOICES,
    MAX_CONCURRENT_INFERENCE,
    MAX_MESSAGES,
    MAX_PROMPT_CHARS,
    MAX_SEED,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Mapping
    from pathlib import Path

    from starlette.requests import Request
    from starlette.types import Receive, Scope, Send

    from ._engine import Engine
    from ._store import Store

__all__ = ["chat_route"]

_KEYS = frozenset(
    {
        "messages",
        "adapter",
        "baseModel",
        "temperature",
        "topP",
        "maxTokens",
        "stream",
        "tools",
        "toolChoice",
        "responseFormat",
        "structuredOutputs",
        "seed",
    }
)
_ROLES = frozenset({"system", "user", "assistant", "tool"})
_CONSTRAINTS = ("json", "regex", "choice", "grammar", "json_object")
MAX_TOKENS_LIMIT = 4096
_DONE = b"data: [DONE]\n\n"


def _number(body: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        fail(400, f"{key} must be a number, got {value!r}", field=key)
    if not lo <= value <= hi:
        fail(400, f"{key} must be between {lo} and {hi}, got {value!r}", field=key)
    return float(value)


def _messages(body: Mapping[str, Any]) -> list[dict[str, str]]:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        fail(400, "messages must be a non-empty list of {role, content}", field="messages")
    if len(raw) > MAX_MESSAGES:
        fail(400, f"messages holds {len(raw)} messages; the limit is {MAX_MESSAGES}",
             field="messages")  # fmt: skip
    out = []
    for i, msg in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            fail(400, f"{where} must be an object", field=where)
        role, content = msg.get("role"), msg.get("content")
        if role not in _ROLES:
            fail(400, f"{where}.role must be one of {sorted(_ROLES)}, got {role!r}", field=where)
        if msg.get("tool_calls"):
            fail(400, f"{where}.tool_calls: the local backend has no tool calling", field=where)
        if content is None and role == "assistant":
            content = ""
        if not isinstance(content, str):
            fail(400, f"{where}.content must be a string", field=f"{where}.content")
        out.append({"role": role, "content": content})
    total = sum(len(m["content"]) for m in out)
    if total > MAX_PROMPT_CHARS:
        fail(400, f"the messages' content is {total} characters; the limit is "
             f"{MAX_PROMPT_CHARS}", field="messages")  # fmt: skip
    return out


def _unsupported(body: Mapping[str, Any]) -> tuple[list[str], list[str] | None]:
    """Names of unsupported options present, and the ``choice`` list if one was asked for."""
    found = []
    if body.get("tools"):
        found.append("tools")
    choice = body.get("toolChoice")
    if choice is not None and choice != "none":
        found.append(f"toolChoice {json.dumps(choice)}")
    fmt = body.get("responseFormat")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        kind = fmt.get("type") if isinstance(fmt, dict) else fmt
        found.append(f"responseFormat {json.dumps(kind)}")
    so = body.get("structuredOutputs")
    if so is None:
        return found, None
    if not isinstance(so, dict):
        fail(400, "structuredOutputs must be an object", field="structuredOutputs")
    given = [k for k in _CONSTRAINTS if so.get(k) is not None]
    if len(given) != 1:
        fail(
            400,
            "structuredOutputs needs exactly one of json, regex, choice, grammar, json_object "
            f"(got {len(given)}: {', '.join(given) or 'none'})",
            field="structuredOutputs",
        )
    if given[0] != "choice":
        found.append(f"structuredOutputs.{given[0]}")
        return found, None
    choices = so["choice"]
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
        fail(400, "structuredOutputs.choice must be a non-empty list of strings",
             field="structuredOutputs.choice")  # fmt: skip
    if len(choices) > MAX_CHOICES:
        fail(400, f"structuredOutputs.choice holds {len(choices)} choices; the limit is "
             f"{MAX_CHOICES}", field="structuredOutputs.choice")  # fmt: skip
    longest = max(len(c) for c in choices)
    if longest > MAX_CHOICE_CHARS:
        fail(400, f"a structuredOutputs.choice entry is {longest} characters; the limit is "
             f"{MAX_CHOICE_CHARS}", field="structuredOutputs.choice")  # fmt: skip
    return found, choices


def _saved_steps(store: Store, job_id: str) -> list[int]:
    """The steps of a job's ``checkpoint.saved`` events (for the 404 of a missing checkpoint).

    One query for that type alone, bounded: a job saves far fewer checkpoints than it logs.
    """
    steps: set[int] = set()
    for payload in store.payloads_of_type(job_id, "checkpoint.saved", MAX_LISTED_STEPS):
        step = json.loads(payload).get("step")
        if isinstance(step, int) and not isinstance(step, bool):
            steps.add(step)
    return sorted(steps)


#: At most this many saved steps are listed in the 404 of a missing checkpoint.
MAX_LISTED_STEPS = 1000


def chat_route(
    store: Store, engine: Engine, data_dir: Path, closing: trio.Event
) -> Callable[[Request], Awaitable[Response]]:
    """The ``POST /v1/inference/chat`` endpoint (see the module docstring)."""

    async def load_model(
        request: Request, body: Mapping[str, Any], project_id: str
    ) -> tuple[Any, str]:
        adapter, base = body.get("adapter"), body.get("baseModel")
        if (adapter is None) == (base is None):
            fail(400, "send exactly one of adapter and baseModel", field="adapter")
        if base is not None:
            if base not in engine.supported_models:
                fail(400, f"unknown baseModel {base!r}; the local backend stands in for: "
                     f"{', '.join(engine.supported_models)}", field="baseModel")  # fmt: skip
            return await trio.to_thread.run_sync(engine.base_model, base), str(base)
        if not isinstance(adapter, dict):
            fail(400, "adapter must be an object {kind, jobId, step?}", field="adapter")
        kind, job_id, step = adapter.get("kind"), adapter.get("jobId"), adapter.get("step")
        if kind not in ("final", "checkpoint"):
            fail(400, f"adapter.kind must be 'final' or 'checkpoint', got {kind!r}",
                 field="adapter.kind")  # fmt: skip
        if not isinstance(job_id, str) or not job_id:
            fail(400, "adapter.jobId must be a job id", field="adapter.jobId")
        if kind == "checkpoint" and (isinstance(step, bool) or not isinstance(step, int)):
            fail(400, "adapter.step (an integer) is required for a checkpoint adapter",
                 field="adapter.step")  # fmt: skip
        status = store.job_status(job_id)
        if status is None:
            fail(404, f"job {job_id} not found")
        require_job_in_scope(request, job_id, project_id)
        if kind == "final":
            step = None
            if status != "completed":
                fail(409, f"job {job_id} has no final adapter: it is {status}")
        try:
            model = await trio.to_thread.run_sync(engine.load_weights, data_dir, job_id, step)
        except FileNotFoundError:
            if step is None:
                fail(404, f"job {job_id} has no final weights")
            steps = _saved_steps(store, job_id)
            saved = ", ".join(map(str, steps)) if steps else "none yet"
            fail(404, f"job {job_id} has no checkpoint at step {step}; saved steps: {saved}",
                 steps=steps)  # fmt: skip
        return model, f"adapter:{job_id}" + ("" if step is None else f"@{step}")

    slots = _Slots(MAX_CONCURRENT_INFERENCE)

    async def endpoint(request: Request) -> Response:
        project_id = require_project_scope(request)  # 400/404 before a 429
        if slots.free == 0:
            raise ApiProblem(429, f"too many concurrent inference requests (the limit is "
                             f"{slots.limit}); retry when one finishes",
                             limit="maxConcurrentInference")  # fmt: skip
        slots.free -= 1
        handed_off = False
        try:
            response = await answer(request, project_id)
            if isinstance(response, SSEStream):
                response, handed_off = _Releasing(response, slots.release), True
            return response
        finally:
            if not handed_off:
                slots.release()

    async def answer(request: Request, project_id: str) -> Response:
        body = await read_json_object(request)
        unknown = sorted(set(body) - _KEYS)
        if unknown:
            fail(400, f"unknown field(s) in the chat request: {', '.join(unknown)}",
                 field=unknown[0])  # fmt: skip
        messages = _messages(body)
        unsupported, choices = _unsupported(body)
        if unsupported:
            fail(400, f"the local backend does not support: {', '.join(unsupported)}",
                 unsupported=unsupported)  # fmt: skip
        temperature = _number(body, "temperature", 1.0, 0.0, 100.0)
        top_p = _number(body, "topP", 1.0, 0.0, 1.0)
        max_tokens = int(_number(body, "maxTokens", 128, 1, MAX_TOKENS_LIMIT))
        if isinstance(body.get("maxTokens"), float):
            fail(400, "maxTokens must be an integer", field="maxTokens")
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            fail(400, "seed must be an integer", field="seed")
        if seed is not None and not 0 <= seed <= MAX_SEED:
            fail(400, f"seed must be between 0 and {MAX_SEED}, got {seed}", field="seed")
        stream = body.get("stream", True)
        if not isinstance(stream, bool):
            fail(400, "stream must be a boolean", field="stream")
        model, model_name = await load_model(request, body, project_id)

        pieces: Iterator[str]
        try:
            if choices is not None:
                picked = await trio.to_thread.run_sync(
                    engine.score_choices, model, messages, choices
                )
                pieces = iter([picked])
            else:
                sample = partial(
                    engine.generate,
                    model,
                    messages,
                    temperature=temperature,
                    top_p=top_p,
                    max_tokens=max_tokens,
                    seed=seed,
                )
                pieces = await trio.to_thread.run_sync(sample)
            first = await trio.to_thread.run_sync(next, pieces, None)
        except engine.inference_rejected as exc:
            fail(400, str(exc), field=getattr(exc, "field", None))
        meta = {
            "id": f"chatcmpl-{secrets.token_hex(12)}",
            "created": int(time.time()),
            "model": model_name,
        }
        prompt_chars = sum(len(m["content"]) for m in messages)
        limit = max_tokens if choices is None else None
        if not stream:
            rest = await trio.to_thread.run_sync(list, pieces, abandon_on_cancel=True)
            parts = ([] if first is None else [first]) + rest
            return json_response(_completion(meta, "".join(parts), prompt_chars, limit))
        return SSEStream(partial(_stream, meta, first, pieces, limit), closing=closing)

    return endpoint


class _Slots:
    """How many more inference requests may run (event-loop only, so a plain counter)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.free = limit

    def release(self) -> None:
        self.free += 1


class _Releasing(Response):
    """Runs a streamed answer, then gives its inference slot back (however the stream ends)."""

    def __init__(self, inner: Response, release: Callable[[], None]) -> None:
        self.status_code = inner.status_code
        self.inner = inner
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the wrapped response; release the slot when it returns or fails."""
        try:
            await self.inner(scope, receive, send)
        finally:
            self.release()


def _finish(count: int, limit: int | None) -> str:
    return "length" if limit is not None and count >= limit else "stop"


def _completion(
    meta: dict[str, Any], text: str, prompt_chars: int, limit: int | None
) -> dict[str, Any]:
    return {
        **meta,
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": _finish(len(text), limit),
            }
        ],
        "usage": {
            "prompt_tokens": prompt_chars,
            "completion_tokens": len(text),
            "total_tokens": prompt_chars + len(text),
        },
    }


def _chunk(meta: dict[str, Any], delta: dict[str, Any], finish: str | None) -> bytes:
    body = {
        **meta,
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


async def _stream(
    meta: dict[str, Any],
    first: str | None,
    pieces: Iterator[str],
    limit: int | None,
    send: Callable[[bytes], Awaitable[None]],
) -> None:
    await send(_chunk(meta, {"role": "assistant", "content": first or ""}, None))
    count = 0 if first is None else len(first)
    if first is not None:
        while (piece := await trio.to_thread.run_sync(next, pieces, None)) is not None:
            count += len(piece)
            await send(_chunk(meta, {"content": piece}, None))
    await send(_chunk(meta, {}, _finish(count, limit)) + _DONE)
