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
from typing import TYPE_CHECKING, TypeAlias, TypeVar

import trio

from .._errors import ConfigError
from ._filelock import FileLock, read_note, try_lock_file
from ._store import Cursor, Lease, LeaseLost, default_holder, keep_lease

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractAsyncContextManager

__all__ = ["FileCursorStore"]

_T = TypeVar("_T")

log = logging.getLogger("arkor_trio.stream")

_State: TypeAlias = tuple[dict[str, str], set[str], dict[str, int]]

_SHAPE = "{'cursors': {key: event id}, 'finished': [key, ...], 'tokens': {key: int}}"


class FileCursorStore:
    """Cursors in a JSON file shared by any number of processes and store objects.

    Every commit is a read-modify-write under an exclusive ``flock`` on ``<path>.lock``: the
    file is re-read under the lock and changed; the new state is written to ``<path>.tmp``, the
    file is renamed to ``<path>.prev`` and ``<path>.tmp`` to ``<path>``. No process erases
    another's cursors, and ``load``/``finished`` (under a shared lock) see every commit that
    returned, whichever process made it. A file left empty or cut short by a crash is recovered
    from ``<path>.prev`` instead of refusing to open. One follower per key at a time: a
    :meth:`lease` locks ``<path>.followers/<hash of the key>`` (a lock the kernel drops when its
    process dies, and that a forked child does not keep) and bumps the key's token in the file
    (``"tokens"``); a commit carrying a lease whose token is no longer current raises
    ``LeaseLost`` and writes nothing.

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
        self._cache: tuple[str, dict[str, str], set[str], dict[str, int]] | None = None
        #: Releases of the claims this object holds for leases, by token.
        self._claims: dict[tuple[str, int], Callable[[], None]] = {}
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

    def _parse(self, path: Path) -> tuple[_State | None, str | None]:
        """(state, None), (None, None) when missing, or (None, what is wrong)."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None, None
        except (OSError, UnicodeDecodeError) as exc:
            return None, f"cannot be read ({exc})"
        cache = self._cache
        if cache is not None and path == self.path and text == cache[0]:
            return (cache[1], cache[2], cache[3]), None  # unchanged since this object read it
        if not text.strip():
            return None, "is empty"
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            return None, f"is not valid JSON ({exc})"
        cursors = data.get("cursors") if isinstance(data, dict) else None
        finished = data.get("finished", []) if isinstance(data, dict) else None
        tokens = data.get("tokens", {}) if isinstance(data, dict) else None
        if (  # JSON object keys are always strings
            not isinstance(cursors, dict)
            or not set(map(type, cursors.values())) <= {str}
            or not isinstance(finished, list)
            or not set(map(type, finished)) <= {str}
            or not isinstance(tokens, dict)
            or not set(map(type, tokens.values())) <= {int}
        ):
            return None, f"does not hold {_SHAPE}"
        state = (cursors, set(finished), tokens)
        if path == self.path:
            self._cache = (text, *state)
        return state, None

    def _read(self) -> tuple[dict[str, str], set[str], dict[str, int], str]:
        """The state (caller holds the lock) and where it came from: ``"path"`` (the file is
        intact), ``"fresh"`` (no file: start over) or ``"recovered"`` (after a crash)."""
        state, problem = self._parse(self.path)
        if state is not None:
            return *state, "path"
        if problem is None:  # no file: a fresh start, or a crash between the two renames
            if not self._tmp.exists():
                return {}, set(), {}, "fresh"
            for candidate in (self._tmp, self._prev):  # the newest complete state first
                kept, _ = self._parse(candidate)
                if kept is not None:
                    return *kept, "recovered"
            return {}, set(), {}, "fresh"
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
            return {}, set(), {}, "recovered"
        raise ConfigError(
            f"cursor file {self.path} {problem}"
            + (f", and its previous version {self._prev} {kept_problem}" if kept_problem else "")
            + f"; a cursor file holds {_SHAPE}. Delete both files to start over (every job "
            "is then followed from its first event)",
            field="path",
        )

    # --- the store protocol (design.md section 14) --------------------------------------------

    async def _call(self, fn: Callable[[], _T]) -> _T:
        if not self.blocking:
            await trio.lowlevel.checkpoint_if_cancelled()
            return fn()
        with trio.CancelScope(shield=True):  # once called, a commit happens
            result = await trio.to_thread.run_sync(fn)
        return result

    async def load(self, key: str) -> Cursor:
        """See :class:`~arkor_trio.stream.CursorStore` (sees every other process's commits)."""
        return await self._call(lambda: self.peek(key))

    async def commit(
        self,
        key: str,
        cursor_id: str | None,
        *,
        finished: bool = False,
        lease: Lease | None = None,
    ) -> None:
        """See :class:`~arkor_trio.stream.CursorStore`: one atomic replacement of the file,
        under the exclusive lock; a stale ``lease`` token raises ``LeaseLost``, nothing
        written."""
        await self._call(lambda: self.commit_nowait(key, cursor_id, finished=finished, lease=lease))

    def lease(self, key: str, *, ttl: float) -> AbstractAsyncContextManager[Lease]:
        """See :class:`~arkor_trio.stream.CursorStore`.

        The lease is the key's claim (an ``flock`` the kernel drops when its process dies, and
        that a forked child does not keep: see :mod:`._filelock`) plus a token counter in the
        file, bumped at every acquisition. A renewal checks that the token is still this
        holder's.
        """
        holder = default_holder()

        async def acquire() -> Lease | None:
            return await self._call(lambda: self._acquire(key, holder, ttl))

        async def renew(lease: Lease) -> bool:
            return await self._call(lambda: self.peek_token(key) == lease.token)

        async def release(lease: Lease) -> None:
            done = self._claims.pop((key, lease.token), None)
            if done is not None:
                done()
            await trio.lowlevel.checkpoint()

        return keep_lease(
            key,
            ttl=ttl,
            acquire=acquire,
            renew=renew,
            release=release,
            describe=lambda: self.claim_holder(key),
        )

    def _acquire(self, key: str, holder: str, ttl: float) -> Lease | None:
        release = self.try_claim(key)
        if release is None:
            return None
        try:
            with self._lock.hold(exclusive=True):
                cursors, done, tokens, source = self._read()
                self._cache = None
                tokens[key] = token = tokens.get(key, 0) + 1
                self._store_state(cursors, done, tokens, source)
        except BaseException:
            release()
            raise
        self._claims[(key, token)] = release
        return Lease(key, token, holder, ttl)

    # --- sync helpers (tools, tests, the older surface) ----------------------------------------

    def peek(self, key: str) -> Cursor:
        """The committed state of ``key`` now (sync; blocks on the file lock)."""
        with self._lock.hold(exclusive=False):
            cursors, done, _, _ = self._read()
        return Cursor(cursors.get(key), key in done)

    def peek_token(self, key: str) -> int:
        """The key's current lease token (0: never leased)."""
        with self._lock.hold(exclusive=False):
            return self._read()[2].get(key, 0)

    def finished(self, job_id: str) -> bool:
        """Older surface: ``peek(job_id).finished``."""
        return self.peek(job_id).finished

    def save(self, job_id: str, cursor: str) -> None:
        """Older surface: ``commit_nowait(job_id, cursor)``."""
        self.commit_nowait(job_id, cursor)

    def mark_finished(self, job_id: str) -> None:
        """Older surface: ``commit_nowait(job_id, None, finished=True)``."""
        self.commit_nowait(job_id, None, finished=True)

    def commit_nowait(
        self,
        key: str,
        cursor_id: str | None,
        *,
        finished: bool = False,
        lease: Lease | None = None,
    ) -> None:
        """:meth:`commit` from sync code (blocks for the write)."""
        with self._lock.hold(exclusive=True):
            cursors, done, tokens, source = self._read()
            if lease is not None and tokens.get(key, 0) != lease.token:
                raise LeaseLost(
                    f"commit of {key!r} refused: lease token {lease.token} is stale "
                    f"(current {tokens.get(key, 0)})",
                    key=key,
                )
            self._cache = None  # the state changes below, and the write may fail
            if cursor_id is not None:
                cursors[key] = cursor_id
            if finished:
                done.add(key)
            self._store_state(cursors, done, tokens, source)

    def _store_state(
        self, cursors: dict[str, str], done: set[str], tokens: dict[str, int], source: str
    ) -> None:
        state: dict[str, object] = {"version": 1, "cursors": cursors, "finished": sorted(done)}
        if tokens:
            state["tokens"] = tokens
        payload = json.dumps(state)
        self._write(payload, source)
        self._cache = (payload, cursors, done, tokens)

    def _write(self, payload: str, source: str) -> None:
        """Write ``.tmp``, move the intact file to ``.prev``, move ``.tmp`` to the file.

        The caller holds the exclusive lock, so no reader sees the instant between the two
        renames; a crash there leaves no file but a complete ``.tmp``, which :meth:`_read`
        takes. (Two renames are also cheaper than one rename over the file on ext4, whose
        replace-over-rename heuristic flushes the new file's data at once.)
        """
        try:
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
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
        self._followers.mkdir(exist_ok=True)
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
