"""The local backend's gate: the ``X-Arkor-Client`` version check, then the bearer token.

Order: the version gate (426) answers before authentication (401), as the cloud does for its
unauthenticated bootstrap calls: a client too old (or not an Arkor SDK at all) learns that it
must upgrade, which a token error would hide. Both run before routing, so unknown paths are
gated too.

The token is generated at first start (``secrets.token_urlsafe``), kept in ``<data_dir>/token``
with mode 0600, reused on later starts, and compared in constant time.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "SUPPORTED_RANGE",
    "GateMiddleware",
    "answer_json",
    "credential_problem",
    "load_or_create_token",
    "upgrade_hint",
    "version_refusal",
]

TOKEN_FILE = "token"
#: Versions of the Arkor protocol (first ``X-Arkor-Client`` token) this backend accepts.
SUPPORTED_RANGE = ">=0.0.1 <1.0.0"
UPGRADE_HINT = "pip install --upgrade arkor-trio"
#: What the 426 tells the Arkor TypeScript SDK (``X-Arkor-Client: arkor/<v>`` and no arkor-trio).
TS_UPGRADE_HINT = "npm install -g arkor@latest"
#: What it tells a client that names neither (a missing or malformed header).
ANY_UPGRADE_HINT = f"use an Arkor SDK: {UPGRADE_HINT} (Python) or {TS_UPGRADE_HINT} (TypeScript)"
_CLIENT = re.compile(r"arkor/(\d+)\.(\d+)\.(\d+)(-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")


def load_or_create_token(data_dir: Path) -> str:
    """The backend's API token: read from ``<data_dir>/token``, or created there (mode 0600).

    Raises:
        OSError: The file cannot be read or created.
    """
    path = data_dir / TOKEN_FILE
    try:
        token = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        token = ""
    if token:
        return token
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(token + "\n")
    path.chmod(0o600)
    return token


def _client_problem(header: str | None) -> tuple[str | None, str | None] | None:
    """None when the header is acceptable, else ``(reason, current_version)``."""
    if header is None or not header.strip():
        return "missing", None
    match = _CLIENT.fullmatch(header.split()[0])
    if match is None:
        return "malformed", None
    if not _in_supported_range(tuple(int(g) for g in match.group(1, 2, 3)), match.group(4)):
        return None, header.split()[0].removeprefix("arkor/")
    return None


def _in_supported_range(core: tuple[int, ...], prerelease: str | None) -> bool:
    """Whether a version is in ``SUPPORTED_RANGE`` (>=0.0.1 <1.0.0) by semver precedence.

    A pre-release sorts before its release: ``0.0.1-rc.1`` is below 0.0.1 (refused) and
    ``1.0.0-rc.1`` below 1.0.0 (accepted). Build metadata (``+...``) does not count.
    """
    low, high = (0, 0, 1), (1, 0, 0)
    above_low = core > low or (core == low and prerelease is None)
    below_high = core < high or (core == high and prerelease is not None)
    return above_low and below_high


def upgrade_hint(raw_client: bytes | None, user_agent: bytes | None = None) -> str:
    """The upgrade command that fits the client that asked (``X-Arkor-Client``, User-Agent).

    arkor-trio names itself in both (``arkor/<v> arkor-trio/<v>``); the TypeScript SDK sends
    ``arkor/<v>`` alone; anything else gets both commands.
    """
    client, agent = (raw_client or b"").lower(), (user_agent or b"").lower()
    if b"arkor-trio" in client or b"arkor-trio" in agent:
        return UPGRADE_HINT
    if client.startswith(b"arkor/"):
        return TS_UPGRADE_HINT
    return ANY_UPGRADE_HINT


def version_refusal(
    raw_client: bytes | None, user_agent: bytes | None = None
) -> dict[str, object] | None:
    """The 426 body for an ``X-Arkor-Client`` header outside the supported range, else None."""
    problem = _client_problem(None if raw_client is None else raw_client.decode("latin-1"))
    if problem is None:
        return None
    reason, current = problem
    body: dict[str, object] = {
        "error": "sdk_version_unsupported",
        "currentVersion": current,
        "supportedRange": SUPPORTED_RANGE,
        "upgrade": upgrade_hint(raw_client, user_agent),
    }
    if reason is not None:
        body["reason"] = reason
    return body


class GateMiddleware:
    """ASGI middleware answering 426 (bad ``X-Arkor-Client``) and 401 (bad token) early.

    Args:
        app: The application behind the gate.
        token: The expected bearer token.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Gate HTTP requests; pass everything else (lifespan) through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        refusal = version_refusal(headers.get(b"x-arkor-client"), headers.get(b"user-agent"))
        if refusal is not None:
            await answer_json(send, 426, refusal)
            return
        auth = headers.get(b"authorization", b"")
        scheme, _, given = auth.partition(b" ")
        if scheme.lower() != b"bearer" or not given.strip():
            await answer_json(send, 401, {"error": _missing_token_message()}, challenge=True)
            return
        if not hmac.compare_digest(given.strip(), self._token):
            await answer_json(send, 401, {"error": "invalid bearer token"}, challenge=True)
            return
        await self.app(scope, receive, send)


def _missing_token_message() -> str:
    return (
        "missing bearer token: send 'Authorization: Bearer <token>' with the token the local "
        "backend printed at start (also in <data_dir>/token)"
    )


async def answer_json(
    send: Send, status: int, body: dict[str, object], *, challenge: bool = False
) -> None:
    """Send a whole JSON response from ASGI middleware (``challenge``: a Bearer challenge)."""
    data = json.dumps(body, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
    ]
    if challenge:
        headers.append((b"www-authenticate", b'Bearer realm="arkor-local"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def credential_problem(headers: dict[bytes, bytes], token: str) -> tuple[int, str] | None:
    """``(status, message)`` when a request fails the gate (426, then 401), else None.

    For routes the middleware does not gate (WebSocket), which answer with a close code.
    """
    raw_client = headers.get(b"x-arkor-client")
    problem = _client_problem(None if raw_client is None else raw_client.decode("latin-1"))
    if problem is not None:
        hint = upgrade_hint(raw_client, headers.get(b"user-agent"))
        return 426, f"sdk_version_unsupported (supported {SUPPORTED_RANGE}): {hint}"
    scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
    if scheme.lower() != b"bearer" or not given.strip():
        return 401, "missing bearer token"
    if not hmac.compare_digest(given.strip(), token.encode()):
        return 401, "invalid bearer token"
    return None
