"""Opening one connection of a channel: request headers, redirects, statuses, TLS failures.

:func:`open_connection` sends one request, a ``GET`` or (``method``/``content``) e.g. a ``POST``
with a body, following redirects itself, bounded, so that a loop is reported with its chain (a 303,
and a 301/302 answering a ``POST``, continue as a ``GET`` without the body, as browsers and httpx
do; 307/308 repeat the method and body), and classifies the answer:

* a 2xx ``text/event-stream`` response: returned, to be read;
* 204: the server says the stream is over (the WHATWG rule): :data:`FINISHED`;
* a 2xx of any other Content-Type: :class:`~arkor_trio.StreamError` (permanent: retrying would
  read the same page again);
* a permanent status (``is_permanent(status)``): :class:`~arkor_trio.ApiError` with the body's
  ``error`` text, raised;
* a TLS certificate failure: :class:`~arkor_trio.StreamError` naming the certificate problem,
  raised (a certificate does not fix itself between retries);
* anything else (connect error, 5xx, 408, 429, other 4xx): a :class:`Failure` to back off from,
  with the ``Retry-After`` of a 429/503.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeAlias, cast
from urllib.parse import urljoin, urlsplit

import attrs
import httpx
import trio

from .._errors import ApiError, StreamError, body_message
from .._inflate import ACCEPT_ENCODING, UnsafeBody, iter_body
from ._reconnect import parse_retry_after

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from ._reconnect import ReconnectPolicy

__all__ = [
    "FINISHED",
    "MAX_REDIRECTS",
    "Failure",
    "Headers",
    "certificate_problem",
    "close_response",
    "open_connection",
    "resolve_headers",
    "status_error",
]

#: Headers for a channel: a mapping, or a callable (sync or async) called for every connection.
Headers: TypeAlias = (
    Mapping[str, str]
    | Callable[[], Mapping[str, str]]
    | Callable[[], Awaitable[Mapping[str, str]]]
    | None
)

#: Redirects followed for one connection before giving up.
MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_ERROR_BODY = 64 * 1024
#: A header whose name holds one of these is not sent to another origin after a redirect:
#: ``Authorization``, ``Cookie``, ``Proxy-Authorization``, ``X-Api-Key``, ``X-Auth-Token``, ...
_CREDENTIAL_WORDS = (
    "auth",
    "cookie",
    "credential",
    "key",
    "password",
    "secret",
    "session",
    "token",
)


class _Finished:
    def __repr__(self) -> str:
        return "FINISHED"


#: The server ended the stream for good (204 No Content).
FINISHED: Final = _Finished()


@attrs.frozen
class Failure:
    """A connection attempt that failed and may be retried after a backoff."""

    error: BaseException
    retry_after: float | None = None


async def resolve_headers(headers: Headers) -> dict[str, str]:
    """The headers for one connection: the mapping, or what the callable returns now."""
    if headers is None:
        return {}
    if callable(headers):
        value = headers()
        if inspect.isawaitable(value):
            value = await value
        headers = value
    if not isinstance(headers, Mapping):
        raise TypeError(f"headers must be a mapping (or return one), got {type(headers).__name__}")
    return dict(headers)


def certificate_problem(exc: BaseException) -> str | None:
    """The TLS certificate failure somewhere in ``exc``'s cause chain, described; else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            message: str = current.verify_message or str(current)
            return message
        if isinstance(current, ssl.SSLError) and "CERTIFICATE" in str(current).upper():
            return str(current.reason or current)
        current = current.__cause__ or current.__context__
    return None


async def close_response(response: httpx.Response) -> None:
    """Close a response even while being cancelled (it only releases the socket)."""
    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
        await response.aclose()


async def _read_body(response: httpx.Response, timeout: float) -> str:
    """Up to 64 KiB of an error body, within ``timeout``; what arrived if reading fails."""
    chunks: list[bytes] = []
    size = 0
    body = cast("AsyncGenerator[bytes, None]", iter_body(response, max_bytes=_MAX_ERROR_BODY))
    with trio.move_on_after(timeout):
        try:
            async for chunk in body:
                chunks.append(chunk)
                size += len(chunk)
                if size >= _MAX_ERROR_BODY:
                    break
        except (httpx.HTTPError, UnsafeBody):
            pass  # the status alone still makes the error
        finally:
            with trio.CancelScope(shield=True):
                await body.aclose()
    return b"".join(chunks)[:_MAX_ERROR_BODY].decode("utf-8", "replace")


def status_error(status: int, text: str, route: str) -> ApiError:
    """An :class:`ApiError` for a non-2xx answer: the body's JSON ``error``, else its text."""
    body: Any = text or None
    with contextlib.suppress(ValueError, RecursionError):
        body = json.loads(text)
    error = body.get("error") if isinstance(body, Mapping) else None
    message = body_message(error if isinstance(error, str) and error.strip() else text)
    return ApiError(status, f"{message or 'HTTP error'} from {route}", body)


def _next_url(response: httpx.Response, chain: list[str]) -> str:
    location = response.headers.get("location")
    route = " -> ".join(chain)
    if not location:
        raise StreamError(f"{route} answered {response.status_code} without a Location header")
    target = str(urljoin(chain[-1], location))
    if urlsplit(target).scheme not in ("http", "https"):
        raise StreamError(f"{route} redirects to {target!r}, which is not an http(s) URL")
    if target in chain:
        raise StreamError(f"redirect loop: {route} -> {target}")
    if len(chain) > MAX_REDIRECTS:
        raise StreamError(f"more than {MAX_REDIRECTS} redirects: {route} -> {target}")
    return target


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def _authenticates(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _CREDENTIAL_WORDS)


def _cross_origin_request(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    headers: Mapping[str, str],
    content: bytes | None,
    timeout: httpx.Timeout,
) -> httpx.Request:
    """A hop to another origin, built without anything that may authenticate.

    ``http.build_request`` would merge the client's default headers and its cookies back in,
    and ``send`` would apply its ``auth=`` (the caller sends this with ``auth=None``): the
    request is built bare, from the client's default headers and the connection's, less every
    header that may authenticate (:data:`_CREDENTIAL_WORDS`), with no cookie. A 307/308 hop
    carries the method and body on (``content``); a body is never a credential.
    """
    merged = httpx.Headers(http.headers)
    merged.update(headers)
    send = [(k, v) for k, v in merged.multi_items() if not _authenticates(k)]
    return httpx.Request(
        method, url, headers=send, content=content, extensions={"timeout": timeout.as_dict()}
    )


async def open_connection(
    http: httpx.AsyncClient,
    url: str,
    *,
    params: Mapping[str, str] | None,
    headers: dict[str, str],
    policy: ReconnectPolicy,
    is_permanent: Callable[[int], bool],
    on_response: Callable[[httpx.Response], None] | None = None,
    make_error: Callable[[int, str, str], Exception] = status_error,
    method: str = "GET",
    content: bytes | None = None,
) -> httpx.Response | Failure | _Finished:
    """Open one connection; see the module docstring for what each answer becomes.

    ``make_error(status, body_text, route)`` builds the exception for a non-2xx answer.
    ``method`` and ``content`` make the request (default ``GET`` without a body).

    Raises:
        ApiError: A permanent status.
        StreamError: A non-SSE 2xx, a redirect loop or too many redirects, a TLS certificate
            failure.
    """
    timeout = httpx.Timeout(policy.connect_timeout, read=None)
    chain = [url]
    # Only the codings the reader inflates (bounded: see arkor_trio._inflate).
    headers = {k: v for k, v in headers.items() if k.lower() != "accept-encoding"}
    headers["Accept-Encoding"] = ACCEPT_ENCODING
    request = http.build_request(
        method, url, params=params, headers=headers, content=content, timeout=timeout
    )
    crossed = False
    while True:
        response: httpx.Response | None = None
        try:
            with trio.move_on_after(policy.connect_timeout):
                auth = None if crossed else httpx.USE_CLIENT_DEFAULT
                response = await http.send(request, stream=True, follow_redirects=False, auth=auth)
        except httpx.TransportError as exc:
            problem = certificate_problem(exc)
            if problem is not None:
                host = request.url.host
                raise StreamError(
                    f"TLS certificate verification failed for {host}: {problem} (not retried: "
                    "fix the certificate, or pass an httpx client configured to trust it)"
                ) from exc
            return Failure(exc)
        if response is None:
            return Failure(StreamError(f"no response within {policy.connect_timeout} s"))
        if on_response is not None:
            on_response(response)
        status = response.status_code
        if status in _REDIRECTS and response.headers.get("location") is not None:
            await close_response(response)
            target = _next_url(response, chain)
            chain.append(target)
            if status == 303 or (status in (301, 302) and method == "POST"):
                method, content = "GET", None  # and so on every later hop
                headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
            crossed = crossed or _origin(target) != _origin(url)  # once left, not resent
            if crossed:
                request = _cross_origin_request(http, method, target, headers, content, timeout)
            else:
                request = http.build_request(
                    method, target, headers=headers, content=content, timeout=timeout
                )
            continue
        return await _classify(response, request, policy, is_permanent, make_error)


async def _classify(
    response: httpx.Response,
    request: httpx.Request,
    policy: ReconnectPolicy,
    is_permanent: Callable[[int], bool],
    make_error: Callable[[int, str, str], Exception],
) -> httpx.Response | Failure | _Finished:
    status = response.status_code
    route = f"{request.method} {request.url.path}"
    if status == 204:
        await close_response(response)
        return FINISHED
    if 200 <= status < 300:
        content_type = response.headers.get("content-type", "text/event-stream")
        if content_type.lower().startswith("text/event-stream"):
            return response
        await close_response(response)
        raise StreamError(
            f"{route} answered {status} with Content-Type {content_type!r}, not "
            "text/event-stream: is this URL an event stream?"
        )
    try:
        text = await _read_body(response, policy.connect_timeout)
        error = make_error(status, text, route)
        if is_permanent(status):
            raise error
        retry_after = None
        if status in (429, 503):
            retry_after = parse_retry_after(response.headers.get("retry-after"))
        return Failure(error, retry_after)
    finally:
        await close_response(response)
