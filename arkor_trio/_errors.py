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

from typing import Any

__all__ = [
    "ApiError",
    "ArkorError",
    "ConfigError",
    "FrameTooLarge",
    "JobNotFound",
    "ReconnectsExhausted",
    "StreamError",
    "UpgradeRequired",
]


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
