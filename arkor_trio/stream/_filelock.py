"""Advisory file locks (``flock``) for the file cursor store, tied to the process that holds them.

A ``flock`` belongs to an open file description: the kernel drops it when the holder closes the
file or its process dies (``kill -9``, ``os._exit``, a crash), so a dead holder never blocks
anyone. Two ``open()`` calls conflict even inside one process, so two store objects on one file
exclude each other too. POSIX only: on Windows (no ``fcntl``) nothing is locked.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import threading
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

from .._errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

__all__ = ["FileLock", "open_regular", "read_note", "read_regular", "try_lock_file"]

_OPEN_FLAGS = os.O_RDWR | os.O_CREAT
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# O_NONBLOCK: opening a FIFO planted where a file is expected returns at once instead of
# waiting for a writer forever (on the event loop); the fstat check then refuses it.
_SAFE = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


def open_regular(path: Path, flags: int, *, follow: bool = False) -> int:
    """``os.open`` that refuses anything but a regular file, without blocking.

    Unless ``follow``, a symbolic link is refused too (``O_NOFOLLOW``): a link planted where
    the store keeps its own files (``.tmp``, ``.lock``, a claim) is never written through.

    Raises:
        ConfigError: ``path`` is a symbolic link, a directory, a FIFO or another non-file, or
            cannot be opened (permission denied, read-only file system...), naming ``path``.
        FileNotFoundError: ``path`` is missing (and ``flags`` do not create it).
    """
    try:
        fd = os.open(path, flags | _SAFE | (0 if follow else _NOFOLLOW), 0o600)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            detail = "is a symbolic link (refused: the store never writes through one)"
        elif exc.errno == errno.EISDIR:
            detail = "is a directory, not a regular file"
        elif exc.errno == errno.ENXIO:  # a FIFO opened for writing with no reader
            detail = "is a FIFO, not a regular file"
        else:
            detail = f"cannot be opened ({exc.strerror or exc})"
        raise ConfigError(f"{path} {detail}", field="path") from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
            kind = "a directory" if stat.S_ISDIR(mode) else kind
            raise ConfigError(f"{path} is {kind}, not a regular file", field="path")
        if flags & os.O_NONBLOCK == 0 and hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: Path, *, follow: bool = True) -> str:
    """The UTF-8 text of the regular file ``path`` (see :func:`open_regular` for refusals)."""
    fd = open_regular(path, os.O_RDONLY, follow=follow)
    with os.fdopen(fd, "rb") as file:
        return file.read().decode("utf-8")


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
            try:
                self._fd = open_regular(self.path, _OPEN_FLAGS)
            except ConfigError as exc:
                exc.add_note(
                    f"the store locks {self.path} even to read: it needs write access to "
                    f"{self.path.parent}"
                )
                raise
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
        fd = open_regular(path, _OPEN_FLAGS)
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
        fd = open_regular(path, os.O_RDONLY)
    except (OSError, ConfigError):
        return ""
    with os.fdopen(fd, "rb") as file:
        return file.read(800).decode("utf-8", "replace")[:200].strip()
