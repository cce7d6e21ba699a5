"""The trio guest run of an asyncio loop: started on first use, stopped at the loop's shutdown.

See the package docstring (``arkor_trio.aio``) for the behaviour; this module holds the guest run
itself (:class:`Guest`), ``run``, ``aclose`` and ``is_running``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import socket
import sys
import threading
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
        self._wakeup: SignalWakeup | None = None

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
        self._wakeup = SignalWakeup.install(self.loop)

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
        if self._wakeup is not None:
            self._wakeup.remove()
            self._wakeup = None
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

    def sigints(self) -> int:
        """How many SIGINTs reached this loop since the run started (0 without a wakeup fd)."""
        return self._wakeup.sigints if self._wakeup is not None else 0

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


class SignalWakeup:
    """Wakes the asyncio loop when a signal arrives, whichever thread the kernel delivered it to.

    A guest run adds a thread: trio's I/O wait. The kernel delivers a process signal (SIGINT
    from Jupyter's Interrupt, Ctrl-C) to any thread that does not block it, often that one.
    CPython then runs the Python handler in the main thread, but only once the main thread
    wakes up, and the asyncio loop may sleep in its own ``select`` until the next I/O event
    (a training log, a ping: seconds). CPython also writes the signal number to the fd set by
    :func:`signal.set_wakeup_fd` from whichever thread got the signal; asyncio installs one only
    with ``loop.add_signal_handler``. When none is set, this sets one whose other end the loop
    reads, so the handler (IPython's, asyncio.Runner's, Python's default) runs at once.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, reader: socket.socket, fd: int) -> None:
        self.loop, self._reader, self._fd = loop, reader, fd
        #: SIGINTs seen so far (an interrupted call says so in its CancelledError).
        self.sigints = 0

    @classmethod
    def install(cls, loop: asyncio.AbstractEventLoop) -> SignalWakeup | None:
        """Set a wakeup fd read by ``loop`` (main thread, none set yet); else None."""
        if threading.current_thread() is not threading.main_thread():
            return None  # signals are handled in the main thread only
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        try:
            previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        except (ValueError, OSError):
            reader.close()
            writer.close()
            return None
        if previous != -1:  # someone else's (asyncio's add_signal_handler): theirs wakes it
            signal.set_wakeup_fd(previous)
            reader.close()
            writer.close()
            return None
        wakeup = cls(loop, reader, writer.detach())
        try:
            loop.add_reader(reader.fileno(), wakeup._drain)
        except (NotImplementedError, RuntimeError):  # a loop without add_reader (Proactor)
            wakeup.remove()
            return None
        return wakeup

    def _drain(self) -> None:
        # Reading is all: waking the loop let the interpreter run the Python-level handler.
        with contextlib.suppress(OSError):
            while data := self._reader.recv(4096):
                self.sigints += data.count(signal.SIGINT)

    def remove(self) -> None:
        """Undo :meth:`install` (the wakeup fd only if it is still ours)."""
        with contextlib.suppress(ValueError, OSError):
            current = signal.set_wakeup_fd(-1)
            if current not in (self._fd, -1):  # replaced since (add_signal_handler): keep theirs
                signal.set_wakeup_fd(current)
        with contextlib.suppress(ValueError, OSError, RuntimeError):
            self.loop.remove_reader(self._reader.fileno())
        self._reader.close()
        with contextlib.suppress(OSError):
            os.close(self._fd)


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
    global _exit_hook  # registered once per process
    guest = _guests.get(loop)
    if guest is None:
        guest = Guest(loop)
        guest.start()
        _guests[loop] = guest
        if not _exit_hook:
            atexit.register(_stop_at_exit)
            _exit_hook = True
    return guest


#: How long the interpreter's exit waits for a guest run to unwind (a ``Trainer.run`` still in
#: flight sends its backend cancel, itself bounded to 10 s). A Jupyter restart kills the kernel
#: 5 s after asking it to stop, so this is usually cut shorter by the kernel manager.
EXIT_TIMEOUT = 12.0
_exit_hook = False


def _stop_at_exit() -> None:
    """At interpreter exit: stop guest runs whose loop stopped without shutting them down.

    A Jupyter kernel that shuts down or restarts stops its asyncio loop and exits without
    ``loop.shutdown_asyncgens()``: the calls still in flight (a ``Trainer.run`` awaited by a cell
    or a background task) would end with the process, their jobs training on. Here the loop
    runs once more until the guest run has unwound, so each sends its backend cancel, as a
    cancelled call does. Calls that already returned (``aio.run(trainer.start)``: a job started
    detached) are not touched.
    """
    for loop, guest in list(_guests.items()):
        if loop.is_closed() or loop.is_running():
            continue
        with contextlib.suppress(Exception):
            _run_until_stopped(loop, guest)


#: How many stray ``loop.stop()`` calls the exit hook rides through (see below).
STRAY_STOPS = 16


def _run_until_stopped(loop: asyncio.AbstractEventLoop, guest: Guest) -> None:
    """Run ``loop`` until ``guest``'s trio run has unwound, or ``EXIT_TIMEOUT`` has passed.

    The host may have queued more ``loop.stop()`` calls than it needed to end its own loop: an
    ipykernel shutdown queues one per stream loop, and the one left over stops the loop again a
    moment into this run ("Event loop stopped before Future completed"), in about 4 of 5 kernel
    restarts, often before a background ``Trainer.run`` had sent its backend cancel. So the
    loop is run again until the guest has stopped, through a bounded number of such stops.
    """
    stopping = loop.create_task(asyncio.wait_for(guest.stop(), EXIT_TIMEOUT))
    for _ in range(STRAY_STOPS):
        try:
            loop.run_until_complete(stopping)
        except RuntimeError:
            if stopping.done():
                raise
            continue  # a stray stop() of the host's: run the loop again
        return
    stopping.cancel()


async def run(fn: Callable[[Unpack[Ts]], Awaitable[T]], *args: *Ts) -> T:
    """Run the trio async function ``fn(*args)`` in this loop's trio guest run; await its result.

    Raises:
        BaseException: What ``fn`` raised, as itself (a group standing for one exception is
            unwrapped to it); a trio ``Cancelled`` becomes :class:`asyncio.CancelledError`.
        GuestRunError: Another trio run owns this thread, or the guest run is shutting down.
    """
    __tracebackhide__ = True  # IPython shows the cell's line, not this frame
    loop = asyncio.get_running_loop()
    guest = guest_of(loop)
    call = _Call(fn, args, loop.create_future())
    interrupts = guest.sigints()
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
        if guest.sigints() > interrupts:  # Jupyter's Interrupt, Ctrl-C: say what happened
            name = getattr(fn, "__qualname__", None) or type(fn).__name__
            raise asyncio.CancelledError(
                f"interrupted (SIGINT: Jupyter's Interrupt or Ctrl-C): {name} was cancelled in "
                "the trio run and has finished unwinding (a Trainer.run has sent its backend "
                "cancel)"
            ) from None
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
