"""``Ledger``: the exactly-once rule of a follower, in one place (design.md section 3, rule 10).

One ledger belongs to one follower of one key (a job, a URL): the SSE channel, the WebSocket
job stream, a feed subscription and a trainer all hand their items through one, and none of
them keeps dedupe state of its own. It owns:

* **the commit rule** (rule 2, section 10): an item handed to the consumer is *pending*; it is
  committed to the cursor store (cursor and, for a final item, the finished mark, in one atomic
  ``commit`` carrying the follower's lease) when the consumer is done with it, that is when it
  asks for the next item or leaves normally; never when the consumer raised (:meth:`abandon`);
* **the lease check** before every hand-over: a follower whose lease is lost or not renewed in
  time stops with :class:`~arkor_trio.stream.LeaseLost` instead of dispatching;
* **dedupe and the replay guard**: each stream of the key gets a fresh
  :class:`~arkor_trio.stream.DuplicateFilter` from :meth:`new_filter`, seeded with the ids this
  ledger saw *handled* (a window of the most recent ones) and with the replay anchors that a
  handled id passed. What a previous stream only read ahead (queued, never handled) is
  forgotten, so the server's re-sending of it is delivered, never taken for a replay.

A ledger is cheap when there is no store: nothing is committed and nothing is remembered
beyond the current stream's filter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from ._dedupe import ANCHORS, RECENT_IDS, DuplicateFilter, RecentIds
from ._store import Cursor, CursorStore, Delivery, Lease, as_cursor_store

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["Ledger"]


class Ledger:
    """One follower's record of one key: what was handled, committed, and what to drop.

    Args:
        store: Where handled ids are committed (None: nowhere). An old sync store is wrapped
            (see :func:`~arkor_trio.stream.as_cursor_store`).
        key: The store key.
        lease: The follower's lease of ``key`` (checked before every hand-over and carried by
            every commit).
        seen: Ids already handled, oldest first (dropped if sent again).
        size: How many recent handled ids are remembered for dedupe.

    Attributes:
        cursor: The id of the last item handed to the consumer.
        committed: The id last committed (or loaded from the store).
        finished: Whether the store records the key as finished.
    """

    __slots__ = (
        "_anchors",
        "_dispatched",
        "_filter",
        "_nowait",
        "_pending",
        "_pending_final",
        "_pending_id",
        "_size",
        "committed",
        "cursor",
        "finished",
        "key",
        "lease",
        "store",
    )

    def __init__(
        self,
        store: CursorStore | Any | None = None,
        key: str = "",
        *,
        lease: Lease | None = None,
        seen: Iterable[str] = (),
        size: int = RECENT_IDS,
    ) -> None:
        self.store: CursorStore | None = as_cursor_store(store) if store is not None else None
        self.key = key
        self.lease = lease
        self.cursor: str | None = None
        self.committed: str | None = None
        self.finished = False
        self._pending = False
        self._pending_id: str | None = None
        self._pending_final = False
        self._size = size
        self._dispatched = RecentIds(seen, size)
        #: Replay anchors that a handled id passed (None until there is one).
        self._anchors: list[str] | None = None
        self._filter: DuplicateFilter | None = None
        nowait = getattr(self.store, "commit_nowait", None)
        blocking = getattr(self.store, "blocking", False)
        #: Whether the store commits without waiting (``commit_nowait``, looked up per commit:
        #: a bound method kept per ledger costs 64 bytes and a tracked object per followed job).
        self._nowait = callable(nowait) and not blocking

    def __repr__(self) -> str:
        return f"Ledger(key={self.key!r}, cursor={self.cursor!r}, committed={self.committed!r})"

    async def load(self) -> Cursor:
        """Read the key's committed state from the store (a fresh one without a store)."""
        if self.store is None:
            await trio.lowlevel.checkpoint()
            return Cursor(self.committed, self.finished)
        state = await self.store.load(self.key)
        self.committed = self.cursor = state.id
        self.finished = state.finished
        return state

    # --- dedupe --------------------------------------------------------------------------------

    def new_filter(self) -> DuplicateFilter:
        """The duplicate filter for a new stream of this key (a channel, a subscription).

        It knows the ids handled so far; whatever an earlier stream only read ahead is forgotten
        here, as are the replay anchors (connections' first ids) that no handled id passed.
        """
        old = self._filter
        if old is not None:
            dispatched = self._dispatched
            for anchor in old.anchors():
                anchors = self._anchors
                if anchor in dispatched and (anchors is None or anchor not in anchors):
                    if anchors is None:
                        anchors = self._anchors = []
                    anchors.append(anchor)
                    if len(anchors) > ANCHORS:
                        del anchors[0]
        self._filter = DuplicateFilter(
            self._dispatched, anchors=self._anchors or (), size=self._size
        )
        return self._filter

    def handled_ids(self) -> list[str]:
        """The recent handled ids, oldest first (for a diagnostic or a hand-over)."""
        return self._dispatched.ids()

    # --- the commit rule -----------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """Whether an item was handed over and is not yet handled or abandoned."""
        return self._pending

    def take(self, item_id: str | None, *, final: bool = False) -> None:
        """An item is handed to the consumer: check the lease; the item becomes pending.

        Raises:
            LeaseLost: The lease is lost or was not renewed within its ttl.
        """
        lease = self.lease
        if lease is not None:
            lease.check()
        if item_id:
            self.cursor = item_id
        self._pending = True
        self._pending_id = item_id
        self._pending_final = final

    def delivery(self) -> Delivery:
        """The pending (or last) item as a :class:`Delivery`: an idempotency key."""
        lease = self.lease
        return Delivery(
            self.key,
            self._pending_id,
            lease.token if lease is not None else 0,
            lease.holder if lease is not None else "",
        )

    def abandon(self) -> None:
        """The consumer raised with the pending item: it is not handled and not committed."""
        self._pending = False

    def handled_nowait(self) -> bool:
        """Handle the pending item without waiting, if the store allows; False: call
        :meth:`handled` instead."""
        if not self._pending:
            return True
        if self.store is not None and not self._nowait and self._needs_commit():
            return False
        self._pending = False
        item_id = self._pending_id
        if item_id:
            self._dispatched.add(item_id)
        if self._nowait and self._needs_commit():
            final = self._pending_final
            self.store.commit_nowait(  # type: ignore[union-attr]
                self.key, item_id, finished=final, lease=self.lease
            )
            self._record(item_id, final)
        return True

    async def handled(self) -> None:
        """The consumer is done with the pending item: remember it and commit it (shielded:
        once started, the commit completes even if the caller is being cancelled)."""
        if self.handled_nowait():
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        self._pending = False
        item_id, final = self._pending_id, self._pending_final
        if item_id:
            self._dispatched.add(item_id)
        assert self.store is not None
        with trio.CancelScope(shield=True):
            await self.store.commit(self.key, item_id, finished=final, lease=self.lease)
        self._record(item_id, final)

    def _needs_commit(self) -> bool:
        item_id = self._pending_id
        return (bool(item_id) and item_id != self.committed) or (
            self._pending_final and not self.finished
        )

    def _record(self, item_id: str | None, final: bool) -> None:
        if item_id:
            self.committed = item_id
        if final:
            self.finished = True
