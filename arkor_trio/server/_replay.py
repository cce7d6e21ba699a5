"""One cursor resolution and one replay-then-tail loop for every transport (SSE, WebSocket).

A client resumes with a cursor: the id of the last event it holds (SSE's ``Last-Event-ID``, a
feed ``subscribe``'s ``after``), or none. :func:`cursor_id` reads it, :func:`resolve_cursor`
decides what the client gets, :func:`follow_log` delivers it. Both transports use all three, so
for the same log and the same cursor they deliver the same events; where the client's history
has a hole, or the cursor is past what the log holds, the WebSocket also says so in a ``reset``
(SSE has no such message and replays what is kept).

The ids of a job (:mod:`._store`): 1, 2, 3, ... ; recovery after a crash skips
:data:`~._store.RECOVERY_ID_GAP` ids before the event it appends, so the first id a job ever
had is 1, or ``RECOVERY_ID_GAP + 1`` for a job recovered before its first event; retention
deletes a job's oldest events and keeps the last N.

The answers (docs/event-stream.md and docs/websocket.md show them as a table):

- no cursor (or ``0``): every kept event; ``reset`` when retention deleted older ones;
- a cursor from ``first kept - 1`` to the last id, an id in the recovery gap included: the
  events after it (ids the log lost in a crash are not a hole: the client has them);
- a cursor older than the first kept event, where retention deleted events: every kept event,
  and ``reset``;
- a cursor past the last id (a power loss dropped the last commits, recovery has not written yet,
  or the id is not from this backend): the events after it, that is none until the log passes it
  (recovery's event does), and ``reset``; never the whole log again;
- not an id (not 1 to 18 digits): 400 on both, before anything is streamed.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import attrs
import trio

from ._store import RECOVERY_ID_GAP, TERMINAL_EVENT_STATUS, TERMINAL_STATUSES

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._hub import EventHub
    from ._store import Store

__all__ = [
    "PAGE_SIZE",
    "TERMINAL_TYPES",
    "Rows",
    "Start",
    "TailStep",
    "cursor_id",
    "follow_log",
    "resolve_cursor",
    "resolve_start",
]

TERMINAL_TYPES = frozenset(TERMINAL_EVENT_STATUS)
#: Rows fetched (and delivered as one page) per read of the log.
PAGE_SIZE = 1000
#: Event rows as the store gives them: ``(id, type, payload JSON)``.
Rows = list[tuple[int, str, str]]
_CURSOR = re.compile(r"[0-9]{1,18}")


def cursor_id(text: str) -> int | None:
    """The event id a cursor names, or None when it is not one of this backend's ids."""
    return int(text) if _CURSOR.fullmatch(text) else None


@attrs.frozen
class Start:
    """Where a follower starts: the events with ids above ``after``.

    Attributes:
        after: Replay the job's events with larger ids (the cursor itself, or 0).
        reset: Why the client's history has a hole, or its cursor is past the log (None: it
            has none); the WebSocket sends it as ``reset``.
        recovered: A cursor was given and resolves without a reset.
    """

    after: int
    reset: str | None
    recovered: bool


def resolve_cursor(store: Store, job_id: str, cursor: int | None) -> Start:
    """Resolve a client's cursor against a job's event log (the one rule, for every transport)."""
    return resolve_start(store.event_bounds(job_id), cursor)


def resolve_start(bounds: tuple[int, int] | None, cursor: int | None) -> Start:
    """:func:`resolve_cursor` from the job's ``(first kept, last)`` event ids, read already (the
    feed reads many jobs' bounds in one query, :func:`~._store_many.event_bounds_many`)."""
    after = 0 if cursor is None else cursor
    first, last = (None, 0) if bounds is None else bounds
    if after > last:
        what = f"the job's last event is {last}" if last else "the job has no event yet"
        return Start(
            after,
            f"event {after} is past the log ({what}: the backend lost its last events in a "
            f"crash, or the id is not from this backend); continuing after {after}",
            recovered=False,
        )
    if first is not None and after < first - 1 and first != RECOVERY_ID_GAP + 1:
        held = "events before" if after == 0 else f"events after {after} and before"
        return Start(
            after,
            f"{held} {first} are no longer kept (retain-events); continuing from {first}",
            recovered=False,
        )
    return Start(after, None, recovered=cursor is not None)


class TailStep:
    """A caught-up follower's read after an append, run by the hub (:meth:`~._hub.EventHub.tail`).

    Calling it reads the events after ``cursor`` and hands them to :meth:`deliver_now`; False
    when it cannot (a full page: more may follow; the terminal event; ``deliver_now`` refused):
    the follower's task then reads them again from ``cursor`` and delivers them itself. (A feed
    subscription is a subclass: one object per followed job, no closures.)
    """

    __slots__ = ("_deliver", "cursor", "job_id", "page_size", "store")

    def __init__(
        self,
        store: Store,
        job_id: str,
        cursor: int,
        deliver_now: Callable[[Rows], bool] | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.store, self.job_id, self.cursor = store, job_id, cursor
        self._deliver, self.page_size = deliver_now, page_size

    def deliver_now(self, rows: Rows) -> bool:
        """Take ``rows`` without waiting, or False (none taken)."""
        assert self._deliver is not None
        return self._deliver(rows)

    def __call__(self) -> bool:
        rows = self.store.events_after(self.job_id, self.cursor, self.page_size)
        if not rows:
            return True
        if len(rows) == self.page_size or rows[-1][1] in TERMINAL_TYPES:
            return False  # more may follow, or the end: the task takes over
        if not self.deliver_now(rows):
            return False
        self.cursor = rows[-1][0]
        return True


async def follow_log(
    store: Store,
    hub: EventHub,
    job_id: str,
    after: int,
    deliver: Callable[[Rows], Awaitable[None]],
    *,
    page_size: int = PAGE_SIZE,
    idle: float = math.inf,
    on_idle: Callable[[], Awaitable[None]] | None = None,
    deliver_now: Callable[[Rows], bool] | None = None,
) -> bool:
    """Deliver a job's events with ids above ``after``, in pages in id order, then tail the log.

    ``on_idle`` is awaited whenever ``idle`` seconds pass without a page delivered.

    ``deliver_now`` (without ``on_idle``): a delivery that never waits, True when it took the
    rows. Once the follower is caught up, the hub runs the reads and ``deliver_now`` itself after
    each append (:meth:`~._hub.EventHub.tail`), without waking this task; a page it cannot take
    (no room, a full page, the terminal event, an error) wakes the task, which reads it again
    and delivers it with ``deliver``. Either way each row is delivered once, in id order.

    Returns:
        True after delivering the terminal event (the last row of the last page); False when
        the job is terminal (or unknown) and has no event above ``after``.
    """
    cursor = after
    quiet_since = trio.current_time()
    with hub.watching(job_id):
        while True:
            changed = hub.changed(job_id)  # taken before reading: no append can slip between
            rows = store.events_after(job_id, cursor, page_size)
            if not rows and store.job_status(job_id) in (None, *TERMINAL_STATUSES):
                # Terminal status => its event is committed: one more read tells if it is owed.
                rows = store.events_after(job_id, cursor, page_size)
                if not rows:
                    return False
            if rows:
                await deliver(rows)
                if rows[-1][1] in TERMINAL_TYPES:  # nothing is ever appended after it
                    return True
                cursor = rows[-1][0]
                quiet_since = trio.current_time()
                if len(rows) == page_size or changed.is_set():
                    continue
                # A short page and no append since the read: the log holds nothing more, and the
                # job is not terminal (its status changes only with an append, which notifies),
                # so wait right away instead of reading an empty page and the status again.
            if deliver_now is not None and on_idle is None and not changed.is_set():
                step = TailStep(store, job_id, cursor, deliver_now, page_size)
                await hub.tail(job_id, step)
                cursor = step.cursor
                continue
            if on_idle is None:
                await changed.wait()
                continue
            with trio.move_on_at(quiet_since + idle):
                await changed.wait()
                continue
            await on_idle()
            quiet_since = trio.current_time()
