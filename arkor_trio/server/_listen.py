"""Serving connections so that no single connection can end the server.

hypercorn's own trio loop (``hypercorn.trio.serve``) runs each connection in one nursery with
the listener: an exception that escapes a connection's task (hypercorn issue #225: an upgrade
request with bytes after it in the same packet raises ``h11.LocalProtocolError``) cancels every
other connection and ends the server. Here each connection runs hypercorn's ``TCPServer`` in a
task of its own that contains whatever it raises: the failure is logged (rate-limited, a line per
kind of failure at most every :data:`LOG_EVERY` seconds), that socket is closed, and the server
keeps serving.

Accepting is ours too: when ``accept`` fails because the process is out of file descriptors
(EMFILE and its kin) it is retried every :data:`ACCEPT_RETRY` seconds and logged once per burst
(when it starts: refusals less than :data:`BURST_GAP` seconds apart are one burst), not once
per attempt.

A restart meets a herd: every client that followed a stream reconnects within a second or so of
the new process listening. The listen backlog is sized for it (:data:`DEFAULT_BACKLOG`, capped
by the kernel's ``net.core.somaxconn``: see :func:`listen_backlog`): when the accept queue is
full the kernel drops the SYN and the client's kernel sends it again only after 1 s (then 3 s,
7 s), which is what a herd of 1,000 against hypercorn's default of 100 cost. Each wake-up of the
accept loop takes up to :data:`ACCEPT_BURST` connections off the queue before it yields, so the
queue drains while the new connections' tasks start.

The WebSocket limits hypercorn does not enforce are added by :mod:`._ws_guard`.
"""

from __future__ import annotations

import errno
import logging
import time
from math import inf
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import repr_socket_addr, wrap_app

from ._admit import Admission, AdmittedStream
from ._ws_guard import GuardedConfig, install

if TYPE_CHECKING:
    import socket
    from collections.abc import Awaitable, Callable

    from starlette.types import ASGIApp

__all__ = [
    "ACCEPT_BURST",
    "ACCEPT_RETRY",
    "BURST_GAP",
    "DEFAULT_BACKLOG",
    "LOG_EVERY",
    "connection_logger",
    "listen_backlog",
    "serve_contained",
]

log = logging.getLogger("arkor_trio.server")

#: Seconds between accept attempts while the process is out of descriptors (or memory).
ACCEPT_RETRY = 0.1
#: Refused accepts less than this many seconds apart are one burst (logged once).
BURST_GAP = 10.0
#: A contained connection failure is logged at most once per this many seconds per kind.
LOG_EVERY = 60.0
#: The listen backlog asked for by default: room for a herd of reconnects after a restart.
DEFAULT_BACKLOG = 2048
#: Connections accepted per wake-up of the accept loop before it lets other tasks run.
ACCEPT_BURST = 64
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: A connection that failed between the handshake and ``accept`` (as trio's listener ignores).
_GONE_NAMES = ("ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET",
               "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH")  # fmt: skip
_GONE_BEFORE_ACCEPT = frozenset(getattr(errno, n) for n in _GONE_NAMES if hasattr(errno, n))
_SOMAXCONN = "/proc/sys/net/core/somaxconn"


def listen_backlog(requested: int, somaxconn_path: str = _SOMAXCONN) -> int:
    """The backlog to pass to ``listen``: ``requested``, capped by ``net.core.somaxconn``.

    (The kernel caps it silently; capping here makes the figure we log and report the one in
    force.) Where the limit cannot be read (not Linux), ``requested`` as is.
    """
    try:
        with open(somaxconn_path, encoding="ascii") as fh:
            limit = int(fh.read().strip())
    except (OSError, ValueError):
        return requested
    if requested > limit > 0:
        log.info(
            "listen backlog %d capped at %d by net.core.somaxconn (raise it with sysctl for "
            "herds of reconnects larger than that)",
            requested, limit,
        )  # fmt: skip
        return limit
    return requested


class _FailureLog:
    """Logs contained connection failures: the first of a kind, then a count per interval."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._since: dict[str, int] = {}

    def note(self, exc: BaseException) -> None:
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
        now = trio.current_time()
        last = self._last.get(kind)
        if last is not None and now - last < LOG_EVERY:
            self._since[kind] = self._since.get(kind, 0) + 1
            return
        more = self._since.pop(kind, 0)
        self._last[kind] = now
        log.warning(
            "closed a connection whose handling failed (%s: %s)%s; the server goes on",
            kind, str(exc)[:200],
            f"; {more} more like it since the last report" if more else "",
            exc_info=last is None,
        )  # fmt: skip


class _OncePerInterval(logging.Filter):
    """Passes a record of a kind (message and exception type) at most once per LOG_EVERY s."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[tuple[object, object], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.msg, record.exc_info[0] if record.exc_info else None)
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < LOG_EVERY:
            return False
        if len(self._last) > 256:
            self._last.clear()
        self._last[key] = now
        return True


def connection_logger() -> logging.Logger:
    """The logger for hypercorn's own errors: a kind at most once per :data:`LOG_EVERY` s.

    (A hostile client can make hypercorn log an error per connection; the log must not grow
    at the rate it sends packets.)
    """
    logger = logging.getLogger("arkor_trio.server.connections")
    if not any(isinstance(f, _OncePerInterval) for f in logger.filters):
        logger.addFilter(_OncePerInterval())
    return logger


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _stream(conn: socket.socket) -> trio.SocketStream:
    return trio.SocketStream(trio.socket.from_stdlib_socket(conn))


def _admitted(
    stream: trio.SocketStream, admission: Admission | None
) -> trio.abc.HalfCloseableStream:
    return stream if admission is None else AdmittedStream(stream, admission)


async def _accept_loop(
    sock: socket.socket,
    handle: Callable[[trio.abc.HalfCloseableStream], Awaitable[None]],
    nursery: trio.Nursery,
    admission: Admission | None = None,
) -> None:
    """Accept from the non-blocking listening ``sock`` until cancelled, a task per connection.

    Up to :data:`ACCEPT_BURST` connections per wake-up (trio's ``SocketListener.accept`` yields
    after each one, so 1,000 queued connections took 1,000 passes of the scheduler), and with
    ``admission``, only while it has room (:mod:`._admit`).
    """
    last_refusal = -inf
    refused = 0
    burst = 0
    while True:
        if burst >= ACCEPT_BURST:
            burst = 0
            await trio.lowlevel.checkpoint()
        if admission is not None and not admission.has_room():
            burst = 0
            await admission.room()
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            burst = 0
            await trio.lowlevel.wait_readable(sock)
            continue
        except OSError as exc:
            if exc.errno in _GONE_BEFORE_ACCEPT:
                continue
            if exc.errno not in _OUT_OF_RESOURCES:
                raise
            now = trio.current_time()
            if now - last_refusal > BURST_GAP:
                log.error(
                    "cannot accept connections: %s; retrying every %s s (logged once per burst)%s",
                    exc, ACCEPT_RETRY,
                    f"; {refused} accepts were refused in the previous burst" if refused else "",
                )  # fmt: skip
                refused = 0
            refused += 1
            last_refusal = now
            burst = 0
            await trio.sleep(ACCEPT_RETRY)
            continue
        burst += 1
        try:
            stream = _stream(conn)
        except OSError:  # e.g. reset already (TCP_NODELAY on a dead socket): that one only
            conn.close()
            continue
        nursery.start_soon(handle, _admitted(stream, admission))


async def serve_contained(
    app: ASGIApp,
    config: GuardedConfig,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``config.bind`` (plain HTTP) until ``shutdown_trigger`` returns.

    Reports the bound URLs through ``task_status``. On shutdown it stops accepting, then gives
    open connections ``config.graceful_timeout`` seconds before cancelling them.
    """
    install()
    config.errorlog = connection_logger()
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
    context = WorkerContext(None)
    failures = _FailureLog()
    sockets = config.create_sockets()
    listeners = list(sockets.insecure_sockets)
    binds = []
    backlog = listen_backlog(config.backlog)
    for sock in listeners:
        sock.setblocking(False)
        sock.listen(backlog)
        binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")

    async def handle(stream: trio.abc.HalfCloseableStream) -> None:
        try:
            await TCPServer(wrapped, config, context, ConnectionState({}), stream)  # type: ignore[arg-type]
        except* Exception as group:
            failures.note(_first_leaf(group))
        finally:  # (hypercorn's own close can be cancelled before it closes the socket)
            with trio.CancelScope(shield=True):
                await stream.aclose()

    try:
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as accepting:
                admission = Admission()
                for listener in listeners:
                    accepting.start_soon(_accept_loop, listener, handle, connections, admission)
                task_status.started(binds)
                await shutdown_trigger()
                accepting.cancel_scope.cancel()
            await context.terminated.set()
            connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
    finally:
        for sock in listeners:
            sock.close()
