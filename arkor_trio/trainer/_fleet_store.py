"""The store a fleet hands each follow: the shared one, reporting every lease acquired."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from ..stream import Cursor, Lease

__all__ = ["WatchedStore"]


class WatchedStore:
    """A cursor store that tells the fleet when a lease was acquired; otherwise the store."""

    def __init__(self, inner: Any, on_lease: Callable[[Lease], None]) -> None:
        self._inner = inner
        self._on_lease = on_lease
        self.blocking = getattr(inner, "blocking", False)

    async def load(self, key: str) -> Cursor:
        return await self._inner.load(key)  # type: ignore[no-any-return]

    async def commit(
        self, key: str, cursor_id: str | None, *, finished: bool = False, lease: Lease | None = None
    ) -> None:
        await self._inner.commit(key, cursor_id, finished=finished, lease=lease)

    @asynccontextmanager
    async def lease(self, key: str, *, ttl: float) -> AsyncIterator[Lease]:
        async with self._inner.lease(key, ttl=ttl) as lease:
            self._on_lease(lease)
            yield lease
