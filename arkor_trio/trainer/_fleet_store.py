"""The store a fleet hands each follow: the shared one, reporting leases acquired and commits."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ..stream import LeaseLost

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from ..stream import Cursor, Lease

__all__ = ["WatchedStore"]


class WatchedStore:
    """A cursor store that tells the fleet when a lease was acquired and whether each commit was
    accepted (``on_commit(False)``: refused, the lease was lost); otherwise the store."""

    def __init__(
        self,
        inner: Any,
        on_lease: Callable[[Lease], None],
        on_commit: Callable[[bool], None] = lambda accepted: None,
    ) -> None:
        self._inner = inner
        self._on_lease = on_lease
        self._on_commit = on_commit
        self.blocking = getattr(inner, "blocking", False)

    async def load(self, key: str) -> Cursor:
        return await self._inner.load(key)  # type: ignore[no-any-return]

    async def commit(
        self, key: str, cursor_id: str | None, *, finished: bool = False, lease: Lease | None = None
    ) -> None:
        try:
            await self._inner.commit(key, cursor_id, finished=finished, lease=lease)
        except LeaseLost:
            self._on_commit(False)
            raise
        self._on_commit(True)

    @asynccontextmanager
    async def lease(self, key: str, *, ttl: float) -> AsyncIterator[Lease]:
        async with self._inner.lease(key, ttl=ttl) as lease:
            self._on_lease(lease)
            yield lease
