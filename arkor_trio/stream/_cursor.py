"""Cursor stores: where a trainer remembers the last event id it dispatched, per job.

``MemoryCursorStore`` lives as long as the process; ``FileCursorStore`` survives restarts, so
``Trainer.attach`` resumes after the last dispatched event without dispatching anything twice.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

from .._errors import ConfigError

__all__ = [
    "CursorStore",
    "FileCursorStore",
    "MemoryCursorStore",
    "is_finished",
    "mark_finished",
]


@runtime_checkable
class CursorStore(Protocol):
    """Where committed cursors are kept. Implementations must be cheap: ``save`` runs per event."""

    def load(self, job_id: str) -> str | None:
        """The committed cursor of ``job_id``, or None when nothing was dispatched yet."""
        ...

    def save(self, job_id: str, cursor: str) -> None:
        """Commit ``cursor`` as the last dispatched event id of ``job_id``."""
        ...


def is_finished(store: CursorStore, job_id: str) -> bool:
    """True when ``store`` records that ``job_id``'s terminal callback already ran.

    Stores may implement ``finished(job_id) -> bool`` and ``mark_finished(job_id)``; both built-in
    stores do. Without them a store only knows cursors.
    """
    finished = getattr(store, "finished", None)
    return bool(finished(job_id)) if callable(finished) else False


def mark_finished(store: CursorStore, job_id: str) -> None:
    """Record that ``job_id``'s terminal callback ran, if ``store`` can."""
    mark = getattr(store, "mark_finished", None)
    if callable(mark):
        mark(job_id)


class MemoryCursorStore:
    """Cursors in a dict: per process."""

    def __init__(self) -> None:
        self._cursors: dict[str, str] = {}
        self._finished: set[str] = set()

    def load(self, job_id: str) -> str | None:
        """See :meth:`CursorStore.load`."""
        return self._cursors.get(job_id)

    def save(self, job_id: str, cursor: str) -> None:
        """See :meth:`CursorStore.save`."""
        self._cursors[job_id] = cursor

    def finished(self, job_id: str) -> bool:
        """True once :meth:`mark_finished` was called for ``job_id``."""
        return job_id in self._finished

    def mark_finished(self, job_id: str) -> None:
        """Record that the job's terminal callback ran."""
        self._finished.add(job_id)

    def __repr__(self) -> str:
        return f"MemoryCursorStore({len(self._cursors)} jobs)"


class FileCursorStore:
    """Cursors in a JSON file, replaced atomically (write a temp file, then rename) on every save.

    A crash leaves either the old or the new file, never a torn one. With ``fsync=True`` each save
    is also flushed to disk (survives power loss; costs about a disk sync per event).

    Args:
        path: The JSON file; its directory is created if missing.
        fsync: Flush each save to stable storage before the rename.

    Raises:
        ConfigError: The file exists but is not a cursor file, or cannot be read.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = Path(path)
        self._fsync = fsync
        self._lock = threading.Lock()
        self._cursors, self._finished = self._read()

    def _read(self) -> tuple[dict[str, str], set[str]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}, set()
        except OSError as exc:
            raise ConfigError(f"cannot read cursor file {self.path}: {exc}", field="path") from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(
                f"cursor file {self.path} is not valid JSON ({exc}); delete it to start over",
                field="path",
            ) from exc
        cursors = data.get("cursors") if isinstance(data, dict) else None
        finished = data.get("finished", []) if isinstance(data, dict) else None
        if (
            not isinstance(cursors, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in cursors.items())
            or not isinstance(finished, list)
            or not all(isinstance(j, str) for j in finished)
        ):
            raise ConfigError(
                f"cursor file {self.path} does not hold {{'cursors': {{job id: event id}}, "
                "'finished': [job id, ...]}",
                field="path",
            )
        return dict(cursors), set(finished)

    def load(self, job_id: str) -> str | None:
        """See :meth:`CursorStore.load`."""
        return self._cursors.get(job_id)

    def save(self, job_id: str, cursor: str) -> None:
        """See :meth:`CursorStore.save`; the file is replaced atomically."""
        with self._lock:
            self._cursors[job_id] = cursor
            self._write()

    def finished(self, job_id: str) -> bool:
        """True once :meth:`mark_finished` was called for ``job_id`` (by any process)."""
        return job_id in self._finished

    def mark_finished(self, job_id: str) -> None:
        """Record, durably, that the job's terminal callback ran."""
        with self._lock:
            self._finished.add(job_id)
            self._write()

    def _write(self) -> None:
        """Replace the file atomically (caller holds the lock)."""
        state = {"version": 1, "cursors": self._cursors, "finished": sorted(self._finished)}
        payload = json.dumps(state, sort_keys=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(payload)
                if self._fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __repr__(self) -> str:
        return f"FileCursorStore({str(self.path)!r})"
