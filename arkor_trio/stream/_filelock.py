"""Advisory file locks (``flock``) for the file cursor store, tied to the process that holds them.

A ``flock`` belongs to an open file description: the kernel drops it when the holder closes the
file or its process dies (``kill -9``, ``os._exit``, a crash), so a dead holder never blocks
anyone. Two ``open()`` calls conflict even inside one process, so two store objects on one file
exclude each other too. POSIX only: on Windows (no ``fcntl``) nothing is locked.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

__all__ = ["FileLock", "read_note", "try_lock_file"]

_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)

#: Descriptors of the claims this process holds. ``O_CLOEXEC`` keeps them from a child that
#: execs, not from one that only forks: a forked child closes its copies at once (below), so
#: the claim stays its holder's alone and dies with it (issue 17, defect 9).
_HELD_CLAIMS: set[int] = set()


def _drop_claims_in_child() -> None:
    for fd in _HELD_CLAIMS:
        with suppress(OSError):
            os.close(fd)  # the child's copy only: the parent's lock stays, and ends with it
    _HELD_CLAIMS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_claims_in_child)


def _flock(fd: int, exclusive: bool, *, wait: bool = True) -> None:
    if sys.platform != "win32":
        import fcntl

        op = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        fcntl.flock(fd, op if wait else op | fcntl.LOCK_NB)


def _unlock(fd: int) -> None:
    if sys.platform != "win32":
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)


class FileLock:
    """A lock file guarding read-modify-writes of a data file across processes and threads.

    The file stays open (one descriptor per object, reopened after a fork so that a child never
    shares its parent's lock); a thread lock serialises the threads that share the object.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._pid = 0
        self._threads = threading.Lock()

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, _OPEN_FLAGS, 0o600)
            self._pid = os.getpid()
        return self._fd

    @contextmanager
    def hold(self, *, exclusive: bool) -> Iterator[None]:
        """Hold the lock, shared (readers) or exclusive (a read-modify-write)."""
        with self._threads:
            fd = self._descriptor()
            _flock(fd, exclusive)
            try:
                yield
            finally:
                _unlock(fd)

    def close(self) -> None:
        """Close the descriptor (it reopens on the next use)."""
        with self._threads:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        fd = self._fd
        if fd is not None and self._pid == os.getpid():
            with suppress(OSError):
                os.close(fd)


def try_lock_file(path: Path, note: str) -> Callable[[], None] | None:
    """Take an exclusive lock on ``path`` (created if missing) without waiting.

    Returns:
        None when another holder has it; else a function that releases it and removes the file.
        ``note`` (who holds it) is written into the file for a waiter's log message.
    """
    while True:
        fd = os.open(path, _OPEN_FLAGS, 0o600)
        try:
            _flock(fd, True, wait=False)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        # The previous holder removed the file between our open and our lock: take the new one.
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, note.encode("utf-8", "replace"))
    except OSError:
        pass  # the note is a courtesy; the lock is what counts
    _HELD_CLAIMS.add(fd)
    pid = os.getpid()

    def release() -> None:
        if os.getpid() != pid or fd not in _HELD_CLAIMS:
            return  # a forked child (its copy is closed already), or released before
        _HELD_CLAIMS.discard(fd)
        try:
            os.unlink(path)  # while still locked, so no one holds a lock on a removed file
        except OSError:
            pass  # gone already, or an OS that cannot remove an open file: it is reused
        finally:
            os.close(fd)

    return release


def read_note(path: Path) -> str:
    """What the holder of ``path`` wrote about itself ("" when unknown)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")[:200].strip()
    except OSError:
        return ""
