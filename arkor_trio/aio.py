"""Use arkor-trio from asyncio (FastAPI, Jupyter, any asyncio service) through trio's guest mode.

``await aio.run(fn, *args)`` runs the trio async function ``fn`` and returns its result or raises
its exception (as itself: a group that stands for one exception is unwrapped). The first call in
an asyncio loop starts one trio *guest run* on that loop (:func:`trio.lowlevel.start_guest_run`);
every later call in the same loop runs as a task of it, so concurrent calls run concurrently and
the asyncio loop is never blocked: trio's I/O waits happen in a helper thread, and every trio
step runs as a short callback of the asyncio loop.

Cancellation goes both ways. Cancelling the asyncio task that awaits ``aio.run`` cancels the trio
call (one ``run_sync_soon`` hop away), waits for it to unwind (so ``Trainer.run`` sends the backend
cancel) and then raises :class:`asyncio.CancelledError`. A trio ``Cancelled`` ending the call (the
guest run shutting down) reaches the awaiting task as :class:`asyncio.CancelledError`.

Shutdown: the guest run stops when its loop shuts down. The hook is an async generator that
:func:`run` starts in the loop and keeps alive; asyncio closes every such generator in
``loop.shutdown_asyncgens()``, which ``asyncio.run``, ``asyncio.Runner``, uvicorn and every other
well-behaved runner call before closing the loop. Its ``finally`` cancels the trio run and waits
for it to finish. Nothing patches the loop. A loop driven by hand should ``await aio.aclose()``
(or ``loop.shutdown_asyncgens()``) before ``loop.close()``.

:func:`iterate` follows a trio async iterable (or an async context manager giving one, such as
``client.events(job_id)``) from asyncio, one item per request: the trio side reads the next item
only when the asyncio consumer asks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import weakref
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar, TypeVarTuple, Unpack

import trio

from ._groups import lone_exception

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable
    from types import TracebackType

    import outcome

__all__ = ["AioIterator", "GuestRunError", "aclose", "context", "is_running", "iterate", "run"]

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


class _Guest:
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
                call.finish(error=_unwrap(exc))
                return
        call.finish(value=value)


def _unwrap(exc: BaseException) -> BaseException:
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
_guests: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Guest] = weakref.WeakKeyDictionary()


def _guest_of(loop: asyncio.AbstractEventLoop) -> _Guest:
    guest = _guests.get(loop)
    if guest is None:
        guest = _Guest(loop)
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
    guest = _guest_of(loop)
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


@contextlib.asynccontextmanager
async def context(manager: contextlib.AbstractAsyncContextManager[T]) -> AsyncIterator[T]:
    """Use a trio async context manager from asyncio: ``async with aio.context(cm) as value:``.

    ``cm`` is entered and left by one trio task (as trio requires), which holds it open while
    the asyncio block runs: an ``ArkorClient``, ``open_local_backend()``, a trainer's resources.
    The block's exception is not passed to ``cm.__aexit__`` (it sees a normal exit); an
    exception from entering or leaving ``cm`` propagates as itself.
    """
    loop = asyncio.get_running_loop()
    guest = _guest_of(loop)
    entered: asyncio.Future[T] = loop.create_future()
    leave = trio.Event()

    async def hold() -> None:
        async with manager as value:
            if not entered.done():
                entered.set_result(value)
            await leave.wait()

    task = loop.create_task(run(hold))
    either: list[asyncio.Future[Any]] = [entered, task]
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise
    if not entered.done():
        await task  # entering failed: its exception
        raise GuestRunError("the context manager's task ended before entering it")
    try:
        yield entered.result()
    finally:
        assert guest.token is not None
        with contextlib.suppress(trio.RunFinishedError):
            guest.token.run_sync_soon(leave.set)
        await task


class _Request:
    """One ``__anext__`` of an :class:`AioIterator`: the trio side answers it."""

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.value: Any = None
        self.error: BaseException | None = None

    def finish(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error
        if not self.done.done():
            self.done.set_result(None)


class AioIterator(Generic[T]):
    """An asyncio async iterator over a trio async iterable; see :func:`iterate`."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self._requests: trio.MemorySendChannel[_Request] | None = None
        self._task: asyncio.Task[None] | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._finished = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        if self._finished:
            raise StopAsyncIteration
        loop = asyncio.get_running_loop()
        if self._task is None:
            guest = _guest_of(loop)
            send, receive = trio.open_memory_channel[_Request](1)
            self._requests, self._token = send, guest.token
            # The pump holds no reference to this iterator: dropping the iterator closes the
            # request channel, which ends the pump and leaves the source.
            self._task = loop.create_task(run(_pump, self._source, receive))
            weakref.finalize(self, _close_channel, guest.token, send)
        assert self._token is not None
        assert self._requests is not None
        request = _Request(loop.create_future())
        try:
            self._token.run_sync_soon(_send_request, self._requests, request)
        except trio.RunFinishedError:
            self._finished = True
            raise asyncio.CancelledError from None
        try:
            await asyncio.wait([request.done, self._task], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await self.aclose()
            raise
        if not request.done.done() or request.error is not None:
            self._finished = True
            await self._task  # the pump's own error (leaving the source), if any
            if request.error is None or isinstance(request.error, StopAsyncIteration):
                raise StopAsyncIteration
            raise request.error
        return request.value  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        """Stop the trio side: leave the source's context (or close the iterator) and wait."""
        self._finished = True
        task, self._task = self._task, None
        if task is None:
            return
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _send_request(requests: trio.MemorySendChannel[_Request], request: _Request) -> None:
    # In trio context (run_sync_soon): never raises.
    try:
        requests.send_nowait(request)
    except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
        request.finish(error=StopAsyncIteration())


def _close_channel(token: Any, requests: trio.MemorySendChannel[_Request]) -> None:
    with contextlib.suppress(trio.RunFinishedError):
        token.run_sync_soon(requests.close)


async def _pump(source: Any, requests: trio.MemoryReceiveChannel[_Request]) -> None:
    """The trio side of an :class:`AioIterator`: one item per request, nothing read ahead."""
    async with requests, _entered(source) as iterable:
        iterator = aiter(iterable)
        async for request in requests:
            try:
                item = await anext(iterator)
            except StopAsyncIteration:
                request.finish(error=StopAsyncIteration())
                return
            except BaseException as exc:
                request.finish(error=_unwrap(exc))
                if isinstance(exc, trio.Cancelled):
                    raise
                return
            request.finish(value=item)


@contextlib.asynccontextmanager
async def _entered(source: Any) -> AsyncIterator[Any]:
    """Enter ``source`` if it is an async context manager; close an async generator after."""
    if hasattr(source, "__aenter__") and hasattr(source, "__aexit__"):
        async with source as iterable:
            yield iterable
        return
    try:
        yield source
    finally:
        close = getattr(source, "aclose", None)
        if close is not None:
            await close()


def iterate(
    source: AsyncIterable[T] | contextlib.AbstractAsyncContextManager[Any],
) -> AioIterator[T]:
    """Follow a trio async iterable from asyncio: ``async with aio.iterate(src) as items:``.

    ``source`` is a trio async iterable, or an async context manager whose ``__aenter__`` gives
    one (``client.events(job_id)``), entered and left in the trio run. Backpressure: the trio
    side asks its iterator for the next item only when the asyncio consumer awaits it (one item
    in flight, nothing buffered in between). Leaving the ``async with`` block (or ``aclose()``)
    cancels the trio side and waits until it left the source; cancelling a consumer waiting for
    an item does the same. Plain ``async for`` without ``async with`` also works; the trio side
    then ends when the source ends.
    """
    return AioIterator(source)
