"""The cursor store protocol (design.md section 14): async ``load``/``commit``, leases with fencing.

A store keeps, per key (a job, a URL), the committed cursor and whether the key is finished, in
one atomic record, and hands out *leases*: at most one live holder per key, each with a token
that grows strictly per key over all holders ever. A commit that carries a lease is checked by
the store itself against the key's current token (fencing): a stale holder's write raises
:class:`LeaseLost` and changes nothing.

:func:`keep_lease` is the holder's side every store shares: it waits for the lease, renews it in
the background every ``ttl / 3``, and marks it lost when a renewal fails or when the holder has
not renewed within ``ttl`` by its own monotonic clock (a paused process wakes up with a lease it
must not use). A store supplies three small async calls (acquire, renew, release); see
docs/trainer-control.md, "Write your own store".

Old stores with a sync ``load``/``save`` keep working through :class:`SyncStoreAdapter`
(:func:`as_cursor_store` wraps them, with a ``DeprecationWarning``).
"""

from __future__ import annotations

import inspect
import itertools
import logging
import os
import socket
import warnings
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

import attrs
import trio

from .._errors import ArkorError
from .._groups import lone_exception

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from contextlib import AbstractAsyncContextManager

__all__ = [
    "Cursor",
    "CursorStore",
    "Delivery",
    "Lease",
    "LeaseLost",
    "SyncStoreAdapter",
    "as_cursor_store",
    "commit_cursor",
    "default_holder",
    "is_finished",
    "keep_lease",
    "mark_finished",
]

log = logging.getLogger("arkor_trio.stream")

#: How often a waiting holder retries a lease: from the first value, doubling to the second.
LEASE_POLL = (0.02, 0.5)


class LeaseLost(ArkorError):
    """A lease is no longer this holder's: another holder took the key, or the lease expired.

    Raised by a store's ``commit`` that carries a stale lease (nothing is written), and by a
    follower before it would dispatch with a lease that is lost or not renewed within its ttl.

    Attributes:
        key: The key whose lease was lost.
    """

    def __init__(self, message: str, *, key: str = "") -> None:
        super().__init__(message)
        self.key = key


@attrs.frozen
class Cursor:
    """A key's committed state: the last handled id (None: nothing yet) and the finished mark."""

    id: str | None = None
    finished: bool = False


class Delivery(NamedTuple):
    """Which dispatch a callback runs in: the idempotency key for its side effects.

    Attributes:
        job_id: The key followed (a job id).
        event_id: The event's id (None for a terminal event the backend reported without one).
        token: The lease's fencing token (0 without a lease).
        holder: Who holds the lease ("pid N on host", or a store's holder name; "" without one).
    """

    job_id: str
    event_id: str | None
    token: int = 0
    holder: str = ""


@attrs.define(eq=False)
class Lease:
    """One holder's lease of one key. Check :meth:`valid` (or :meth:`check`) before acting.

    Attributes:
        key: The key.
        token: The fencing token: strictly increasing per key over all holders ever.
        holder: Who holds it.
        ttl: Seconds a renewal keeps the lease; the holder's own deadline.
        lost: Set once the lease is known lost (a failed renewal, a commit refused, expiry).
        renewed_at: ``trio.current_time()`` when the last successful renewal *started*.
    """

    key: str
    token: int
    holder: str
    ttl: float = 30.0
    lost: trio.Event = attrs.field(factory=trio.Event)
    renewed_at: float = attrs.field(factory=trio.current_time)
    pid: int = attrs.field(factory=os.getpid, repr=False)

    def valid(self) -> bool:
        """True while the lease is usable: not lost, renewed within ``ttl``, same process."""
        if self.lost.is_set():
            return False
        if os.getpid() != self.pid or trio.current_time() - self.renewed_at >= self.ttl:
            self.lost.set()  # a forked child, or a holder that slept past its ttl
            return False
        return True

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless :meth:`valid`."""
        if not self.valid():
            raise LeaseLost(
                f"the lease of {self.key!r} (token {self.token}, {self.holder}) is lost",
                key=self.key,
            )


@runtime_checkable
class CursorStore(Protocol):
    """The cursor store protocol: every built-in store and any store a user writes.

    * ``await load(key)`` -> :class:`Cursor`;
    * ``await commit(key, cursor_id, *, finished=False, lease=None)``: record ``cursor_id``
      (None: keep the current one) and, if ``finished``, the finished mark, in ONE atomic write,
      visible to every later ``load`` once it returns. With ``lease``, the store first checks that
      ``lease.token`` is still the key's current token, else raises :class:`LeaseLost` and writes
      nothing;
    * ``lease(key, *, ttl)`` -> an async context manager giving a :class:`Lease`: waits while
      another live holder has the key; renews in the background; releases at exit.
    """

    async def load(self, key: str) -> Cursor: ...

    async def commit(
        self,
        key: str,
        cursor_id: str | None,
        *,
        finished: bool = False,
        lease: Lease | None = None,
    ) -> None: ...

    def lease(self, key: str, *, ttl: float) -> AbstractAsyncContextManager[Lease]: ...


def default_holder() -> str:
    """This process as a holder name: ``"pid N on host"``."""
    return f"pid {os.getpid()} on {socket.gethostname()}"


@asynccontextmanager
async def keep_lease(
    key: str,
    *,
    ttl: float,
    acquire: Callable[[], Awaitable[Lease | None]],
    renew: Callable[[Lease], Awaitable[bool]],
    release: Callable[[Lease], Awaitable[None]],
    describe: Callable[[], str] | None = None,
) -> AsyncIterator[Lease]:
    """Hold a lease for the block: the holder's side of the protocol, shared by every store.

    Args:
        key: The key (for messages).
        ttl: The lease's time to live, seconds (> 0).
        acquire: Take the lease now (the store bumps the key's token), or None while another
            live holder has it; polled every 20 ms at first, then at most every 0.5 s.
        renew: Extend the lease; False when it is no longer this holder's.
        release: Give it up (best effort; cancellation-shielded).
        describe: Who holds it now, for the log line of a waiting holder.
    """
    if not ttl > 0:
        raise ValueError(f"ttl must be positive, got {ttl!r}")
    delay, ceiling = LEASE_POLL
    lease = await acquire()
    if lease is None:
        who = describe() if describe is not None else ""
        log.info("%s is followed by another follower%s; waiting", key, f" ({who})" if who else "")
    while lease is None:
        await trio.sleep(delay)
        delay = min(delay * 2, ceiling)
        lease = await acquire()
    lone: BaseException | None = None
    try:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_renew_loop, lease, renew)
                try:
                    yield lease
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            lone = lone_exception(group)
            if lone is None:
                raise
        if lone is not None:
            raise lone  # the body's exception comes out as itself, its cause kept
    finally:
        lease.lost.set()  # a lease left behind is never used again
        with trio.CancelScope(shield=True):
            await release(lease)


async def _renew_loop(lease: Lease, renew: Callable[[Lease], Awaitable[bool]]) -> None:
    interval = lease.ttl / 3
    while not lease.lost.is_set():
        await trio.sleep(interval)
        started = trio.current_time()
        try:
            ok = await renew(lease)
        except Exception as exc:  # a store that cannot be reached: the deadline decides
            log.warning("renewing the lease of %r failed: %r", lease.key, exc)
            continue
        if not ok:
            log.warning("the lease of %r (token %d) was taken over", lease.key, lease.token)
            lease.lost.set()
            return
        lease.renewed_at = started


def is_finished(store: Any, key: str) -> bool:
    """True when ``store`` records that ``key``'s terminal event was handled (``finished``)."""
    finished = getattr(store, "finished", None)
    return bool(finished(key)) if callable(finished) else False


def mark_finished(store: Any, key: str) -> None:
    """Record that ``key``'s terminal event was handled, if ``store`` can."""
    commit_cursor(store, key, None, finished=True)


def commit_cursor(store: Any, key: str, cursor: str | None, *, finished: bool) -> None:
    """Record ``cursor`` (None: unchanged) and, if ``finished``, the finished mark (sync).

    A built-in store commits in one atomic write (``commit_nowait``); an old store's sync
    ``commit`` likewise; else ``save`` then ``mark_finished`` (not atomic). A store whose
    ``commit`` is async cannot be committed from sync code: ``await store.commit(...)``.
    """
    nowait = getattr(store, "commit_nowait", None)
    if callable(nowait):
        nowait(key, cursor, finished=finished)
        return
    commit = getattr(store, "commit", None)
    if callable(commit):
        if inspect.iscoroutinefunction(commit):
            raise TypeError(f"{type(store).__name__}.commit is async: await store.commit(...)")
        commit(key, cursor, finished=finished)
        return
    if cursor is not None:
        store.save(key, cursor)
    mark = getattr(store, "mark_finished", None)
    if finished and callable(mark):
        mark(key)


_adapter_tokens = itertools.count(1)


class SyncStoreAdapter:
    """An old-style store (sync ``load(key) -> str | None`` and ``save``) as an async store.

    Optional old methods are used when present: ``commit(key, cursor, *, finished)``,
    ``finished(key)``, ``mark_finished(key)``, ``try_claim(key)``, ``blocking``. A lease here is
    the store's ``try_claim`` (or nothing) with a process-local token: no fencing across
    processes. Deprecated: write the async protocol (docs/trainer-control.md).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.blocking = bool(getattr(inner, "blocking", False))

    def __repr__(self) -> str:
        return f"SyncStoreAdapter({self.inner!r})"

    async def _run(self, fn: Callable[[], Any]) -> Any:
        if not self.blocking:
            await trio.lowlevel.checkpoint_if_cancelled()
            return fn()
        with trio.CancelScope(shield=True):
            result = await trio.to_thread.run_sync(fn)
        return result

    def _load_now(self, key: str) -> Cursor:
        return Cursor(self.inner.load(key), is_finished(self.inner, key))

    async def load(self, key: str) -> Cursor:
        return await self._run(lambda: self._load_now(key))  # type: ignore[no-any-return]

    async def commit(
        self,
        key: str,
        cursor_id: str | None,
        *,
        finished: bool = False,
        lease: Lease | None = None,
    ) -> None:
        if lease is not None:
            lease.check()
        await self._run(lambda: self.commit_nowait(key, cursor_id, finished=finished))

    def commit_nowait(
        self,
        key: str,
        cursor_id: str | None,
        *,
        finished: bool = False,
        lease: Lease | None = None,
    ) -> None:
        """The old store's commit, from sync code."""
        if lease is not None:
            lease.check()
        commit_cursor(self.inner, key, cursor_id, finished=finished)

    def lease(self, key: str, *, ttl: float) -> AbstractAsyncContextManager[Lease]:
        try_claim = getattr(self.inner, "try_claim", None)
        releases: dict[int, Callable[[], None]] = {}

        async def acquire() -> Lease | None:
            await trio.lowlevel.checkpoint()
            if callable(try_claim):
                release = try_claim(key)
                if release is None:
                    return None
            else:
                release = _nothing
            lease = Lease(key, next(_adapter_tokens), default_holder(), ttl)
            releases[lease.token] = release
            return lease

        async def renew(lease: Lease) -> bool:
            await trio.lowlevel.checkpoint()
            return True

        async def release(lease: Lease) -> None:
            await trio.lowlevel.checkpoint()
            releases.pop(lease.token, _nothing)()

        return keep_lease(key, ttl=ttl, acquire=acquire, renew=renew, release=release)


def _nothing() -> None:
    return None


def as_cursor_store(store: Any) -> CursorStore:
    """``store`` itself when it speaks the async protocol; an old sync store wrapped in a
    :class:`SyncStoreAdapter` (with a ``DeprecationWarning``)."""
    if isinstance(store, SyncStoreAdapter):
        return store
    if inspect.iscoroutinefunction(getattr(store, "load", None)) and callable(
        getattr(store, "lease", None)
    ):
        return store  # type: ignore[no-any-return]
    if not callable(getattr(store, "load", None)) or not callable(getattr(store, "save", None)):
        from .._errors import ConfigError

        raise ConfigError(
            "cursor_store must implement the async store protocol (load, commit, lease) or "
            f"the old sync one (load, save); got {type(store).__name__}",
            field="cursor_store",
        )
    warnings.warn(
        f"{type(store).__name__} is a sync cursor store (load/save): it works through an "
        "adapter, without fencing across processes; implement the async protocol "
        "(load/commit/lease, docs/trainer-control.md) instead",
        DeprecationWarning,
        stacklevel=3,
    )
    return SyncStoreAdapter(store)
