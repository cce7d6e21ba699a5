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

:func:`context` enters and leaves a trio async context manager (an ``ArkorClient``,
``open_local_backend()``) in one trio task while an asyncio ``async with`` block runs.
:func:`iterate` follows a trio async iterable (or an async context manager giving one, such as
``client.events(job_id)``) from asyncio, one item per request: the trio side reads the next item
only when the asyncio consumer asks for it.
"""

from ._guest import GuestRunError as GuestRunError
from ._guest import aclose as aclose
from ._guest import is_running as is_running
from ._guest import run as run
from ._iterate import AioIterator as AioIterator
from ._iterate import context as context
from ._iterate import iterate as iterate

__all__ = ["AioIterator", "GuestRunError", "aclose", "context", "is_running", "iterate", "run"]
