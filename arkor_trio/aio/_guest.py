"""The trio guest run of an asyncio loop: started on first use, stopped at the loop's shutdown.

See the package docstring (``arkor_trio.aio``) for the behaviour; this module holds the guest run
itself (:class:`Guest`), ``run``, ``aclose`` and ``is_running``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import weakref
from typing import TYPE_CHECKING, Any, TypeVar, TypeVarTuple, Unpack

import trio

from .._groups import lone_exception

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable

    import outcome

__all__ = ["Guest", "GuestRunError", "aclose", "guest_of", "is_running", "run", "unwrap"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class GuestRunError(RuntimeError):
    """The trio guest run cannot serve this loop (another trio run owns the thread, or it ended)."""


class _Call:
    """One ``aio.run`` call: the trio side fills ``value``/``error`` and resolves ``done``."""

    def __init__(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], done: Any) -> None:
        self.fn = fn
        self.args = args
        self.done: asyncio.Future[None] = done
        self.value: Any = None
        self.error: BaseException | None = None
        self.scope: trio.CancelScope | None = None
        self.cancel_requested = False

    def finish(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error
        if not self.done.done():
            self.done.set_result(None)

    def cancel(self) -> None:
        """In trio context: cancel the call (before it started or while it runs)."""
        self.cancel_requested = True
        if self.scope is not None:
            self.scope.cancel()


class Guest:
    """The trio guest run of one asyncio loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.finished: asyncio.Future[None] = loop.create_future()
        self.token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._pending: list[_Call] = []
        self._stop: trio.Event | None = None
        self._stopping = False
        self._sentinel: AsyncGenerator[None, None] | None = None
        self._trio_hooks: Any = None

    def start(self) -> None:
        """Start the guest run and the shutdown hook; synchronous, so no other call interleaves."""
        sentinel = self._lifetime()
        step = sentinel.asend(None)  # first iteration registers it with the loop's hooks
        with contextlib.suppress(StopIteration):
            step.send(None)
        self._sentinel = sentinel
        try:
            trio.lowlevel.start_guest_run(
                self._main,
                run_sync_soon_threadsafe=self._soon_threadsafe,
                run_sync_soon_not_threadsafe=self._soon,
                done_callback=self._done,
                host_uses_signal_set_wakeup_fd=True,
            )
        except RuntimeError as exc:
            self._sentinel = None
            _close_quietly(sentinel)
            raise GuestRunError(
                "another trio run is active in this thread (another library's guest mode, or "
                "aio.run called from inside trio); arkor_trio.aio needs its own guest run per loop"
            ) from exc
        self.token = trio.lowlevel.current_trio_token()
        self._trio_hooks = sys.get_asyncgen_hooks()

    # Every trio step runs through these two. Between two ``run_until_complete`` calls asyncio
    # puts back the async generator hooks it found, dropping trio's: each step reinstalls them,
    # so that generators first iterated in trio tasks stay trio's (trio forwards the host's own
    # generators to the loop's hooks), also during the loop's shutdown.
    def _soon(self, fn: Callable[[], object]) -> None:
        self.loop.call_soon(self._step, fn)

    def _soon_threadsafe(self, fn: Callable[[], object]) -> None:
        self.loop.call_soon_threadsafe(self._step, fn)

    def _step(self, fn: Callable[[], object]) -> None:
        hooks = self._trio_hooks
        if hooks is not None and sys.get_asyncgen_hooks().firstiter is not hooks.firstiter:
            sys.set_asyncgen_hooks(*hooks)
        fn()

    async def _main(self) -> None:
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            pending, self._pending = self._pending, []
            for call in pending:
                nursery.start_soon(self._call, call)
            if self._stopping:
                self._stop.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()
        self._nursery = None

    def _done(self, result: outcome.Outcome[None]) -> None:
        self._trio_hooks = None  # trio put back the loop's own hooks
        if _guests.get(self.loop) is self:
            del _guests[self.loop]
        for call in self._pending:  # accepted too late to start
            call.finish(error=asyncio.CancelledError())
        self._pending = []
        if not self.finished.done():
            self.finished.set_result(None)
        try:
            result.unwrap()
        except (KeyboardInterrupt, SystemExit):
            raise  # out of the loop, as asyncio does with them
        except BaseException as exc:
            self.loop.call_exception_handler(
                {"message": "the arkor_trio.aio guest run crashed", "exception": exc}
            )

    async def _lifetime(self) -> AsyncGenerator[None, None]:
        """Kept suspended at its yield; ``loop.shutdown_asyncgens()`` closes it: stop the run."""
        try:
            yield
        finally:
            if self.token is not None:  # None: the run never started (GuestRunError)
                await self.stop()

    async def stop(self) -> None:
        """Cancel every call, let the trio run finish, and wait for it."""
        if not self._stopping and self.token is not None:
            self._stopping = True
            with contextlib.suppress(trio.RunFinishedError):
                self.token.run_sync_soon(self._request_stop)
        await asyncio.shield(self.finished)

    def _request_stop(self) -> None:
        self._stopping = True
        if self._stop is not None:
            self._stop.set()

    def submit(self, call: _Call) -> None:
        """From asyncio: start ``call`` as a task of the guest run."""
        if self.token is None or self._stopping:
            raise GuestRunError("the arkor_trio.aio guest run of this loop is shutting down")
        self.token.run_sync_soon(self._spawn, call)

    def _spawn(self, call: _Call) -> None:
        # Runs in trio context from run_sync_soon: it must not raise.
        if self._nursery is None:
            if self._stop is not None and self._stop.is_set():
                call.finish(error=asyncio.CancelledError())
            else:
                self._pending.append(call)
            return
        try:
            self._nursery.start_soon(self._call, call)
        except RuntimeError:  # the nursery is closing
            call.finish(error=asyncio.CancelledError())

    def cancel(self, call: _Call) -> None:
        """From asyncio: cancel ``call`` in trio (a no-op once the run is over)."""
        if self.token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self.token.run_sync_soon(call.cancel)

    async def _call(self, call: _Call) -> None:
        with trio.CancelScope() as scope:
            call.scope = scope
            if call.cancel_requested:
                scope.cancel()
            try:
                value = await call.fn(*call.args)
            except BaseException as exc:
                call.finish(error=unwrap(exc))
                return
        call.finish(value=value)


def unwrap(exc: BaseException) -> BaseException:
    """The exception ``aio.run`` raises for ``exc``: a lone exception stands for its group."""
    if isinstance(exc, BaseExceptionGroup):
        exc = lone_exception(exc) or exc
    if isinstance(exc, trio.Cancelled):
        return asyncio.CancelledError()
    if isinstance(exc, StopIteration | StopAsyncIteration):
        # A future cannot carry StopIteration; wrap both, as PEP 479 does for generators.
        wrapped = RuntimeError(f"{type(exc).__name__} raised by a function run with aio.run")
        wrapped.__cause__ = exc
        return wrapped
    return exc


def _close_quietly(agen: AsyncGenerator[None, None]) -> None:
    step = agen.aclose()
    with contextlib.suppress(StopIteration, RuntimeError):
        step.send(None)


#: The guest run of each asyncio loop, while it runs.
_guests: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Guest] = weakref.WeakKeyDictionary()


def guest_of(loop: asyncio.AbstractEventLoop) -> Guest:
    guest = _guests.get(loop)
    if guest is None:
        guest = Guest(loop)
        guest.start()
        _guests[loop] = guest
    return guest


async def run(fn: Callable[[Unpack[Ts]], Awaitable[T]], *args: *Ts) -> T:
    """Run the trio async function ``fn(*args)`` in this loop's trio guest run; await its result.

    Raises:
        BaseException: What ``fn`` raised, as itself (a group standing for one exception is
            unwrapped to it); a trio ``Cancelled`` becomes :class:`asyncio.CancelledError`.
        GuestRunError: Another trio run owns this thread, or the guest run is shutting down.
    """
    loop = asyncio.get_running_loop()
    guest = guest_of(loop)
    call = _Call(fn, args, loop.create_future())
    guest.submit(call)
    try:
        await asyncio.shield(call.done)
    except asyncio.CancelledError:
        # This task was cancelled: cancel the trio side, let it unwind, then propagate.
        guest.cancel(call)
        while not call.done.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(call.done)
        if call.error is not None and not isinstance(call.error, asyncio.CancelledError):
            raise call.error from None
        raise
    if call.error is not None:
        raise call.error
    return call.value  # type: ignore[no-any-return]


def is_running(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    """True while ``loop`` (default: the running loop) has a trio guest run."""
    return _guests.get(loop or asyncio.get_running_loop()) is not None


async def aclose() -> None:
    """Stop the running loop's guest run now: cancel its calls and wait until trio finished.

    Not needed with ``asyncio.run``/``asyncio.Runner`` (their loop shutdown does it); a later
    ``aio.run`` in the same loop starts a new guest run.
    """
    guest = _guests.get(asyncio.get_running_loop())
    if guest is not None:
        await guest.stop()
