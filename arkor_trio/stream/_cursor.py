"""Cursor stores: where a follower remembers the last event id it handled, per key (a job, a URL).

The protocol is in :mod:`._store` (design.md section 14: async ``load``/``commit``, ``lease``).
``MemoryCursorStore`` lives as long as the process; ``FileCursorStore`` survives restarts and is
shared safely by any number of processes, so ``Trainer.attach`` resumes after the last handled
event without handling anything twice.

The module functions below are the older sync surface, kept working: :func:`commit_cursor`,
:func:`is_finished`, :func:`hold_follower` (superseded by ``store.lease``) and
:func:`commit_cursor_async` (superseded by ``await store.commit``). They accept both the built-in
stores and old-style stores that only have ``load``/``save``.
"""

from __future__ import annotations

import inspect
import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import trio

from ._file_store import FileCursorStore
from ._store import (
    Cursor,
    CursorStore,
    Lease,
    LeaseLost,
    commit_cursor,
    default_holder,
    is_finished,
    keep_lease,
    mark_finished,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractAsyncContextManager

__all__ = [
    "DEFAULT_LEASE_TTL",
    "CursorStore",
    "FileCursorStore",
    "MemoryCursorStore",
    "SyncCursorStore",
    "commit_cursor",
    "commit_cursor_async",
    "hold_follower",
    "is_finished",
    "mark_finished",
]

log = logging.getLogger("arkor_trio.stream")

#: How often a waiting follower retries the claim: from the first value, doubling to the second.
CLAIM_POLL = (0.02, 0.5)
#: The lease ttl followers use unless told otherwise (seconds).
DEFAULT_LEASE_TTL = 30.0


@runtime_checkable
class SyncCursorStore(Protocol):
    """The sync store of older releases: ``load(key) -> str | None`` and ``save(key, cursor)``.

    Optional: ``commit(key, cursor, *, finished)``, ``finished(key)``, ``mark_finished(key)``,
    ``try_claim(key)``, ``blocking``. Followers use it through
    :class:`~arkor_trio.stream.SyncStoreAdapter` (with a ``DeprecationWarning``).
    """

    def load(self, job_id: str) -> str | None:
        """The committed cursor of ``job_id``, or None when nothing was handled yet."""
        ...

    def save(self, job_id: str, cursor: str) -> None:
        """Commit ``cursor`` as the last handled event id of ``job_id``."""
        ...


async def commit_cursor_async(store: Any, key: str, cursor: str | None, *, finished: bool) -> None:
    """:func:`commit_cursor` from trio (superseded by ``await store.commit(...)``).

    An async store's ``commit`` is awaited (shielded: once called, the handled event is
    recorded even if the caller is being cancelled). A ``blocking`` store commits from a worker
    thread, shielded too. Other stores commit inline.
    """
    commit = getattr(store, "commit", None)
    if inspect.iscoroutinefunction(commit):
        with trio.CancelScope(shield=True):
            await commit(key, cursor, finished=finished)
        return
    if getattr(store, "blocking", False):
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(
                lambda: commit_cursor(store, key, cursor, finished=finished)
            )
        return
    commit_cursor(store, key, cursor, finished=finished)


@asynccontextmanager
async def hold_follower(store: Any, key: str) -> AsyncIterator[None]:
    """Be ``key``'s only follower in ``store`` for the block, waiting while another has it.

    Superseded by ``async with store.lease(key, ttl=...)``, which it uses for a store of the
    async protocol. For an old store it polls ``try_claim`` (every 20 ms at first, at most every
    0.5 s), so the caller's trio scope cancels it at once; a store without either excludes
    nobody.
    """
    lease = getattr(store, "lease", None)
    if callable(lease) and inspect.iscoroutinefunction(getattr(store, "load", None)):
        async with lease(key, ttl=DEFAULT_LEASE_TTL):
            yield
        return
    try_claim: Callable[[str], Callable[[], None] | None] | None = getattr(store, "try_claim", None)
    if not callable(try_claim):
        await trio.lowlevel.checkpoint()
        yield
        return
    delay, ceiling = CLAIM_POLL
    release = try_claim(key)
    if release is None:
        holder = getattr(store, "claim_holder", lambda _: "")(key)
        who = f" ({holder})" if holder else ""
        log.info("%r: %s is followed by another follower%s; waiting", store, key, who)
    while release is None:
        await trio.sleep(delay)
        delay = min(delay * 2, ceiling)
        release = try_claim(key)
    try:
        yield
    finally:
        release()


_FOREVER = float("inf")


def _now() -> float:
    try:
        return trio.current_time()
    except RuntimeError:  # outside trio: a lease's expiry cannot be judged; it holds
        return float("-inf")


class _Entry:
    __slots__ = ("cursor", "expires", "finished", "holder", "token")

    def __init__(self) -> None:
        self.cursor: str | None = None
        self.finished = False
        self.token = 0
        self.holder: str | None = None
        self.expires = 0.0


class MemoryCursorStore:
    """Cursors in a dict: per process. Implements the store protocol (:class:`CursorStore`).

    Leases expire by this store's clock (``trio.current_time()``) ``ttl`` after their last
    renewal, as a networked store's would.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._members: dict[str, tuple[float, str]] = {}

    def _entry(self, key: str) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        return entry

    # --- the protocol --------------------------------------------------------------------------

    async def load(self, key: str) -> Cursor:
        """See :class:`CursorStore`."""
        await trio.lowlevel.checkpoint()
        return self.peek(key)

    async def commit(
        self,
        key: str,
        cursor_id: str | None,
        *,
        finished: bool = False,
        lease: Lease | None = None,
    ) -> None:
        """See :class:`CursorStore` (one atomic step; a stale lease raises ``LeaseLost``)."""
        self.commit_nowait(key, cursor_id, finished=finished, lease=lease)
        await trio.lowlevel.checkpoint()

    def lease(self, key: str, *, ttl: float) -> AbstractAsyncContextManager[Lease]:
        """See :class:`CursorStore`."""
        holder = default_holder()

        async def acquire() -> Lease | None:
            await trio.lowlevel.checkpoint()
            entry = self._entry(key)
            now = trio.current_time()
            if entry.holder is not None and entry.expires > now:
                return None
            entry.token += 1
            entry.holder, entry.expires = holder, now + ttl
            return Lease(key, entry.token, holder, ttl, renewed_at=now)

        async def renew(lease: Lease) -> bool:
            await trio.lowlevel.checkpoint()
            entry = self._entry(key)
            if entry.token != lease.token or entry.holder is None:
                return False
            entry.expires = trio.current_time() + ttl
            return True

        async def release(lease: Lease) -> None:
            entry = self._entry(key)
            if entry.token == lease.token:
                entry.holder = None
            await trio.lowlevel.checkpoint()

        return keep_lease(
            key,
            ttl=ttl,
            acquire=acquire,
            renew=renew,
            release=release,
            describe=lambda: self._entry(key).holder or "",
        )

    # --- membership (a fleet's replicas, design.md section 15) ----------------------------------

    async def heartbeat(self, member: str, *, ttl: float, info: str = "") -> dict[str, str]:
        """Mark ``member`` alive for ``ttl`` seconds with ``info``; the live members' infos.

        Members expire by this store's clock, as a networked store's would.
        """
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        self._members[member] = (now + ttl, info)
        self._members = {m: v for m, v in self._members.items() if v[0] > now}
        return {m: v[1] for m, v in sorted(self._members.items())}

    async def leave(self, member: str) -> None:
        """Remove ``member`` at once (a replica shutting down)."""
        self._members.pop(member, None)
        await trio.lowlevel.checkpoint()

    # --- sync helpers (tools, tests, the older surface) ----------------------------------------

    def peek(self, key: str) -> Cursor:
        """The committed state of ``key`` now (sync: for tools and tests outside trio)."""
        entry = self._entries.get(key)
        return Cursor() if entry is None else Cursor(entry.cursor, entry.finished)

    def commit_nowait(
        self,
        key: str,
        cursor_id: str | None,
        *,
        finished: bool = False,
        lease: Lease | None = None,
    ) -> None:
        """:meth:`commit` without a checkpoint (it never waits): a follower's hot path."""
        entry = self._entry(key)
        if lease is not None and lease.token != entry.token:
            raise LeaseLost(
                f"commit of {key!r} refused: lease token {lease.token} is stale "
                f"(current {entry.token})",
                key=key,
            )
        if cursor_id is not None:
            entry.cursor = cursor_id
        if finished:
            entry.finished = True

    def save(self, job_id: str, cursor: str) -> None:
        """Older surface: ``commit_nowait(job_id, cursor)``."""
        self.commit_nowait(job_id, cursor)

    def finished(self, job_id: str) -> bool:
        """Older surface: ``peek(job_id).finished``."""
        return self.peek(job_id).finished

    def mark_finished(self, job_id: str) -> None:
        """Older surface: ``commit_nowait(job_id, None, finished=True)``."""
        self.commit_nowait(job_id, None, finished=True)

    def try_claim(self, key: str) -> Callable[[], None] | None:
        """Older surface: claim ``key`` while no lease or claim holds it (no expiry)."""
        entry = self._entry(key)
        if entry.holder is not None and (entry.expires == _FOREVER or entry.expires > _now()):
            return None
        entry.token += 1
        entry.holder, entry.expires = default_holder(), _FOREVER
        token = entry.token

        def release() -> None:
            if entry.token == token:
                entry.holder = None

        return release

    def __repr__(self) -> str:
        return f"MemoryCursorStore({len(self._entries)} jobs)"
