"""What the Arkor TypeScript SDK needs before its first job: credentials and anonymous sign-in.

The SDK reads ``~/.arkor/credentials.json``; without one it calls ``POST /v1/auth/anonymous``
(``{"kind": "cli"}``, no token) and stores the answer. The local backend has one identity (its
API token), so that route would hand the token to any process that can reach the port: it is
off unless ``serve --allow-anonymous``, and even then answers only a loopback client whose
request has no ``Origin`` header (a web page always sends one on a POST). The safer way is to
write the file once (``arkor-trio credentials --local``, content from :func:`sdk_credentials`).
"""

from __future__ import annotations

import ipaddress
import json
from typing import TYPE_CHECKING, Any

from ._auth import answer_json, version_refusal
from ._browser import BrowserAccess, read_small_body
from ._http import LOCAL_ORG

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

__all__ = ["ANONYMOUS_ID", "AnonymousSignIn", "sdk_credentials"]

ANONYMOUS_ID = "local"
#: Largest anonymous sign-in body read (the SDK sends ``{"kind":"cli"}``).
MAX_BODY = 1024
_OFF = (
    "anonymous sign-in is off on this local backend (it would give its token to any local "
    "process): write the TypeScript SDK's credentials with `arkor-trio credentials --local`, "
    "or restart with `arkor-trio serve --allow-anonymous`"
)


def sdk_credentials(base_url: str, token: str) -> dict[str, str]:
    """The ``~/.arkor/credentials.json`` content that points the TypeScript SDK at a backend."""
    return {
        "mode": "anon",
        "token": token,
        "anonymousId": ANONYMOUS_ID,
        "arkorCloudApiUrl": base_url,
        "orgSlug": LOCAL_ORG["slug"],
    }


def _loopback_client(scope: Scope) -> bool:
    client = scope.get("client")
    if not client:
        return False
    try:
        return ipaddress.ip_address(str(client[0])).is_loopback
    except ValueError:
        return False


class AnonymousSignIn:
    """ASGI handler of ``POST /v1/auth/anonymous`` (see the module docstring).

    Args:
        access: The backend's browser access (its token and the ``allow_anonymous`` switch).
    """

    def __init__(self, access: BrowserAccess) -> None:
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer the sign-in: 426, 405, 403, 400 or 200 with the SDK's shape."""
        headers = dict(scope["headers"])
        refusal = version_refusal(headers.get(b"x-arkor-client"), headers.get(b"user-agent"))
        if refusal is not None:
            await answer_json(send, 426, refusal)
            return
        if scope["method"] != "POST":
            await answer_json(send, 405, {"error": "method not allowed on /v1/auth/anonymous"})
            return
        if not self.access.allow_anonymous:
            await answer_json(send, 403, {"error": _OFF})
            return
        if b"origin" in headers or not _loopback_client(scope):
            await answer_json(send, 403, {"error": "anonymous sign-in answers only loopback "
                              "clients that are not web pages (no Origin header)"})  # fmt: skip
            return
        raw = await read_small_body(receive, MAX_BODY)
        if raw is None:
            await answer_json(send, 413, {"error": f"the body is larger than {MAX_BODY} bytes"})
            return
        problem, kind = _kind(raw)
        if problem is not None:
            await answer_json(send, 400, {"error": problem, "field": "kind"})
            return
        await answer_json(send, 200, {
            "token": self.access.token,
            "anonymousId": ANONYMOUS_ID,
            "kind": kind,
            "personalOrg": dict(LOCAL_ORG),
        })  # fmt: skip


def _kind(raw: bytes) -> tuple[str | None, str]:
    try:
        body: Any = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError):
        return 'the body must be a JSON object like {"kind": "cli"}', ""
    if not isinstance(body, dict):
        return 'the body must be a JSON object like {"kind": "cli"}', ""
    kind = body.get("kind", "cli")
    if kind not in ("cli", "web") or set(body) - {"kind"}:
        return 'kind must be "cli" or "web" (and the only field)', ""
    return None, str(kind)
