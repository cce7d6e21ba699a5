"""Cursor stores: where a follower remembers the last event id it handled, per key (a job, a URL).

``MemoryCursorStore`` lives as long as the process; ``FileCursorStore`` survives restarts and is
shared safely by any number of processes, so ``Trainer.attach`` resumes after the last handled
event without handling anything twice.

The protocol a follower uses (all through the module functions below, which give old stores
that only have ``load``/``save`` a default):

* :func:`commit_cursor` moves the cursor and, for the last event, the finished mark, in one
  atomic step (``store.commit``); without ``commit`` it falls back to ``save`` then
  ``mark_finished``: two steps, so a crash between them repeats the terminal callback;
* :func:`is_finished` tells whether the terminal event was already handled (``store.finished``);
* :func:`hold_follower` makes the follower the only one of its key in this store
  (``store.try_claim``), waiting while another live follower holds it.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import trio

from ._file_store import FileCursorStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

__all__ = [
    "CursorStore",
    "FileCursorStore",
    "MemoryCursorStore",
    "commit_cursor",
    "commit_cursor_async",
    "hold_follower",
    "is_finished",
    "mark_finished",
]

log = logging.getLogger("arkor_trio.stream")

#: How often a waiting follower retries the claim: from the first value, doubling to the second.
CLAIM_POLL = (0.02, 0.5)


@runtime_checkable
class CursorStore(Protocol):
    """Where committed cursors are kept. Implementations must be cheap: a cursor commits per event.

    Only ``load`` and ``save`` are required. For exactly-once across crashes and processes a
    store also implements (the built-in stores do):

    * ``commit(key, cursor, *, finished=False)``: record ``cursor`` (None: keep the current one)
      and, when ``finished``, the finished mark, in ONE atomic write that is visible to every
      later ``load``/``finished`` of any process once it returns;
    * ``finished(key) -> bool``: whether a commit with ``finished=True`` happened;
    * ``try_claim(key) -> release | None``: make the caller the key's only follower, or None
      while another live follower has it; the claim must die with its holder's process;
    * ``blocking = True`` if a commit may take more than a few hundred microseconds (a disk
      sync): followers then commit from a worker thread instead of the event loop.
    """

    def load(self, job_id: str) -> str | None:
        """The committed cursor of ``job_id``, or None when nothing was handled yet."""
        ...

    def save(self, job_id: str, cursor: str) -> None:
        """Commit ``cursor`` as the last handled event id of ``job_id``."""
        ...


def is_finished(store: CursorStore, key: str) -> bool:
    """True when ``store`` records that ``key``'s terminal event was handled (``finished``)."""
    finished = getattr(store, "finished", None)
    return bool(finished(key)) if callable(finished) else False


def mark_finished(store: CursorStore, key: str) -> None:
    """Record that ``key``'s terminal event was handled, if ``store`` can."""
    commit_cursor(store, key, None, finished=True)


def commit_cursor(store: CursorStore, key: str, cursor: str | None, *, finished: bool) -> None:
    """Record ``cursor`` (None: unchanged) and, if ``finished``, the finished mark.

    One atomic ``store.commit`` when the store has it; else ``save`` then ``mark_finished`` (the
    default for stores written before ``commit`` existed: not atomic).
    """
    commit = getattr(store, "commit", None)
    if callable(commit):
        commit(key, cursor, finished=finished)
        return
    if cursor is not None:
        store.save(key, cursor)
    mark = getattr(store, "mark_finished", None)
    if finished and callable(mark):
        mark(key)


async def commit_cursor_async(
    store: CursorStore, key: str, cursor: str | None, *, finished: bool
) -> None:
    """:func:`commit_cursor` from trio, for a follower's hot path.

    A ``blocking`` store commits from a worker thread, shielded: once called, the handled event
    is recorded even if the caller is being cancelled. Other stores commit inline (a few tens of
    microseconds), without a checkpoint, since the follower checkpoints for its next event.
    """
    if not getattr(store, "blocking", False):
        commit_cursor(store, key, cursor, finished=finished)
        return
    with trio.CancelScope(shield=True):
        await trio.to_thread.run_sync(lambda: commit_cursor(store, key, cursor, finished=finished))


@asynccontextmanager
async def hold_follower(store: CursorStore, key: str) -> AsyncIterator[None]:
    """Be ``key``'s only follower in ``store`` for the block, waiting while another has it.

    The wait polls the claim (every 20 ms at first, at most every 0.5 s), so the caller's trio
    scope cancels it at once. A store without ``try_claim`` excludes nobody.
    """
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


class MemoryCursorStore:
    """Cursors in a dict: per process."""

    def __init__(self) -> None:
        self._cursors: dict[str, str] = {}
        self._finished: set[str] = set()
        self._claimed: set[str] = set()

    def load(self, job_id: str) -> str | None:
        """See :meth:`CursorStore.load`."""
        return self._cursors.get(job_id)

    def save(self, job_id: str, cursor: str) -> None:
        """See :meth:`CursorStore.save`."""
        self._cursors[job_id] = cursor

    def commit(self, key: str, cursor: str | None, *, finished: bool = False) -> None:
        """Record ``cursor`` (None: unchanged) and, if ``finished``, the finished mark."""
        if cursor is not None:
            self._cursors[key] = cursor
        if finished:
            self._finished.add(key)

    def finished(self, job_id: str) -> bool:
        """True once a commit marked ``job_id`` finished."""
        return job_id in self._finished

    def mark_finished(self, job_id: str) -> None:
        """Record that the job's terminal event was handled."""
        self._finished.add(job_id)

    def try_claim(self, key: str) -> Callable[[], None] | None:
        """Claim ``key`` for one follower; None while another follower of this store has it."""
        if key in self._claimed:
            return None
        self._claimed.add(key)
        return lambda: self._claimed.discard(key)

    def __repr__(self) -> str:
        return f"MemoryCursorStore({len(self._cursors)} jobs)"
