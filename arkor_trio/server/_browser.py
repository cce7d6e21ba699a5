"""Browser access to the local backend: the live page, its login link and session cookie.

The API's own clients send ``Authorization: Bearer <token>`` and pass through untouched. A
browser cannot put that header on an ``EventSource``, so the page authenticates with a cookie:

- ``serve`` and ``demo`` print a one-time login link ``/login?token=<nonce>``. Opening it sets
  ``arkor_session_<port>``, ``HttpOnly; SameSite=Strict``, and redirects to the page. The nonce
  works once; ``/login`` also takes the API token (from a form), which works every time.
  (Served over https, the cookie is ``__Host-arkor_session_<port>`` and ``Secure``.)
- The cookie holds a random session id made at that login and kept server-side
  (:mod:`._sessions`): it expires, is bound to the ``Host`` and ``User-Agent`` of the login,
  ends when the API token changes, and ``arkor-trio sessions revoke`` ends all of them.
- A request carrying the cookie is accepted only when it is addressed to this server
  (``Host`` is 127.0.0.1, localhost or [::1] with this server's port) and comes from this
  server's own page (``Origin``, when present, is exactly ``http://<Host>``; ``Sec-Fetch-Site``,
  when present, is ``same-origin``). A state-changing request (not GET/HEAD) must also carry
  that ``Origin``. Then it is handed on with the bearer token and our ``X-Arkor-Client`` (and
  an event stream's ``lastEventId`` query parameter as ``Last-Event-ID``: the page reopens its
  ``EventSource`` itself and resumes after the last event it drew).
- Without a bearer token, a request from another site (``Origin`` of another origin, or
  ``Sec-Fetch-Site`` ``cross-site``/``same-site``) or addressed to another host name (a
  DNS-rebinding page) gets 403; a bad cookie, or a browser request (one with ``Sec-Fetch-Site``)
  without one, gets 401. No CORS headers are ever sent, so other
  origins cannot read any answer either.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import secrets
import sqlite3
import urllib.parse
from typing import TYPE_CHECKING

import trio

from .._version import USER_AGENT
from ._auth import answer_json
from ._page import PAGE_HEADERS, page_file
from ._sessions import SESSION_MAX_AGE, SessionStore

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BrowserAccess", "BrowserGate", "read_small_body"]

#: Largest login form body read.
MAX_FORM = 4096
_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
_SAFE_METHODS = frozenset({"GET", "HEAD"})
_SAME_SITE_VALUES = frozenset({b"same-origin", b"none"})
_SIGN_IN = "the browser is not signed in here: open the login link `arkor-trio serve` printed"


class BrowserAccess:
    """The login nonce and the browser sessions of one running backend.

    Args:
        token: The backend's API token.
        allow_anonymous: Whether ``POST /v1/auth/anonymous`` hands the token to loopback
            clients (``serve --allow-anonymous``).
        sessions: Where sessions are kept (None: in this process's memory only).
    """

    def __init__(
        self, token: str, *, allow_anonymous: bool = False, sessions: SessionStore | None = None
    ) -> None:
        self.token = token
        self.allow_anonymous = allow_anonymous
        self.sessions = SessionStore(":memory:", token) if sessions is None else sessions
        self._nonce: str | None = secrets.token_urlsafe(24)
        self.login_path = f"/login?token={self._nonce}"

    def session_valid(self, value: str, headers: dict[bytes, bytes]) -> bool:
        """Whether a cookie value is a live session for this request's Host and browser."""
        return self.sessions.valid(
            value, headers.get(b"host", b""), headers.get(b"user-agent", b"")
        )

    def redeem(self, given: str) -> bool:
        """Whether ``given`` logs in: the unused one-time nonce (then used up) or the API token."""
        nonce = self._nonce
        if nonce is not None and hmac.compare_digest(given.encode(), nonce.encode()):
            self._nonce = None
            return True
        return hmac.compare_digest(given.encode(), self.token.encode())

    def cookie_name(self, port: int, *, secure: bool = False) -> str:
        """The session cookie's name (per port: cookies ignore ports, two backends must not).

        Over https it takes the ``__Host-`` prefix (``Secure``, this host only, ``Path=/``).
        """
        return f"{'__Host-' if secure else ''}arkor_session_{port}"

    def set_cookie(self, port: int, value: str, *, secure: bool = False) -> bytes:
        """The ``Set-Cookie`` header value of a new session."""
        return (
            f"{self.cookie_name(port, secure=secure)}={value}; Path=/; HttpOnly; "
            f"SameSite=Strict; Max-Age={SESSION_MAX_AGE}{'; Secure' if secure else ''}"
        ).encode()


def _host_name(host: str) -> tuple[str, str]:
    """``Host`` header -> (name, port text); IPv6 names keep their brackets."""
    if host.startswith("["):
        name, _, rest = host.partition("]")
        return name + "]", rest.removeprefix(":")
    name, _, port = host.partition(":")
    return name.lower(), port


def _is_loopback_name(name: str, bound: str) -> bool:
    if name in _LOOPBACK_NAMES or (bound not in ("", "0.0.0.0", "::") and name == bound):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def _cookies(raw: bytes) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in raw.decode("latin-1").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            found.setdefault(name, value)
    return found


async def read_small_body(receive: Receive, limit: int) -> bytes | None:
    """The request body from raw ASGI, or None when it is larger than ``limit`` bytes."""
    parts, size = [], 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


class BrowserGate:
    """ASGI middleware in front of the token gate: the page, ``/login`` and cookie sessions.

    Args:
        app: The gated API (``GateMiddleware`` and the routes).
        access: The backend's :class:`BrowserAccess`.
        anonymous: The ``POST /v1/auth/anonymous`` handler (an ASGI app), answered here
            because it must run before the token gate.
    """

    def __init__(self, app: ASGIApp, access: BrowserAccess, anonymous: ASGIApp) -> None:
        self.app = app
        self.access = access
        self.anonymous = anonymous

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route browser requests; hand API requests on (with the token for a valid session)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        path: str = scope["path"]
        if b"authorization" in headers and path.startswith("/v1/"):
            await self.app(scope, receive, send)  # a bearer client: none of our business
            return
        bound_host, port = (scope.get("server") or ("", 0))[:2]
        host = headers.get(b"host", b"").decode("latin-1")
        name, host_port = _host_name(host)
        if not _is_loopback_name(name, bound_host):
            await _refuse(send, 403, f"this server answers only for 127.0.0.1 or localhost, "
                          f"not {name[:100]!r}")  # fmt: skip
            return
        origin = headers.get(b"origin")
        same_origin = host_port == str(port) and origin in (None, f"http://{host}".encode())
        site = headers.get(b"sec-fetch-site")
        if (origin is not None and not same_origin) or (
            site is not None and site not in _SAME_SITE_VALUES and not _navigation(scope, headers)
        ):
            await _refuse(send, 403, "cross-origin request refused")
            return
        if path == "/v1/auth/anonymous":
            await self.anonymous(scope, receive, send)
            return
        if not path.startswith("/v1/"):
            await self._page(scope, receive, send, port)
            return
        secure = scope.get("scheme") == "https"
        cookie = _cookies(headers.get(b"cookie", b"")).get(
            self.access.cookie_name(port, secure=secure)
        )
        if cookie is None and site is not None:  # a browser (it sends Sec-Fetch-*) not signed in
            await _refuse(send, 401, _SIGN_IN)
            return
        if cookie is not None:
            if not same_origin or not self.access.session_valid(cookie, headers):
                await _refuse(send, 401, _SIGN_IN)
                return
            if scope["method"] not in _SAFE_METHODS and origin is None:
                await _refuse(send, 403, "a state-changing request needs a same-origin Origin")
                return
            extra = [(b"authorization", f"Bearer {self.access.token}".encode())]
            if b"x-arkor-client" not in headers:
                extra.append((b"x-arkor-client", USER_AGENT.encode()))
            resume = _resume_from(scope) if b"last-event-id" not in headers else None
            if resume is not None:
                extra.append((b"last-event-id", resume))
            scope = {**scope, "headers": [*scope["headers"], *extra]}
        await self.app(scope, receive, send)

    async def _page(self, scope: Scope, receive: Receive, send: Send, port: int) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/login":
            await self._login(scope, receive, send, port)
            return
        found = page_file(path)
        if found is None:
            await _refuse(send, 404, f"no page {path[:100]}")
            return
        if method not in _SAFE_METHODS:
            await _refuse(send, 405, f"method {method} not allowed on {path[:100]}")
            return
        body, content_type = found
        await _send(send, 200, content_type, b"" if method == "HEAD" else body)

    async def _login(self, scope: Scope, receive: Receive, send: Send, port: int) -> None:
        method = scope["method"]
        given = ""
        if method == "GET":
            query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = query.get("token", [""])[0]
        elif method == "POST":
            if dict(scope["headers"]).get(b"origin") is None:
                await _refuse(send, 403, "a state-changing request needs a same-origin Origin")
                return
            raw = await read_small_body(receive, MAX_FORM)
            if raw is None:
                await _refuse(send, 413, f"the login form is larger than {MAX_FORM} bytes")
                return
            form = urllib.parse.parse_qs(raw.decode("latin-1"))
            given = form.get("token", [""])[0].strip()
        else:
            await _refuse(send, 405, f"method {method} not allowed on /login")
            return
        headers = dict(scope["headers"])
        secure = scope.get("scheme") == "https"
        if given and self.access.redeem(given):
            try:  # a write: off the event loop (it may wait for the database's lock)
                session = await trio.to_thread.run_sync(
                    self.access.sessions.create,
                    headers.get(b"host", b""),
                    headers.get(b"user-agent", b""),
                )
            except sqlite3.Error as exc:
                await _refuse(send, 503, f"the local backend cannot write the session: {exc}")
                return
            await _send(send, 303, "text/plain; charset=utf-8", b"signed in\n", [
                (b"location", b"/"),
                (b"set-cookie", self.access.set_cookie(port, session, secure=secure)),
            ])  # fmt: skip
            return
        cookie = _cookies(headers.get(b"cookie", b"")).get(
            self.access.cookie_name(port, secure=secure)
        )
        if method == "GET" and cookie is not None and self.access.session_valid(cookie, headers):
            await _send(send, 303, "text/plain; charset=utf-8", b"", [(b"location", b"/")])
            return
        note = "This login link was already used or is not valid." if given else ""
        await _send(send, 403 if given else 200, "text/html; charset=utf-8", _login_html(note))


def _resume_from(scope: Scope) -> bytes | None:
    """An event stream's ``lastEventId`` query parameter, for a page that reopens its stream.

    (A new ``EventSource`` cannot set ``Last-Event-ID``; the stream route reads the header.)
    """
    if not scope["path"].endswith("/events/stream"):
        return None
    query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
    found = query.get("lastEventId", [""])[0]
    return found.encode("latin-1")[:40] if found else None


def _navigation(scope: Scope, headers: dict[bytes, bytes]) -> bool:
    """A top-level GET of the page itself (harmless from anywhere: it carries no data)."""
    return (
        scope["method"] == "GET"
        and scope["path"] == "/"
        and headers.get(b"sec-fetch-mode") == b"navigate"
    )


def _login_html(note: str) -> bytes:
    message = f'<p class="login-note">{html.escape(note)}</p>' if note else ""
    return (page_file("/login.html") or (b"", ""))[0].replace(b"<!--note-->", message.encode())


async def _send(
    send: Send,
    status: int,
    content_type: str,
    body: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        *PAGE_HEADERS,
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _refuse(send: Send, status: int, message: str) -> None:
    await answer_json(send, status, {"error": message})
