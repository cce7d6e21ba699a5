"""The fault-injecting TCP/HTTP proxy: :func:`open_chaos_proxy` and :class:`ChaosProxy`."""

from __future__ import annotations

import errno
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TypeAlias

import trio

from .._errors import ConfigError
from .._groups import collapse_groups
from ._conn import serve_connection
from ._plan import Fault, PassThrough, Plan, PlanCursor, Step, coerce_plan
from ._records import ConnectionRecord, ConnState

__all__ = ["ChaosProxy", "open_chaos_proxy", "parse_upstream"]

PlanLike: TypeAlias = Plan | Sequence[Fault | Sequence[Fault]] | None
_ACCEPT_RETRY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


def parse_upstream(upstream: tuple[str, int] | str) -> tuple[str, int]:
    """Return ``(host, port)`` from a tuple, ``"HOST:PORT"`` or ``"http://HOST:PORT"``.

    Raises:
        ConfigError: The address has no valid port.
    """
    if isinstance(upstream, tuple):
        host, port = upstream
    else:
        text = upstream.removeprefix("http://").rstrip("/")
        host, _, port_text = text.rpartition(":")
        if not port_text.isdigit():
            message = f"upstream must be HOST:PORT, got {upstream!r}"
            raise ConfigError(message, field="upstream")
        port = int(port_text)
    if not host or not 0 < port < 65536:
        raise ConfigError(f"upstream must be HOST:PORT, got {upstream!r}", field="upstream")
    return host.strip("[]"), port


class ChaosProxy:
    """A running chaos proxy; made by :func:`open_chaos_proxy`.

    Connections are numbered in accept order and each gets the next step of the plan. Records
    and waits never block the proxy; the proxy never raises for a peer's misbehaviour.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        plan: Plan,
        *,
        port: int,
        host: str,
        seed: int,
        on_close: Callable[[ConnectionRecord], None] | None,
    ) -> None:
        self._upstream = upstream
        self._plan = plan
        self._cursor = PlanCursor(plan)
        self._seed = seed
        self._on_close = on_close
        self._states: list[ConnState] = []
        self._changed = trio.Event()
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """The base URL to give a client, e.g. ``http://127.0.0.1:40123``."""
        return f"http://{self.host}:{self.port}"

    @property
    def upstream(self) -> tuple[str, int]:
        """The ``(host, port)`` connections are forwarded to."""
        return self._upstream

    @property
    def records(self) -> list[ConnectionRecord]:
        """Snapshots of every connection so far, in accept order (open ones included)."""
        return [state.snapshot() for state in self._states]

    def set_plan(self, plan: PlanLike) -> None:
        """Apply ``plan`` from its first step to connections accepted from now on."""
        self._plan = coerce_plan(plan)
        self._cursor = PlanCursor(self._plan)

    def gaps(self, *, wall: bool = False) -> list[float]:
        """For each cut connection that has a successor, seconds from its cut to the next open.

        Args:
            wall: Use the ``time.perf_counter`` stamps instead of ``trio.current_time()``.
        """
        records = self.records
        gaps = []
        for record, following in itertools.pairwise(records):
            if wall and record.cut_wall is not None:
                gaps.append(following.opened_wall - record.cut_wall)
            elif not wall and record.cut_at is not None:
                gaps.append(following.opened_at - record.cut_at)
        return gaps

    async def wait_connections(self, n: int) -> None:
        """Return once at least ``n`` connections have been accepted."""
        await self._wait_until(lambda: len(self._states) >= n)

    async def wait_closed(self, n: int) -> None:
        """Return once at least ``n`` connections have been closed and their records are final."""
        await self._wait_until(lambda: sum(s.closed_at is not None for s in self._states) >= n)

    async def _wait_until(self, condition: Callable[[], bool]) -> None:
        await trio.lowlevel.checkpoint()
        while not condition():
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _serve(self, listeners: Sequence[trio.SocketListener]) -> None:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept_loop, listener, nursery)

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if exc.errno not in _ACCEPT_RETRY_ERRNOS:
                        raise
                    await trio.sleep(0.1)
                    continue
                # The step is chosen here, in accept order, so a seeded plan is deterministic;
                # a plan with `only` chooses once the request head says what is asked.
                choose = None if self._plan.only is None else self._choose
                faults = (PassThrough(),) if choose else self._cursor.next_step(trio.current_time())
                state = ConnState(index=len(self._states), faults=faults)
                self._states.append(state)
                self._notify()
                nursery.start_soon(self._run, stream, state, choose)

    def _choose(self, target: str) -> Step:
        if self._plan.targets(target):
            return self._cursor.next_step(trio.current_time())
        return (PassThrough(),)

    async def _run(
        self, stream: trio.SocketStream, state: ConnState, choose: Callable[[str], Step] | None
    ) -> None:
        try:
            await serve_connection(stream, state, self._upstream, self._seed, choose)
        finally:
            self._notify()
            if self._on_close is not None:
                self._on_close(state.snapshot())


@asynccontextmanager
async def open_chaos_proxy(
    upstream: tuple[str, int] | str,
    *,
    plan: PlanLike = None,
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int = 0,
    on_close: Callable[[ConnectionRecord], None] | None = None,
) -> AsyncIterator[ChaosProxy]:
    """Run a fault-injecting HTTP/1.1 proxy in front of ``upstream`` for the ``async with`` body.

    The proxy is listening when the body starts. Every connection carries one request (the proxy
    sends ``Connection: close``), gets the next step of ``plan`` in accept order, and is recorded.
    On exit every connection is closed and every task the proxy started has finished.

    Args:
        upstream: ``(host, port)``, ``"HOST:PORT"`` or ``"http://HOST:PORT"``.
        plan: A :class:`Plan`, a list of per-connection faults (a tuple in it composes faults on
            one connection), or None to pass everything through.
        host: Address to listen on.
        port: Port to listen on; 0 picks a free one (see ``ChaosProxy.port``).
        seed: Seeds the latency jitter (the plan carries its own seed).
        on_close: Called with the final record of each connection as it closes.

    Raises:
        ConfigError: Bad ``upstream`` or ``plan``.
    """
    address = parse_upstream(upstream)
    cursor_plan = coerce_plan(plan)
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    proxy = ChaosProxy(address, cursor_plan, port=bound, host=host, seed=seed, on_close=on_close)
    try:
        with collapse_groups():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(proxy._serve, listeners)
                try:
                    yield proxy
                finally:
                    nursery.cancel_scope.cancel()
    finally:
        for listener in listeners:  # also when the body ended before the accept loop started
            listener.socket.close()
