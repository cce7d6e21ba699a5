"""SQLite persistence for the local backend: jobs and their append-only event log.

One file, ``<data_dir>/arkor-local.sqlite3``, in WAL mode. Each event gets a per-job sequence
number (1, 2, 3, ...) that the stream sends as its SSE id. Appending an event and updating the
job row it implies (``training.started`` -> running, a terminal event -> that status) happen in
one transaction, so a reader that sees a terminal status always finds the terminal event too.
Nothing is appended after a job's terminal event.

Threading: all writes go through one connection guarded by a lock (training threads and the
event loop both append; SQLite serialises writers anyway). A write can wait (another process
holds SQLite's write lock, up to ``busy_timeout`` seconds) so the event loop never calls one
directly: it goes through :meth:`Store.in_thread`. Reads made on the event-loop thread use a
second connection that never takes the lock, so they never wait for a writer (WAL readers see the
last committed state); a 1000-row page read is ~1.5 ms, cheaper on the loop than a thread hop.

Failures: a write that SQLite refuses (disk full, the database locked for longer than
``busy_timeout``, an I/O error) rolls back and raises :class:`StoreError`, whose message starts
with the reason in plain words (``"disk full: ..."``, ``"database locked: ..."``).

Durability: ``synchronous=NORMAL`` in WAL mode: a commit is atomic and survives a process
crash, but the last commits before a power loss (events a stream may already have sent) can be
lost. Event ids are still never reused: the event that recovery appends after a restart
(:func:`~arkor_trio.server._runner.recover_unfinished`) skips :data:`RECOVERY_ID_GAP` ids, more
than one job can ever have appended. (``synchronous=FULL`` would make every commit durable but
costs an fsync each: ~3.5 ms instead of ~70 us per append on the dev box, capping concurrent jobs
at ~300 events/s in all.)

Files are private to the user: the database (and the ``-wal``/``-shm`` files SQLite gives the
same mode) is created 0600.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from contextlib import suppress
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import trio

from ._projects_schema import PROJECTS_SCHEMA, ensure_default_project
from ._redact import redact_config
from ._rows import JobRow as JobRow
from ._rows import dump_json as dump_json
from ._rows import job_to_wire as job_to_wire
from ._rows import utc_now as utc_now
from ._store_errors import StoreClosed as StoreClosed
from ._store_errors import StoreError as StoreError
from ._store_errors import store_error

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from pathlib import Path

_T = TypeVar("_T")

__all__ = [
    "RECOVERY_ID_GAP",
    "TERMINAL_EVENT_STATUS",
    "TERMINAL_STATUSES",
    "JobRow",
    "Store",
    "StoreClosed",
    "StoreError",
    "StoreObserver",
    "dump_json",
    "job_to_wire",
    "utc_now",
]

DB_NAME = "arkor-local.sqlite3"
#: Ids an event appended by recovery skips: more than any one job appends (the engine's step
#: bound times its events per step), so no id a stream sent before a crash is ever reused.
RECOVERY_ID_GAP = 2**32
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
#: Terminal event type -> the job status it sets.
TERMINAL_EVENT_STATUS = {
    "training.completed": "completed",
    "training.failed": "failed",
    "training.cancelled": "cancelled",
}

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS jobs (
    num INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    error TEXT,
    created_at TEXT NOT NULL,
    started_at TEXT,
    completed_at TEXT,
    artifacts TEXT
);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
"""
    + PROJECTS_SCHEMA
)

_EVENT_TYPE = re.compile(r"[A-Za-z0-9_.-]+")
_JOB_COLUMNS = (
    "id, org_id, project_id, name, status, config, error, created_at, started_at, completed_at, "
    "artifacts"
)


class StoreObserver(Protocol):
    """What a :class:`Store` reports as it works (the backend's metrics implement it)."""

    def on_write(self, seconds: float) -> None:
        """A write transaction committed after ``seconds``."""

    def on_refused(self, reason: str) -> None:
        """SQLite refused a write (the :class:`StoreError`'s ``reason``)."""

    def on_appended(self, count: int) -> None:
        """``count`` events were appended in one transaction."""

    def on_read(self, count: int) -> None:
        """``count`` events were read for followers (:meth:`Store.events_after`)."""


class Store:
    """Jobs and events in one SQLite file (see the module docstring for the threading rules).

    Args:
        path: The database file (created with its tables when missing).
        on_append: Called with the job id after every committed append, from the appending
            thread and outside the lock (the event hub uses it to wake stream followers).
        retain_events: None keeps every event; N keeps only the last N events of each job
            (older ones are deleted in the appending transaction; ids never restart; what a
            follower then gets is :func:`~._replay.resolve_cursor`'s).
        observer: Told of every write's duration, refused write, append and follower read
            (the backend's ``/metrics``); called from the writing thread.
    """

    def __init__(
        self,
        path: Path,
        *,
        on_append: Callable[[str], None] | None = None,
        busy_timeout: float = 5.0,
        retain_events: int | None = None,
        observer: StoreObserver | None = None,
    ) -> None:
        if retain_events is not None and retain_events < 1:
            raise ValueError(f"retain_events must be None or >= 1, got {retain_events!r}")
        self.path = path
        self.on_append = on_append
        self.busy_timeout = busy_timeout
        self.retain_events = retain_events
        self.observer = observer
        self._lock = threading.Lock()
        self._closed = False
        # Loop-side writes wait for a thread here (cancellable) rather than for the lock.
        self._limiter = trio.CapacityLimiter(2)
        _private_file(path)
        self._writer = self._connect(busy_timeout)
        self._writer.executescript(_SCHEMA)
        ensure_default_project(self._writer)
        # Reads never wait for a writer in WAL mode; a short timeout bounds the rare cases
        # (WAL recovery) where they must, since they run on the event loop.
        self._reader = self._connect(min(busy_timeout, 0.2))

    def _connect(self, busy_timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @classmethod
    def in_dir(cls, data_dir: Path, **kwargs: Any) -> Store:
        """Open (or create) the store of a data directory."""
        return cls(data_dir / DB_NAME, **kwargs)

    def close(self) -> None:
        """Close both connections; later writes raise :class:`StoreClosed`. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._reader.close()
            self._writer.close()

    # --- writes ---------------------------------------------------------------------------

    def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._lock:
            if self._closed:
                raise StoreClosed("the local backend's store is closed")
            conn = self._writer
            started = time.perf_counter()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        with suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                error = store_error(exc, self.path, self.busy_timeout)
                if self.observer is not None:
                    self.observer.on_refused(error.reason)
                raise error from exc
            if self.observer is not None:
                self.observer.on_write(time.perf_counter() - started)
            return result

    async def in_thread(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
        """Run a write (``store.append``, ...) in a worker thread: the event loop's way to write.

        Raises whatever ``fn`` raises (:class:`StoreError`, :class:`StoreClosed`).
        """
        return await trio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self._limiter)

    def create_job(
        self, *, job_id: str, org_id: str, project_id: str, name: str, config: Mapping[str, Any]
    ) -> None:
        """Insert a new ``queued`` job (secrets in its config are not stored: see ``_redact``)."""
        row = (
            job_id,
            org_id,
            project_id,
            name,
            "queued",
            dump_json(redact_config(config)),
            utc_now(),
        )
        self._write(
            lambda c: c.execute(
                "INSERT INTO jobs (id, org_id, project_id, name, status, config, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        )

    def append(self, job_id: str, payload: Mapping[str, Any], *, skip: int = 0) -> int | None:
        """Append one event (adding ``jobId`` and ``timestamp``) and update the job row.

        Args:
            job_id: The job.
            payload: The event without ``jobId``/``timestamp``; must have a string ``type``.
            skip: Leave this many ids unused before it (recovery: see :data:`RECOVERY_ID_GAP`).

        Returns:
            The event's sequence number, or None when the job is unknown or already terminal
            (nothing is written then).

        Raises:
            ValueError: ``payload`` has no string ``type``.
            StoreClosed: The store was closed.
        """
        return self.append_many(job_id, [payload], skip=skip)

    def append_many(
        self, job_id: str, payloads: Iterable[Mapping[str, Any]], *, skip: int = 0
    ) -> int | None:
        """Append several events in one transaction (as :meth:`append` each, but one commit).

        Events after a terminal one are dropped; ``skip`` ids are left unused before the first.
        Returns the last sequence number written, or None when nothing was.
        """
        timestamp = utc_now()
        rows = []
        for payload in payloads:
            event_type = payload.get("type")
            if not isinstance(event_type, str) or not _EVENT_TYPE.fullmatch(event_type):
                raise ValueError(f"event payload needs a dotted-name 'type', got {event_type!r}")
            data = {**payload, "jobId": job_id, "timestamp": timestamp}
            rows.append((event_type, data, dump_json(data)))

        written = 0

        def txn(conn: sqlite3.Connection) -> int | None:
            nonlocal written
            found = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if found is None:
                return None
            status = found[0]
            (seq,) = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM events WHERE job_id = ?", (job_id,)
            ).fetchone()
            seq += skip
            last = None
            for event_type, data, text in rows:
                if status in TERMINAL_STATUSES:
                    break
                seq += 1
                conn.execute(
                    "INSERT INTO events (job_id, seq, type, payload) VALUES (?, ?, ?, ?)",
                    (job_id, seq, event_type, text),
                )
                status = self._update_job(conn, job_id, status, event_type, data, timestamp)
                last = int(seq)
                written += 1
            if last is not None and self.retain_events is not None:
                # The last N *events*, not the ids above last - N: recovery's id gap would
                # otherwise take every earlier event with it.
                conn.execute(
                    "DELETE FROM events WHERE job_id = ? AND seq < (SELECT seq FROM events "
                    "WHERE job_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                    (job_id, job_id, self.retain_events - 1),
                )
            return last

        seq: int | None = self._write(txn)
        if seq is not None and self.observer is not None:
            self.observer.on_appended(written)
        if seq is not None and self.on_append is not None:
            self.on_append(job_id)
        return seq

    @staticmethod
    def _update_job(
        conn: sqlite3.Connection,
        job_id: str,
        status: str,
        event_type: str,
        data: Mapping[str, Any],
        timestamp: str,
    ) -> str:
        """Apply an event's effect on its job row; returns the job's new status."""
        if event_type == "training.started" and status == "queued":
            conn.execute(
                "UPDATE jobs SET status = 'running', started_at = ? WHERE id = ?",
                (timestamp, job_id),
            )
            return "running"
        if event_type in TERMINAL_EVENT_STATUS:
            error = data.get("error") if event_type == "training.failed" else None
            artifacts = None
            if event_type == "training.completed":
                found = data.get("artifacts")
                artifacts = dump_json(found if isinstance(found, list) else [])
            conn.execute(
                "UPDATE jobs SET status = ?, completed_at = ?, error = ?, artifacts = ? "
                "WHERE id = ?",
                (
                    TERMINAL_EVENT_STATUS[event_type],
                    timestamp,
                    None if error is None else str(error),
                    artifacts,
                    job_id,
                ),
            )
            return TERMINAL_EVENT_STATUS[event_type]
        return status

    def job_status_any_thread(self, job_id: str) -> str | None:
        """The job's status, read under the writer lock (safe from worker threads)."""
        with self._lock:
            if self._closed:
                raise StoreClosed("the local backend's store is closed")
            try:
                found = self._writer.execute(
                    "SELECT status FROM jobs WHERE id = ?", (job_id,)
                ).fetchone()
            except sqlite3.Error as exc:
                raise store_error(exc, self.path, self.busy_timeout) from exc
        return None if found is None else str(found[0])

    def unfinished_jobs(self) -> list[str]:
        """Ids of jobs still ``queued`` or ``running``, oldest first."""
        rows = self._reader.execute(
            "SELECT id FROM jobs WHERE status IN ('queued', 'running') ORDER BY num"
        ).fetchall()
        return [r[0] for r in rows]

    # --- reads (event-loop thread) ----------------------------------------------------------

    def get_job(self, job_id: str) -> JobRow | None:
        """The job's row, or None when unknown."""
        row = self._reader.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        return None if row is None else tuple(row)

    def job_status(self, job_id: str) -> str | None:
        """The job's status, or None when unknown."""
        row = self._reader.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else str(row[0])

    def list_jobs(self) -> list[JobRow]:
        """Every job, newest first."""
        rows = self._reader.execute(f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY num DESC")
        return [tuple(r) for r in rows]

    def event_bounds(self, job_id: str) -> tuple[int, int] | None:
        """``(first kept seq, last seq)`` of a job's events, or None when it has none."""
        first, last = self._reader.execute(
            "SELECT MIN(seq), MAX(seq) FROM events WHERE job_id = ?", (job_id,)
        ).fetchone()
        return None if first is None else (int(first), int(last))

    def events_after(self, job_id: str, after: int, limit: int) -> list[tuple[int, str, str]]:
        """Up to ``limit`` events of a job with ``seq > after``: ``(seq, type, payload_json)``."""
        rows: list[tuple[int, str, str]] = self._reader.execute(
            "SELECT seq, type, payload FROM events WHERE job_id = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (job_id, after, limit),
        ).fetchall()
        if self.observer is not None:
            self.observer.on_read(len(rows))
        return rows

    def query(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """The rows of one read (the loop's reader connection; batched reads, _store_many)."""
        return self._reader.execute(sql, params).fetchall()

    def job_counts(self) -> dict[str, int]:
        """How many jobs have each status."""
        rows = self._reader.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        return {str(status): int(count) for status, count in rows}

    def payloads_of_type(self, job_id: str, kind: str, limit: int) -> list[str]:
        """The payloads (JSON text) of a job's first ``limit`` events of type ``kind``."""
        rows = self._reader.execute(
            "SELECT payload FROM events WHERE job_id = ? AND type = ? ORDER BY seq LIMIT ?",
            (job_id, kind, limit),
        ).fetchall()
        return [str(row[0]) for row in rows]


def _private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if missing, else set that mode (owner only)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    with suppress(OSError):  # not ours (e.g. shared read-only): SQLite reports what matters
        os.chmod(path, 0o600)
