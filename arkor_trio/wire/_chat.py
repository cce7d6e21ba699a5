"""Chat inference on the wire: the request body, and the completion and chunk parsers.

The body of ``POST /v1/inference/chat`` is camelCase at the top level (``topP``, ``maxTokens``,
``toolChoice``, ``responseFormat``, ``structuredOutputs``, ``baseModel``); values derived from the
OpenAI API (messages, tools, ``json_schema``, ``tool_calls``) are forwarded exactly as given.
Options left as None are omitted.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, TypeAlias, TypedDict, cast

import httpx

from .._errors import ApiError, ConfigError
from .._inflate import UnsafeBody, iter_body
from ..sse import SSEDecoder
from ._codec import MalformedPayload, encode
from ._http_errors import malformed, unreachable
from ._models import Adapter, ChatCompletion

if TYPE_CHECKING:
    from typing import Unpack

__all__ = [
    "CHAT_ROUTE",
    "ROLES",
    "ChatOptions",
    "Messages",
    "build_chat_body",
    "iter_chat_deltas",
    "parse_completion",
]

#: The message roles the chat route accepts.
ROLES = frozenset({"system", "user", "assistant", "tool"})

#: Chat messages: mappings with a ``role`` and that role's OpenAI fields.
Messages: TypeAlias = Sequence[Mapping[str, Any]]

CHAT_ROUTE = "POST /v1/inference/chat"


class ChatOptions(TypedDict, total=False):
    """The optional sampling and output controls of a chat request (None = backend default).

    Attributes:
        temperature: Sampling temperature (>= 0).
        top_p: Nucleus sampling mass, in [0, 1] (``topP``).
        max_tokens: Upper bound on generated tokens, >= 1 (``maxTokens``).
        tools: OpenAI-style tool definitions, forwarded verbatim.
        tool_choice: ``"auto"``, ``"none"``, ``"required"`` or ``{"type": "function", ...}``.
        response_format: ``{"type": "json_schema", "json_schema": {...}}`` and the like.
        structured_outputs: One constraint: ``json``, ``regex``, ``choice``, ``grammar``, ...
    """

    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    tools: Sequence[Mapping[str, Any]] | None
    tool_choice: str | Mapping[str, Any] | None
    response_format: Mapping[str, Any] | None
    structured_outputs: Mapping[str, Any] | None


_WIRE_NAMES = {
    "temperature": "temperature",
    "top_p": "topP",
    "max_tokens": "maxTokens",
    "tools": "tools",
    "tool_choice": "toolChoice",
    "response_format": "responseFormat",
    "structured_outputs": "structuredOutputs",
}


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise ConfigError(
            f"messages must be a list of message objects, got {type(messages).__name__}",
            field="messages",
        )
    if not messages:
        raise ConfigError("messages must not be empty", field="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ConfigError(
                f"messages[{i}] must be an object with a role, got {type(message).__name__}",
                field=f"messages[{i}]",
            )
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise ConfigError(
                f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}, got {role!r}",
                field=f"messages[{i}].role",
            )
    return [dict(m) for m in messages]


def _check_option(name: str, value: Any) -> None:
    if name in ("temperature", "top_p", "max_tokens"):
        number = not isinstance(value, bool) and isinstance(value, int | float)
        if name == "max_tokens" and not (number and isinstance(value, int) and value >= 1):
            raise ConfigError(f"max_tokens must be an int >= 1, got {value!r}", field=name)
        if not number or not math.isfinite(value) or value < 0 or (name == "top_p" and value > 1):
            bounds = "in [0, 1]" if name == "top_p" else "finite and >= 0"
            raise ConfigError(f"{name} must be a number {bounds}, got {value!r}", field=name)


def build_chat_body(
    messages: Messages,
    *,
    adapter: Adapter | None,
    base_model: str | None,
    stream: bool,
    **options: Unpack[ChatOptions],
) -> dict[str, Any]:
    """Validate chat arguments and build the JSON body of ``POST /v1/inference/chat``.

    Exactly one of ``adapter`` and ``base_model`` must be given.

    Raises:
        ConfigError: Naming the offending argument (``messages[i].role``, ``adapter``,
            ``top_p``, ...), also for an unknown option.
    """
    body: dict[str, Any] = {"messages": _check_messages(messages)}
    if (adapter is None) == (base_model is None):
        raise ConfigError("pass exactly one of adapter= and base_model=", field="adapter")
    if adapter is not None:
        if not isinstance(adapter, Adapter):
            raise ConfigError(
                f"adapter must be an Adapter, got {type(adapter).__name__}", field="adapter"
            )
        if adapter.kind == "checkpoint" and adapter.step is None:
            raise ConfigError("a checkpoint adapter needs a step", field="adapter.step")
        body["adapter"] = encode(adapter)
    if base_model is not None:
        if not isinstance(base_model, str) or not base_model:
            raise ConfigError("base_model must be a non-empty string", field="base_model")
        body["baseModel"] = base_model
    for name, value in options.items():
        if name not in _WIRE_NAMES:
            raise ConfigError(f"unknown chat option {name!r}", field=name)
        if value is not None:
            _check_option(name, value)
            body[_WIRE_NAMES[name]] = value
    body["stream"] = stream
    return body


def parse_completion(data: Any) -> ChatCompletion:
    """Parse a non-streaming OpenAI-style chat completion.

    Returns:
        ``text`` = ``choices[0].message.content``, its ``tool_calls`` (``[]`` when absent), the
        ``finish_reason`` and the whole JSON as ``raw``.

    Raises:
        MalformedPayload: The JSON does not have that shape.
    """
    if not isinstance(data, Mapping):
        raise MalformedPayload(f"expected a JSON object, got {type(data).__name__}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise MalformedPayload("expected a non-empty 'choices' list of objects")
    message = choices[0].get("message")
    if not isinstance(message, Mapping):
        raise MalformedPayload("choices[0].message: expected an object")
    text = message.get("content")
    if text is not None and not isinstance(text, str):
        raise MalformedPayload("choices[0].message.content: expected a string or null")
    tool_calls = message.get("tool_calls") or []
    if not isinstance(tool_calls, list) or not all(isinstance(c, Mapping) for c in tool_calls):
        raise MalformedPayload("choices[0].message.tool_calls: expected a list of objects")
    finish = choices[0].get("finish_reason")
    return ChatCompletion(
        text=text,
        tool_calls=list(tool_calls),
        finish_reason=finish if isinstance(finish, str) else None,
        raw=dict(data),
    )


def _chunk_delta(data: str, status: int) -> tuple[str | None, bool]:
    """One chunk frame's text delta (None if it has none) and whether it set finish_reason."""
    try:
        chunk = json.loads(data)
    except ValueError:
        raise malformed(status, CHAT_ROUTE, "a stream chunk is not JSON") from None
    except RecursionError:
        raise malformed(status, CHAT_ROUTE, "a stream chunk nests too deeply to decode") from None
    if not isinstance(chunk, Mapping):
        raise malformed(status, CHAT_ROUTE, "a stream chunk is not a JSON object")
    if "error" in chunk:  # OpenAI-compatible servers report mid-stream failures this way
        error = chunk["error"]
        text = error.get("message") if isinstance(error, Mapping) else error
        raise ApiError(status, str(text or "the chat stream reported an error"), dict(chunk))
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return None, False  # e.g. a trailing usage-only chunk
    delta = choices[0].get("delta")
    content = delta.get("content") if isinstance(delta, Mapping) else None
    finished = choices[0].get("finish_reason") is not None
    return (content if isinstance(content, str) and content else None), finished


async def iter_chat_deltas(response: httpx.Response, *, base_url: str) -> AsyncGenerator[str, None]:
    """Yield the text deltas of a streaming chat response, in order.

    Ends at ``data: [DONE]``, an ``end`` frame, or EOF after a chunk carried a finish_reason;
    ``ping`` frames and chunks without text are skipped.

    Raises:
        ApiError: Status 0 if the connection is lost; the response's status for a malformed
            chunk, an error chunk, or an EOF before the stream finished.
        FrameTooLarge: One frame exceeded 1 MiB.
    """
    decoder = SSEDecoder()
    status = response.status_code
    finished = False
    try:
        # Inflated in bounded slices (a gzip bomb is refused, see arkor_trio._inflate).
        body = cast("AsyncGenerator[bytes, None]", iter_body(response))
        async with aclosing(body) as chunks:
            async for chunk in chunks:
                for frame in decoder.feed(chunk):
                    if frame.event == "ping":
                        continue
                    if frame.event == "end" or frame.data.strip() == "[DONE]":
                        return
                    text, done = _chunk_delta(frame.data, status)
                    finished = finished or done
                    if text is not None:
                        yield text
    except httpx.RequestError as exc:
        raise unreachable(exc, base_url, CHAT_ROUTE, during=True) from exc
    except UnsafeBody as exc:
        raise malformed(status, CHAT_ROUTE, str(exc)) from None
    decoder.close()
    if not finished:
        raise malformed(status, CHAT_ROUTE, "the stream ended before [DONE]")
