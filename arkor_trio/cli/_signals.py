"""SIGTERM while a job is followed (``run``, ``demo``): handled like Ctrl-C, exit code 143.

A process manager (systemd, Docker, a CI runner's timeout) stops a process with SIGTERM, not
SIGINT. Left alone, SIGTERM would kill the process and leave the job training on the backend;
here it cancels the wait, so ``Trainer.run(cancel_on_abort=True)`` sends the backend cancel
(bounded), and then :class:`Terminated` is raised for ``main`` to exit with 143 (128 + SIGTERM).
"""

from __future__ import annotations

import signal
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from .._groups import collapse_groups

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["EXIT_TERMINATED", "Terminated", "sigterm_cancels"]

EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(Exception):
    """SIGTERM arrived while the body of :func:`sigterm_cancels` ran; the body was cancelled."""


@asynccontextmanager
async def sigterm_cancels() -> AsyncIterator[None]:
    """Run the body; on SIGTERM cancel it and, once it has unwound, raise :class:`Terminated`."""
    terminated = False
    with trio.open_signal_receiver(signal.SIGTERM) as signals, collapse_groups():
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                nonlocal terminated
                async for _ in signals:
                    terminated = True
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(watch)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()
    if terminated:
        raise Terminated
