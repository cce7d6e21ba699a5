"""A feed message's ``subscribe`` batch, resolved in a few queries (not three per job).

A reconnecting feed resubscribes every job it follows, about a thousand per client message.
:func:`prepare` reads the jobs (existence, project, status), their event bounds and, for the
cursors close to the log's end, the events after them, ``CHUNK`` jobs per query; each cursor is
resolved by :func:`~._replay.resolve_start`, the rule :func:`~._replay.resolve_cursor` applies
one job at a time (so SSE and the feed still give the same answers).

Read in this order, as :func:`~._replay.follow_log` does: a status read as terminal means the
terminal event was committed before the events are read, so an owed one is among them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from ._replay import Rows, Start, resolve_start
from ._store_many import event_bounds_many, events_after_many, job_scopes

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._store import Store
    from ._ws_protocol import Subscribe

__all__ = ["INLINE_ROWS", "Prepared", "prepare"]

#: A cursor at most this many ids behind the job's last event has its events read in the
#: batch and is answered without a task of its own (a resubscribe after a reconnect).
INLINE_ROWS = 64


@attrs.frozen
class Prepared:
    """A subscription resolved in a batch.

    Attributes:
        status: The job's status when read (before its events).
        start: The resolved cursor.
        rows: The events after ``start.after`` read in the batch (in id order), or None when
            there may be many (the subscription's task reads them in pages).
    """

    status: str
    start: Start
    rows: Rows | None


def prepare(
    store: Store, project_id: str, subs: Sequence[Subscribe]
) -> dict[tuple[str, int | None], Prepared]:
    """``{(job, after): Prepared}`` for the subscriptions to jobs of ``project_id`` that exist.

    A job of another project is left out like a missing one (no existence leak).
    """
    jobs = list(dict.fromkeys(sub.job for sub in subs))
    scopes = job_scopes(store, jobs)
    bounds = event_bounds_many(
        store, [job for job in jobs if scopes.get(job, ("",))[0] == project_id]
    )
    starts: dict[tuple[str, int | None], Start] = {}
    near: dict[str, int] = {}  # job: the smallest near cursor of the batch, to read after
    far: set[tuple[str, int | None]] = set()
    for sub in subs:
        found = scopes.get(sub.job)
        if found is None or found[0] != project_id:
            continue
        start = starts[(sub.job, sub.after)] = resolve_start(bounds.get(sub.job), sub.after)
        last = bounds[sub.job][1] if sub.job in bounds else 0
        if last - start.after > INLINE_ROWS:
            far.add((sub.job, sub.after))
        else:
            near[sub.job] = min(near.get(sub.job, start.after), start.after)
    rows = events_after_many(store, near)
    prepared: dict[tuple[str, int | None], Prepared] = {}
    for key, start in starts.items():
        mine: Rows | None = None
        if key not in far:
            mine = [row for row in rows.get(key[0], ()) if row[0] > start.after]
        prepared[key] = Prepared(scopes[key[0]][1], start, mine)
    return prepared
