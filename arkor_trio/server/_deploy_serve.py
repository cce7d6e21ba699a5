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
with ``data: [DONE]``) is OpenAI's shape already.
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


class _Refused(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.body = status, {"error": message, **extra}


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

        await self.api(inner_scope, replay, send)

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
