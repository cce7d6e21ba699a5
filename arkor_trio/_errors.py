"""The exception hierarchy of arkor-trio.

Every exception the library raises on purpose derives from :class:`ArkorError`::

    ArkorError
    ├── ConfigError            bad input to our API, missing credentials or scope
    ├── ApiError               the backend answered with a non-2xx status (.status, .message, .body)
    │   ├── JobNotFound        404 for a job (after the not-found grace period on streams)
    │   └── UpgradeRequired    426: this client's protocol level is no longer accepted
    └── StreamError            the event stream could not be followed
        ├── ReconnectsExhausted  max_attempts retries failed in a row (__cause__: the last error)
        └── FrameTooLarge        one SSE frame exceeded max_frame_bytes

Foreign exceptions (httpx, cattrs, json) are translated at the module that talks to them, with
``raise ... from exc``. Messages name the field, route or status and, where there is one, the fix.
The API token never appears in a message or a repr.
"""

from __future__ import annotations

import html
import re
from typing import Any

__all__ = [
    "MAX_MESSAGE",
    "ApiError",
    "ArkorError",
    "ConfigError",
    "FrameTooLarge",
    "JobNotFound",
    "ReconnectsExhausted",
    "StreamError",
    "UpgradeRequired",
    "body_message",
]

#: An error message quoting a response body is cut to this many characters.
MAX_MESSAGE = 500
#: An HTML page (a proxy's or framework's 404) is summarised in at most this many characters.
_MAX_HTML_SUMMARY = 160
_HTML_START = re.compile(
    r"\A\s*(<!doctype html|<html|<head|<body|<\?xml|<[a-z]+[\s>])", re.IGNORECASE
)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_HEADING = re.compile(r"<h1[^>]*>(.*?)</h1\s*>", re.IGNORECASE | re.DOTALL)
_SKIPPED = re.compile(r"<(script|style|head)[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")


def body_message(text: str, limit: int = MAX_MESSAGE) -> str:
    """The part of a non-JSON error body an error message quotes: one line, at most ``limit``.

    An HTML page (a reverse proxy's or a web framework's error page) is summarised as its
    ``<title>`` (else its first heading, else its text without tags) and its size, instead of
    hundreds of characters of markup.
    """
    if _HTML_START.match(text):
        found = _TITLE.search(text) or _HEADING.search(text)
        inner = found.group(1) if found else _SKIPPED.sub(" ", text)
        summary = " ".join(html.unescape(_TAG.sub(" ", inner)).split())
        if len(summary) > _MAX_HTML_SUMMARY:
            summary = summary[: _MAX_HTML_SUMMARY - 1] + "…"
        size = len(text.encode("utf-8", "replace"))
        page = f"an HTML page of {size} bytes"
        return f"{summary} ({page})" if summary else page
    message = " ".join(text.split())
    if len(message) > limit:
        message = message[: limit - 1] + "…"
    return message


class ArkorError(Exception):
    """Root of every error arkor-trio raises on purpose."""


class ConfigError(ArkorError, ValueError):
    """Bad input to the library's API, or missing credentials / scope.

    Attributes:
        field: The name of the offending argument or setting, when there is one.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ApiError(ArkorError):
    """The backend answered a request with a non-2xx status.

    Attributes:
        status: The HTTP status code; 0 when no HTTP answer arrived (connection refused, reset,
            timed out): the message then says which.
        message: The backend's ``error`` string, or the raw body, or ``"HTTP <status>"``.
        body: The decoded JSON body (or the raw text, or None).
    """

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(f"{message} (HTTP {status})" if status else message)
        self.status = status
        self.message = message
        self.body = body

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.status, self.message, self.body))


class JobNotFound(ApiError):
    """The backend does not know the job (HTTP 404)."""


class UpgradeRequired(ApiError):
    """The backend refused this client's protocol level (HTTP 426)."""


class StreamError(ArkorError):
    """The job's event stream could not be followed."""


class ReconnectsExhausted(StreamError):
    """All ``ReconnectPolicy.max_attempts`` retries failed; ``__cause__`` is the last error."""


class FrameTooLarge(StreamError):
    """One SSE frame exceeded the decoder's ``max_frame_bytes`` bound.

    Attributes:
        limit: The bound in bytes.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"an SSE frame exceeded max_frame_bytes={limit} bytes; the connection was dropped "
            "(raise ReconnectPolicy.max_frame_bytes if the backend really sends frames this large)"
        )
        self.limit = limit

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.limit,))
