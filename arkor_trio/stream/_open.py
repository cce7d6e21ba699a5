"""``open_sse``: follow any Server-Sent Events endpoint as one resumable channel.

The general entry point of the channel layer (design.md section 10). It yields the frames
themselves (:class:`~arkor_trio.sse.SSEFrame`) and, with a cursor store, commits each frame's id
once the consumer is done with it, so that a restart resumes after the last frame handled.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeAlias

from ..sse import SSEFrame
from ._channel import SSEChannel
from ._cursor import DEFAULT_LEASE_TTL
from ._ledger import Ledger
from ._store import as_cursor_store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping

    import httpx

    from ._connect import Headers
    from ._cursor import CursorStore
    from ._reconnect import ReconnectPolicy

__all__ = ["SSEStream", "open_sse"]


#: The channel :func:`open_sse` yields: frames, with the cursor commit rule.
SSEStream: TypeAlias = SSEChannel[SSEFrame]


@asynccontextmanager
async def open_sse(
    url: str,
    *,
    headers: Headers = None,
    params: Mapping[str, str] | None = None,
    last_event_id: str | None = None,
    cursor_store: CursorStore | None = None,
    cursor_key: str | None = None,
    policy: ReconnectPolicy | None = None,
    http: httpx.AsyncClient | None = None,
    is_final: Callable[[SSEFrame], bool] | None = None,
    exclusive: bool = True,
    lease_ttl: float = DEFAULT_LEASE_TTL,
) -> AsyncIterator[SSEStream]:
    """Follow the SSE endpoint at ``url``; ``async with open_sse(url) as stream: async for ...``.

    Args:
        url: The endpoint (http or https).
        headers: A mapping, or a callable (sync or async) returning one, called for every
            connection (token refresh).
        params: Query parameters.
        last_event_id: Resume after this id (default: the cursor store's, if any).
        cursor_store: Where frame ids are committed: a frame's ``last_event_id`` is saved when
            the consumer asks for the next frame or leaves the block without an exception,
            never when the body raised; a restart resumes after the last committed frame.
        cursor_key: The key in ``cursor_store`` (default: ``url``).
        policy: Reconnect rules; :attr:`ReconnectPolicy.permanent_statuses` says which statuses
            stop the stream.
        http: An httpx client to send with (kept open); default: one made and closed here.
        is_final: Iteration ends after yielding a frame for which it returns true.
        exclusive: With a ``cursor_store``, be the key's only follower: hold the store's lease
            of ``cursor_key`` for the block (waiting while another process or stream holds
            it), check it before every frame and fence every commit with it, so two processes
            on one key never both handle an event. ``False`` opts out (several readers of one
            key, each handling every frame).
        lease_ttl: Seconds the lease lasts without renewal (renewed every third of it).

    Raises:
        ApiError: A permanent status (on the next ``__anext__``).
        StreamError: A non-SSE 2xx answer, a redirect loop, a TLS certificate failure.
        ReconnectsExhausted: ``policy.max_attempts`` failures in a row.
        FrameTooLarge: The same frame exceeded ``max_frame_bytes`` twice at one resume point.
        LeaseLost: The lease of ``cursor_key`` was lost (``exclusive``).
    """
    key = cursor_key if cursor_key is not None else url

    def channel(ledger: Ledger) -> SSEStream:
        return SSEChannel(
            url,
            ledger=ledger,
            last_event_id=last_event_id,
            headers=headers,
            params=params,
            policy=policy,
            http=http,
            is_final=is_final,
        )

    if cursor_store is None or not exclusive:
        async with channel(Ledger(cursor_store, key)) as stream:
            yield stream
        return
    store = as_cursor_store(cursor_store)
    async with (
        store.lease(key, ttl=lease_ttl) as lease,
        channel(Ledger(store, key, lease=lease)) as stream,
    ):
        yield stream
