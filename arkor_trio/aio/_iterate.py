"""asyncio-side views of trio objects: ``context`` (an async context manager) and ``iterate``."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

import trio

from ._guest import GuestRunError, guest_of, run, unwrap

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator
    from types import TracebackType

__all__ = ["AioIterator", "context", "iterate"]

T = TypeVar("T")


@contextlib.asynccontextmanager
async def context(manager: contextlib.AbstractAsyncContextManager[T]) -> AsyncIterator[T]:
    """Use a trio async context manager from asyncio: ``async with aio.context(cm) as value:``.

    ``cm`` is entered and left by one trio task (as trio requires), which holds it open while
    the asyncio block runs: an ``ArkorClient``, ``open_local_backend()``, a trainer's resources.
    The block's exception is not passed to ``cm.__aexit__`` (it sees a normal exit); an
    exception from entering or leaving ``cm`` propagates as itself.
    """
    loop = asyncio.get_running_loop()
    guest = guest_of(loop)
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
        if exc_type is None:
            await self._leave()  # the source is left normally: it commits what was handled
        else:
            await self.aclose()

    async def _leave(self) -> None:
        """End the trio side by closing its request channel: the pump leaves the source as a
        trio ``async with`` left normally would (a stream commits the last item handled)."""
        self._finished = True
        task, self._task = self._task, None
        if task is None:
            return
        if not task.done() and self._token is not None and self._requests is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._requests.close)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        if self._finished:
            raise StopAsyncIteration
        loop = asyncio.get_running_loop()
        if self._task is None:
            guest = guest_of(loop)
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
                request.finish(error=unwrap(exc))
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
    in flight, nothing buffered in between). Leaving the ``async with`` block normally leaves
    the source normally (a stream with a cursor store commits the last item handled, as in
    trio); leaving it with an exception (or ``aclose()``) cancels the trio side and waits until
    it left the source; cancelling a consumer waiting for an item does the same. Plain
    ``async for`` without ``async with`` also works; the trio side then ends when the source
    ends.
    """
    return AioIterator(source)
