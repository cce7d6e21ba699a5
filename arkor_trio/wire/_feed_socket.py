"""How one feed socket ended, and the small wire helpers of the job feed.

Close codes: ``4000 + status`` is handled like that HTTP status (final for the whole feed when
the status is in ``ReconnectPolicy.permanent_statuses``, as on SSE: :func:`final_error`), 1001
and 1012 ask for an immediate
reconnect, anything else is a failure (or, after progress, an immediate reconnect). A refused
handshake (an HTTP status) follows the same rule, with ``Retry-After`` on 429/503.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .._errors import ApiError, ArkorError, UpgradeRequired
from ..stream import parse_retry_after

if TYPE_CHECKING:
    from collections import deque
    from collections.abc import Collection

    from trio_websocket import ConnectionClosed, ConnectionRejected

    from ._models import TrainingJob

__all__ = [
    "RESTART_CODES",
    "SEND_BATCH_BYTES",
    "FeedClient",
    "SocketEnd",
    "end_from_close",
    "end_from_rejection",
    "final_error",
    "take_batch",
]

#: Largest batch of subscribe/unsubscribe messages sent as one text message (the server accepts
#: messages up to 64 KiB): following 10,000 jobs then takes a handful of writes, not 10,000.
SEND_BATCH_BYTES = 48 * 1024
#: Close codes that ask for an immediate reconnect (going away, service restart).
RESTART_CODES = frozenset({1001, 1012})


class FeedClient(Protocol):
    """What a feed needs from its client (``ArkorClient`` has both)."""

    async def websocket_target(self, path: str) -> tuple[str, list[tuple[bytes, bytes]]]:
        """URL and handshake headers of a WebSocket route."""
        ...

    async def get_job(self, job_id: str) -> TrainingJob:
        """``GET /v1/jobs/:id``."""
        ...


#: How trio-websocket words the 1009 close it sends itself when a message exceeds its
#: ``max_message_size`` (a server's own 1009 is not an oversized message of ours).
_TOO_LARGE_REASON = "Exceeded maximum message size"


class SocketEnd(Exception):
    """How a socket ended (not final): the error, whether to reconnect at once, Retry-After,
    whether the client closed it because a message exceeded ``max_frame_bytes``, and whether
    an open socket broke (no close frame, or the idle timeout) rather than being closed."""

    def __init__(
        self,
        error: BaseException | None,
        *,
        restart: bool = False,
        too_large: bool = False,
        broken: bool = False,
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.restart = restart
        self.too_large = too_large
        self.broken = broken
        self.retry_after: float | None = None


def final_error(status: int, reason: str, permanent: Collection[int]) -> ApiError | None:
    """The error that ends the whole feed for this status, or None when it is transient.

    Args:
        status: The HTTP status (of a refused handshake, or a close code minus 4000).
        reason: What the server said.
        permanent: ``ReconnectPolicy.permanent_statuses``.
    """
    if status not in permanent:
        return None
    if status == 426:
        return UpgradeRequired(status, reason or "this client is too old for the backend")
    return ApiError(status, f"the job feed was refused: {reason or status}")


def end_from_close(exc: ConnectionClosed, permanent: Collection[int]) -> SocketEnd:
    """Classify a close (``permanent``: ``ReconnectPolicy.permanent_statuses``).

    Raises:
        ApiError: A close code ``4000 + status`` for a permanent status (by default 4400,
            4401, 4403, 4404, 4410, 4422, 4426).
    """
    code = exc.reason.code if exc.reason is not None else 1006
    text = (exc.reason.reason if exc.reason is not None else None) or ""
    if 4000 <= code < 5000:
        final = final_error(code - 4000, text, permanent)
        if final is not None:
            raise final
    message = f"the feed socket closed ({code} {text})".strip()
    too_large = code == 1009 and text.startswith(_TOO_LARGE_REASON)
    return SocketEnd(
        ArkorError(message),
        restart=code in RESTART_CODES,
        too_large=too_large,
        broken=code == 1006,  # no close frame: the connection broke
    )


def end_from_rejection(exc: ConnectionRejected, permanent: Collection[int]) -> SocketEnd:
    """Classify a handshake answered with an HTTP status (``permanent`` as above).

    Raises:
        ApiError: A permanent status.
    """
    status = exc.status_code
    final = final_error(status, f"HTTP {status}", permanent)
    if final is not None:
        raise final from None
    end = SocketEnd(ApiError(status, f"HTTP {status} opening the feed"))
    if status in (429, 503):
        retry = dict(exc.headers or ()).get(b"retry-after", b"").decode("latin-1")
        end.retry_after = parse_retry_after(retry or None)
    return end


def take_batch(outbox: deque[str]) -> str:
    """The next text message: one queued message, or a JSON array of several (a batch)."""
    first = outbox.popleft()
    parts, size = [first], len(first)
    while outbox and size + len(outbox[0]) + 1 < SEND_BATCH_BYTES:
        size += len(outbox[0]) + 1
        parts.append(outbox.popleft())
    return first if len(parts) == 1 else "[" + ",".join(parts) + "]"
