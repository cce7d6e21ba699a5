"""Reads of many jobs at once, for a feed's batch of ``subscribe`` messages.

A reconnecting feed resubscribes every job it follows (up to ``max_subscriptions``), about a
thousand per client message; reading each job's row, event bounds and new events one query
at a time cost more than everything else the backend does for a subscription. These read
``CHUNK`` jobs per query, with the same answers as :meth:`~._store.Store.get_job`,
:meth:`~._store.Store.event_bounds` and :meth:`~._store.Store.events_after` one by one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from ._replay import Rows
    from ._store import Store

__all__ = ["CHUNK", "event_bounds_many", "events_after_many", "job_scopes"]

#: Jobs per query (two bound parameters each stays under SQLite's oldest limit of 999).
CHUNK = 400


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def job_scopes(store: Store, job_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """``{job id: (project id, status)}`` of the jobs that exist."""
    found: dict[str, tuple[str, str]] = {}
    for part in _chunks(job_ids):
        marks = ",".join("?" * len(part))
        for job_id, project_id, status in store.query(
            f"SELECT id, project_id, status FROM jobs WHERE id IN ({marks})", part
        ):
            found[job_id] = (project_id, status)
    return found


def event_bounds_many(store: Store, job_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    """``{job id: (first kept seq, last seq)}`` of the jobs that have events."""
    found: dict[str, tuple[int, int]] = {}
    for part in _chunks(job_ids):
        marks = ",".join("?" * len(part))
        for job_id, first, last in store.query(
            f"SELECT job_id, MIN(seq), MAX(seq) FROM events WHERE job_id IN ({marks}) "
            "GROUP BY job_id",
            part,
        ):
            found[job_id] = (int(first), int(last))
    return found


def events_after_many(store: Store, cursors: Mapping[str, int]) -> dict[str, Rows]:
    """``{job id: its events with seq > its cursor, in seq order}`` (jobs with none left out).

    Unbounded per job: call it for cursors the job's last id is close to.
    """
    found: dict[str, Rows] = {}
    count = 0
    for part in _chunks(list(cursors)):
        values = ",".join("(?,?)" for _ in part)
        params: list[object] = []
        for job_id in part:
            params += (job_id, cursors[job_id])
        rows = store.query(
            f"WITH c(job, after) AS (VALUES {values}) SELECT e.job_id, e.seq, e.type, "
            "e.payload FROM c JOIN events e ON e.job_id = c.job AND e.seq > c.after "
            "ORDER BY e.job_id, e.seq",
            params,
        )
        for job_id, seq, kind, payload in rows:
            found.setdefault(job_id, []).append((seq, kind, payload))
        count += len(rows)
    if store.observer is not None and count:
        store.observer.on_read(count)
    return found
