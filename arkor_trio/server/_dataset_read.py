"""Reading a dataset's bytes, bounded and stoppable: ``file://`` paths and loopback HTTP.

Both readers enforce the size bound while reading (never trusting ``st_size`` or
``Content-Length``) and check the stop flag between chunks, so a cancel takes effect within
about :data:`STOP_POLL` seconds whatever the source does:

- a ``file://`` path must be a regular file: it is opened non-blocking (a FIFO without a writer
  cannot hold the open) and checked with ``fstat`` on the opened descriptor, so a device, FIFO or
  directory is refused even if it replaced the file after the job was accepted;
- an HTTP dataset is fetched by a private trio run in the calling (worker) thread, under an
  overall deadline of :data:`HTTP_DEADLINE` seconds; a task polls the stop flag and cancels the
  transfer, which a blocking socket read could not do.

URLs in messages pass through :func:`redact_url`: a password or a query string can be a secret.
"""

from __future__ import annotations

import errno
import os
import stat
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import trio

from .._groups import collapse_groups

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "CHUNK_BYTES",
    "HTTP_DEADLINE",
    "STOP_POLL",
    "ReadError",
    "fetch_http",
    "file_path",
    "not_regular_problem",
    "read_file",
    "redact_url",
]

#: Bytes read per step; the stop flag is checked between steps.
CHUNK_BYTES = 1024 * 1024
#: How often the HTTP reader checks the stop flag, in seconds.
STOP_POLL = 0.05
#: The longest an HTTP dataset download may take, in seconds (then the job fails).
HTTP_DEADLINE = 120.0
_HTTP_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class ReadError(Exception):
    """The dataset could not be read; the message says why (URLs redacted)."""


def redact_url(url: str) -> str:
    """``url`` with its password and query string replaced by ``***`` (for messages and echoes)."""
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            user = parts.username or ""
            netloc = f"{user}:***@{netloc.rpartition('@')[2]}"
        query = "***" if parts.query else ""
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "<an unparseable URL>"


def file_path(url: str) -> Path:
    """The local path of a ``file://`` URL.

    Raises:
        ReadError: The path holds a NUL character (``%00``), which no file name can.
    """
    path = urllib.request.url2pathname(urllib.parse.urlsplit(url).path)
    if "\x00" in path:
        raise ReadError("the file path holds a NUL character (%00)")
    return Path(path)


def not_regular_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a dataset (it exists and is not a regular file), else None.

    A missing or unreadable path is not a problem here: the job reports it when it reads.
    """
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return None
    return _kind_problem(path, mode)


def _kind_problem(path: Path, mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return f"{path} is {kind}; a dataset must be a regular file"


def read_file(path: Path, should_stop: Callable[[], bool], max_bytes: int) -> bytearray | None:
    """The bytes of a regular file, read in chunks; None if ``should_stop()`` turned true.

    Raises:
        ReadError: Not a regular file, unreadable, or larger than ``max_bytes`` (found while
            reading, so a file that grows or lies about its size is caught too).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ReadError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        problem = _kind_problem(path, os.fstat(fd).st_mode)
        if problem is not None:
            raise ReadError(problem)
        data = bytearray()
        while True:
            if should_stop():
                return None
            try:
                chunk = os.read(fd, CHUNK_BYTES)
            except OSError as exc:
                if exc.errno == errno.EAGAIN:  # pragma: no cover - regular files never block
                    continue
                raise ReadError(f"cannot read {path}: {exc.strerror or exc}") from None
            if not chunk:
                return data
            data += chunk
            if len(data) > max_bytes:
                raise ReadError(f"{path} is larger than {max_bytes} bytes")
    finally:
        os.close(fd)


def fetch_http(
    url: str,
    token: str | None,
    should_stop: Callable[[], bool],
    max_bytes: int,
    *,
    deadline: float | None = None,
) -> bytearray | None:
    """GET ``url`` (blocking; call it from a worker thread); None if stopped meanwhile.

    Raises:
        ReadError: A status other than 200, a transport error, a body over ``max_bytes``, or
            the whole download taking longer than ``deadline`` (default :data:`HTTP_DEADLINE`).
    """
    limit = HTTP_DEADLINE if deadline is None else deadline
    return trio.run(_fetch, url, token, should_stop, max_bytes, limit)


async def _fetch(
    url: str, token: str | None, should_stop: Callable[[], bool], max_bytes: int, limit: float
) -> bytearray | None:
    shown = redact_url(url)
    result: bytearray | None = None

    async def watch_stop(scope: trio.CancelScope) -> None:
        # The flag is a plain callable set from another thread: polling is the only way.
        while not should_stop():  # noqa: ASYNC110
            await trio.sleep(STOP_POLL)
        scope.cancel()

    async def download(scope: trio.CancelScope) -> None:
        nonlocal result
        result = await _download(url, shown, token, max_bytes)
        scope.cancel()

    try:
        with trio.fail_after(limit), collapse_groups():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_stop, nursery.cancel_scope)
                nursery.start_soon(download, nursery.cancel_scope)
    except trio.TooSlowError:
        raise ReadError(f"GET {shown} did not finish within {limit:g} s") from None
    return result


async def _download(url: str, shown: str, token: str | None, max_bytes: int) -> bytearray:
    # identity: a compressed body would be inflated before the size bound could see it
    headers = {"Accept-Encoding": "identity"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = bytearray()
    try:
        async with (
            httpx.AsyncClient(timeout=_HTTP_TIMEOUT, follow_redirects=False) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            if response.status_code != 200:
                raise ReadError(f"GET {shown} answered HTTP {response.status_code}")
            async for chunk in response.aiter_bytes():  # as received, decoded: bound what we keep
                data += chunk
                if len(data) > max_bytes:
                    raise ReadError(f"{shown} is larger than {max_bytes} bytes")
    except httpx.HTTPError as exc:
        detail = str(exc).replace(url, shown)
        raise ReadError(f"GET {shown} failed: {type(exc).__name__}: {detail}") from None
    return data
