"""``FileCursorStore``: cursors in a JSON file that any number of processes share safely.

See :class:`FileCursorStore` for the protocol on disk and what each mode survives.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from .._errors import ConfigError
from ._filelock import FileLock, open_regular, read_note, read_regular, try_lock_file

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["FileCursorStore"]

log = logging.getLogger("arkor_trio.stream")

_SHAPE = "{'cursors': {key: event id}, 'finished': [key, ...]}"


class FileCursorStore:
    """Cursors in a JSON file shared by any number of processes and store objects.

    Every commit is a read-modify-write under an exclusive ``flock`` on ``<path>.lock``: the
    file is re-read under the lock and changed; the new state is written to ``<path>.tmp``, the
    file is renamed to ``<path>.prev`` and ``<path>.tmp`` to ``<path>``. No process erases
    another's cursors, and ``load``/``finished`` (under a shared lock) see every commit that
    returned, whichever process made it. A file left empty or cut short by a crash is recovered
    from ``<path>.prev`` instead of refusing to open. One follower per key at a time:
    ``try_claim`` locks ``<path>.followers/<hash of the key>``, a lock the kernel drops when its
    process dies.

    What each mode survives:

    * ``fsync=False`` (default): any process crash at any instant (``kill -9``, ``os._exit``):
      every commit that returned is in the file. A power loss or OS crash may lose the commits
      of the last seconds (the kernel's write-back delay): those events are handled again after
      the restart; a damaged file is recovered from ``.prev``; if both copies are damaged,
      opening raises ``ConfigError`` naming them.
    * ``fsync=True``: also a power loss: a commit returns only after the new file and the
      directory entry are on stable storage (file ``fsync``, then directory ``fsync``). Costs
      a disk sync per commit, which runs in a worker thread (``blocking`` is true).

    Args:
        path: The JSON file; its directory is created if missing.
        fsync: Flush each commit to stable storage before returning.

    Raises:
        ConfigError: The file exists but is not a cursor file (and no good ``.prev`` is kept),
            or cannot be read.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.blocking = fsync
        self._fsync = fsync
        self._prev = self.path.with_name(self.path.name + ".prev")
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._followers = self.path.with_name(self.path.name + ".followers")
        self._warned = False
        # The file's text as this object last read or wrote it, and its parsed state: a commit
        # re-reads the file under the lock, but parses it only if another writer changed it.
        self._cache: tuple[str, dict[str, str], set[str]] | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the directory of {self.path}: {exc}", field="path"
            ) from exc
        self._lock = FileLock(self.path.with_name(self.path.name + ".lock"))
        with self._lock.hold(exclusive=False):
            self._read()  # a foreign or unreadable file is an error now, not at the first event

    # --- reading -----------------------------------------------------------------------------

    def _parse(self, path: Path) -> tuple[tuple[dict[str, str], set[str]] | None, str | None]:
        """(state, None), (None, None) when missing, or (None, what is wrong)."""
        try:  # the cursor file may be a link of the user's; .tmp and .prev are the store's own
            text = read_regular(path, follow=path == self.path)
        except FileNotFoundError:
            return None, None
        except ConfigError as exc:  # a FIFO, a directory, a planted link: refused, not waited on
            return None, str(exc).removeprefix(f"{path} ")
        except (OSError, UnicodeDecodeError) as exc:
            return None, f"cannot be read ({exc})"
        cache = self._cache
        if cache is not None and path == self.path and text == cache[0]:
            return (cache[1], cache[2]), None  # unchanged since this object read or wrote it
        if not text.strip():
            return None, "is empty"
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            return None, f"is not valid JSON ({exc})"
        cursors = data.get("cursors") if isinstance(data, dict) else None
        finished = data.get("finished", []) if isinstance(data, dict) else None
        if (  # JSON object keys are always strings
            not isinstance(cursors, dict)
            or not set(map(type, cursors.values())) <= {str}
            or not isinstance(finished, list)
            or not set(map(type, finished)) <= {str}
        ):
            return None, f"does not hold {_SHAPE}"
        state = (cursors, set(finished))
        if path == self.path:
            self._cache = (text, *state)
        return state, None

    def _read(self) -> tuple[dict[str, str], set[str], str]:
        """The state (caller holds the lock) and where it came from: ``"path"`` (the file is
        intact), ``"fresh"`` (no file: start over) or ``"recovered"`` (after a crash)."""
        state, problem = self._parse(self.path)
        if state is not None:
            return *state, "path"
        if problem is None:  # no file: a fresh start, or a crash between the two renames
            if not self._tmp.exists():
                return {}, set(), "fresh"
            for candidate in (self._tmp, self._prev):  # the newest complete state first
                kept, _ = self._parse(candidate)
                if kept is not None:
                    return *kept, "recovered"
            return {}, set(), "fresh"
        kept, kept_problem = self._parse(self._prev)
        if kept is not None:
            if not self._warned:
                self._warned = True
                log.warning(
                    "cursor file %s %s (a crash during a write?); using its previous version %s",
                    self.path,
                    problem,
                    self._prev,
                )
            return *kept, "recovered"
        if problem == "is empty" and kept_problem is None:  # the first write was lost
            return {}, set(), "recovered"
        raise ConfigError(
            f"cursor file {self.path} {problem}"
            + (f", and its previous version {self._prev} {kept_problem}" if kept_problem else "")
            + f"; a cursor file holds {_SHAPE}. Delete both files to start over (every job "
            "is then followed from its first event)",
            field="path",
        )

    def load(self, job_id: str) -> str | None:
        """See :meth:`CursorStore.load` (sees every other process's commits)."""
        with self._lock.hold(exclusive=False):
            return self._read()[0].get(job_id)

    def finished(self, job_id: str) -> bool:
        """True once a commit marked ``job_id`` finished, in any process."""
        with self._lock.hold(exclusive=False):
            return job_id in self._read()[1]

    # --- writing -----------------------------------------------------------------------------

    def save(self, job_id: str, cursor: str) -> None:
        """See :meth:`CursorStore.save`: ``commit(job_id, cursor)``."""
        self.commit(job_id, cursor)

    def mark_finished(self, job_id: str) -> None:
        """``commit(job_id, None, finished=True)``."""
        self.commit(job_id, None, finished=True)

    def commit(self, key: str, cursor: str | None, *, finished: bool = False) -> None:
        """Record ``cursor`` (None: unchanged) and, if ``finished``, the finished mark, in one
        atomic replacement of the file, under the exclusive lock."""
        with self._lock.hold(exclusive=True):
            cursors, done, source = self._read()
            self._cache = None  # the state changes below, and the write may fail
            if cursor is not None:
                cursors[key] = cursor
            if finished:
                done.add(key)
            state = {"version": 1, "cursors": cursors, "finished": sorted(done)}
            payload = json.dumps(state)
            self._write(payload, source)
            self._cache = (payload, cursors, done)

    def _write(self, payload: str, source: str) -> None:
        """Write ``.tmp``, move the intact file to ``.prev``, move ``.tmp`` to the file.

        The caller holds the exclusive lock, so no reader sees the instant between the two
        renames; a crash there leaves no file but a complete ``.tmp``, which :meth:`_read`
        takes. (Two renames are also cheaper than one rename over the file on ext4, whose
        replace-over-rename heuristic flushes the new file's data at once.)
        """
        # A link planted as .tmp is refused, not written through; a directory or FIFO too.
        fd = open_regular(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            try:
                os.write(fd, payload.encode("utf-8"))
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if source == "path":  # the intact file becomes the kept previous version
                os.replace(self.path, self._prev)
            elif source == "fresh":  # no file: an old .prev is stale
                self._prev.unlink(missing_ok=True)
            os.replace(self._tmp, self.path)
        except BaseException:
            if self.path.exists():  # else the .tmp may be all that is left of the state
                self._tmp.unlink(missing_ok=True)
            raise
        if self._fsync:
            _fsync_dir(self.path.parent)

    # --- one follower per key ----------------------------------------------------------------

    def _claim_path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:40]
        return self._followers / f"{digest}.lock"

    def try_claim(self, key: str) -> Callable[[], None] | None:
        """Claim ``key`` for this follower; None while a live follower (any process) has it.

        The claim is an ``flock`` the kernel drops when its process dies, so a follower that
        crashed never blocks the key. Returns the function that releases it.
        """
        try:
            self._followers.mkdir(exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create {self._followers}: {exc.strerror}", field="path"
            ) from exc
        note = f"pid {os.getpid()} on {socket.gethostname()}"
        return try_lock_file(self._claim_path(key), note)

    def claim_holder(self, key: str) -> str:
        """Who holds ``key``'s claim, as it wrote it ("pid N on host"), or ""."""
        return read_note(self._claim_path(key))

    def __repr__(self) -> str:
        return f"FileCursorStore({str(self.path)!r})"


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where directories cannot open)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
