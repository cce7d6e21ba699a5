"""HTTP answers -> arkor-trio errors: the one translation table for every route.

* non-2xx -> :class:`ApiError`; its message is the body's JSON ``error`` if a non-empty string,
  else the raw text (one line, cut to 500 characters; an HTML page summarised by its title),
  else ``"HTTP <status>"``; 404 on a job route ->
  :class:`JobNotFound`; 426 -> :class:`UpgradeRequired` with the upgrade command, whatever the body;
* no HTTP answer (any ``httpx.RequestError``: connect error, reset, transport timeout) ->
  ``ApiError`` with ``status == 0``, as a browser reports a network failure;
* a 2xx body that is not what the route promises -> ``ApiError(status, "malformed response from
  <route>: ...")``.

It also reads the deprecation headers (``Deprecation: true``, ``Warning: 299 - "<text>"``,
``Sunset``) into one log line.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import httpx

from .._errors import ApiError, JobNotFound, UpgradeRequired, body_message
from .._inflate import UnsafeBody, iter_body
from .._version import PROTOCOL_VERSION, USER_AGENT, __version__
from ..stream import certificate_problem

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

__all__ = [
    "deprecation_notice",
    "error_from",
    "malformed",
    "read_error_body",
    "unreachable",
    "upgrade_message",
]

MAX_ERROR_BODY = 64 * 1024
_WARNING_RE = re.compile(r'^\s*\d{3}\s+-\s+"(.*)"')
_UPGRADE = "Upgrade with: pip install -U arkor-trio"


def upgrade_message(body: Any) -> str:
    """The actionable text of a 426, using the gate's JSON fields when the body has them."""
    fields = body if isinstance(body, Mapping) else {}
    level = fields.get("currentVersion")
    supported = fields.get("supportedRange")
    reason = fields.get("reason")
    message = (
        f"arkor-trio {__version__} speaks Arkor protocol "
        f"{level if isinstance(level, str) and level else PROTOCOL_VERSION}, "
        "which the backend no longer accepts"
    )
    if isinstance(supported, str) and supported:
        message += f" (supported: {supported})"
    if reason in ("missing", "malformed"):
        message += f"; it found the X-Arkor-Client header {reason} (sent: {USER_AGENT!r})"
    return f"{message}. {_UPGRADE}"


def error_from(status: int, body_text: str, *, job_route: bool) -> ApiError:
    """Translate a non-2xx status and its body text into the matching :class:`ApiError`.

    Args:
        status: The HTTP status.
        body_text: The decoded body ("" when there was none).
        job_route: The route addresses one job, so a 404 means :class:`JobNotFound`.

    Returns:
        ``UpgradeRequired`` for 426, ``JobNotFound`` for 404 on a job route, else ``ApiError``;
        ``.body`` is the decoded JSON, else the text, else None.
    """
    body: Any = body_text or None
    with contextlib.suppress(ValueError):
        body = json.loads(body_text)
    if status == 426:
        return UpgradeRequired(status, upgrade_message(body), body)
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, str) and error.strip():
        message = body_message(error)
    elif body_text.strip():
        message = body_message(body_text)
    else:
        message = f"HTTP {status}"
    cls = JobNotFound if status == 404 and job_route else ApiError
    return cls(status, message, body)


def malformed(status: int, route: str, detail: str) -> ApiError:
    """The error for a 2xx answer whose body does not have the route's shape."""
    return ApiError(status, f"malformed response from {route}: {detail}")


def unreachable(exc: Exception, base_url: str, route: str, *, during: bool = False) -> ApiError:
    """The status-0 error for a request that got no (complete) HTTP answer."""
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    problem = certificate_problem(exc)
    if problem is not None:  # deep in the cause chain; httpx says only "ConnectError"
        detail = f"TLS certificate verification failed: {problem}"
    what = f"connection to {base_url} lost during" if during else f"cannot reach {base_url} for"
    return ApiError(0, f"{what} {route}: {detail}")


def deprecation_notice(headers: httpx.Headers) -> str | None:
    """The log line for a response marked ``Deprecation: true``, else None."""
    if headers.get("Deprecation") != "true":
        return None
    warning = headers.get("Warning")
    match = _WARNING_RE.match(warning) if warning else None
    text = match.group(1) if match else warning or "this client version is deprecated"
    sunset = headers.get("Sunset")
    cutoff = f"; cutoff: {sunset}" if sunset else ""
    return (
        f"deprecation notice from the backend: {text} (this is arkor-trio {__version__}, "
        f"Arkor protocol {PROTOCOL_VERSION}){cutoff}. {_UPGRADE}"
    )


async def read_error_body(response: httpx.Response) -> bytes:
    """Up to ~64 KiB of a streamed error body; what arrived if reading fails (never a hang)."""
    chunks: list[bytes] = []
    body = cast("AsyncGenerator[bytes, None]", iter_body(response, max_bytes=MAX_ERROR_BODY))
    try:
        async for chunk in body:
            chunks.append(chunk)
            if sum(map(len, chunks)) >= MAX_ERROR_BODY:
                break
    except (httpx.HTTPError, UnsafeBody):
        pass  # the status alone still makes the error
    finally:
        await body.aclose()
    return b"".join(chunks)
