"""A deployment's URL: ``POST /d/<slug>/v1/chat/completions``, OpenAI's chat completions.

What the cloud serves at ``https://<slug>.arkor.app/v1/chat/completions``, served by the local
backend under a path (an OpenAI client's ``base_url`` is ``http://127.0.0.1:<port>/d/<slug>/v1``).
The deployment's own keys authenticate (``Authorization: Bearer <key>`` or ``x-api-key``) when
its ``authMode`` is ``fixed_api_key``; with ``none`` the URL is open to whoever reaches the port.
No ``X-Arkor-Client`` is needed: OpenAI clients do not send one.

The request is OpenAI's (``model`` is ignored: the deployment pins its target; ``stream``
defaults to false, as OpenAI's does). It is turned into the backend's own
``POST /v1/inference/chat`` request (``top_p`` -> ``topP``, ``max_tokens`` -> ``maxTokens``, the
target -> ``adapter``/``baseModel``) and handed to that route, so one set of checks, limits and
the concurrency bound apply to both; the answer (``chat.completion`` JSON or chunk frames ending
with ``data: [DONE]``) is OpenAI's shape already. Errors take OpenAI's shape too,
``{"error": {"message", "type", "param", "code"}}`` (``param`` is the backend's ``field``), so
OpenAI clients show the message.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import TYPE_CHECKING, Any

import trio

from .._version import USER_AGENT
from ._auth import answer_json
from ._browser import read_small_body
from ._deployments import DEPLOY_PATH_PREFIX
from ._http import LOCAL_ORG, MAX_BODY
from ._limits import LimitError, check_json_value

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from ._deploy_store import DeploymentStore

__all__ = ["DeploymentServer"]

_SUFFIX = "/v1/chat/completions"
#: OpenAI fields and the backend's names for them.
_RENAMED = {
    "messages": "messages",
    "temperature": "temperature",
    "top_p": "topP",
    "max_tokens": "maxTokens",
    "max_completion_tokens": "maxTokens",
    "seed": "seed",
    "stream": "stream",
    "tools": "tools",
    "tool_choice": "toolChoice",
    "response_format": "responseFormat",
}
#: OpenAI fields accepted and not used (``n`` must be 1).
_IGNORED = frozenset({"model", "user", "stream_options", "n"})
_CHAT_PATH = "/v1/inference/chat"


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
#: Largest error body re-shaped (the backend's errors are a few hundred bytes).
_MAX_ERROR_BODY = 64 * 1024


def openai_error(status: int, body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's error shape for the backend's ``{"error": message, "field"?, ...}``."""
    message = body.get("error")
    return {
        "error": {
            "message": message if isinstance(message, str) else f"HTTP {status}",
            "type": _ERROR_TYPES.get(status, "server_error" if status >= 500 else "api_error"),
            "param": body.get("field"),
            "code": body.get("limit"),
        }
    }


class _Refused(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.body = status, openai_error(status, {"error": message, **extra})


def openai_to_chat(body: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """The backend's chat request for an OpenAI request to a deployment of ``target``."""
    unknown = sorted(set(body) - set(_RENAMED) - _IGNORED)
    if unknown:
        raise _Refused(
            400,
            "unsupported field(s) for this deployment: " + ", ".join(u[:80] for u in unknown[:10]),
            field=unknown[0][:80],
        )
    if "max_tokens" in body and "max_completion_tokens" in body:
        raise _Refused(
            400, "send one of max_tokens and max_completion_tokens", field="max_completion_tokens"
        )
    n = body.get("n", 1)
    if n != 1 or isinstance(n, bool):
        raise _Refused(400, "n must be 1 (one choice per request)", field="n")
    chat = {_RENAMED[k]: v for k, v in body.items() if k in _RENAMED and v is not None}
    chat.setdefault("stream", False)
    if target["kind"] == "base_model":
        chat["baseModel"] = target["baseModel"]
    else:
        chat["adapter"] = target["adapter"]
    return chat


class DeploymentServer:
    """ASGI handler of ``/d/<slug>/v1/chat/completions`` (see the module docstring).

    Args:
        deployments: The deployments and keys.
        api: The token-gated API app (it answers the translated ``/v1/inference/chat``).
        token: The backend's API token (the translated request carries it).
    """

    def __init__(self, deployments: DeploymentStore, api: ASGIApp, token: str) -> None:
        self.deployments = deployments
        self.api = api
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate, translate, and hand the request to the chat route."""
        try:
            forwarded = await self._forward(scope, receive)
        except _Refused as exc:
            challenge = exc.status == 401
            await answer_json(send, exc.status, exc.body, challenge=challenge)
            return
        inner_scope, body = forwarded
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # the client's disconnect, for a streamed answer

        await self.api(inner_scope, replay, _OpenAIErrors(send))

    async def _forward(self, scope: Scope, receive: Receive) -> tuple[Scope, bytes]:
        path: str = scope["path"]
        slug = path[len(DEPLOY_PATH_PREFIX) :].partition("/")[0]
        if path != f"{DEPLOY_PATH_PREFIX}{slug}{_SUFFIX}":
            raise _Refused(
                404,
                f"no route {scope['method']} {path[:200]}: a deployment "
                f"answers POST {DEPLOY_PATH_PREFIX}<slug>{_SUFFIX}",
            )
        found = await trio.to_thread.run_sync(self.deployments.by_slug, slug)
        if found is None:
            raise _Refused(404, f"no deployment {slug[:60]!r}")
        if scope["method"] != "POST":
            raise _Refused(405, f"method {scope['method']} not allowed on {path[:200]}")
        if not found["enabled"]:
            raise _Refused(403, f"deployment {slug!r} is disabled")
        if found["authMode"] == "fixed_api_key":
            given = _given_key(dict(scope["headers"]))
            if given is None:
                raise _Refused(
                    401,
                    "this deployment needs an API key: send "
                    "'Authorization: Bearer <key>' or 'x-api-key: <key>'",
                )
            ok = await trio.to_thread.run_sync(self.deployments.use_key, found["id"], given)
            if not ok:
                raise _Refused(401, "invalid or revoked API key for this deployment")
        raw = await read_small_body(receive, MAX_BODY)
        if raw is None:
            raise _Refused(413, f"the request body is larger than {MAX_BODY} bytes")
        chat = openai_to_chat(_json_object(raw), found["target"])
        project_slug = await trio.to_thread.run_sync(
            self.deployments.project_slug, found["projectId"]
        )
        if project_slug is None:
            raise _Refused(404, f"the project of deployment {slug!r} no longer exists")
        data = json.dumps(chat, separators=(",", ":")).encode()
        query = urllib.parse.urlencode({"orgSlug": LOCAL_ORG["slug"], "projectSlug": project_slug})
        headers = [
            (b"host", dict(scope["headers"]).get(b"host", b"127.0.0.1")),
            (b"authorization", f"Bearer {self.token}".encode()),
            (b"x-arkor-client", USER_AGENT.encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
        ]
        inner = {
            **scope,
            "path": _CHAT_PATH,
            "raw_path": _CHAT_PATH.encode(),
            "query_string": query.encode(),
            "headers": headers,
        }
        return inner, data


class _OpenAIErrors:
    """A ``send`` that re-shapes a JSON error answer (status >= 400) as :func:`openai_error`."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.start: Message | None = None
        self.parts: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] >= 400:
            self.start = message
            return
        if self.start is None or message["type"] != "http.response.body":
            await self.send(message)
            return
        self.parts.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        raw, status = b"".join(self.parts), int(self.start["status"])
        try:
            parsed = json.loads(raw) if len(raw) <= _MAX_ERROR_BODY else None
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            raw = json.dumps(openai_error(status, parsed), separators=(",", ":")).encode()
        headers = [
            (k, v) for k, v in self.start.get("headers", []) if k.lower() != b"content-length"
        ]
        headers.append((b"content-length", str(len(raw)).encode()))
        await self.send({**self.start, "headers": headers})
        await self.send({"type": "http.response.body", "body": raw, "more_body": False})


def _given_key(headers: dict[bytes, bytes]) -> str | None:
    scheme, _, value = headers.get(b"authorization", b"").partition(b" ")
    raw = value.strip() if scheme.lower() == b"bearer" else headers.get(b"x-api-key", b"").strip()
    if not raw or len(raw) > 256:
        return None if not raw else "\x00"  # an over-long key is simply wrong
    return raw.decode("latin-1")


def _json_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise _Refused(400, "the request body must be a JSON object, got an empty body")
    try:
        body = json.loads(raw)
    except RecursionError:
        raise _Refused(400, "the request body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Refused(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _Refused(400, "the request body must be a JSON object")
    try:
        check_json_value(body)
    except LimitError as exc:
        raise _Refused(400, exc.message, field=exc.field) from None
    return body
