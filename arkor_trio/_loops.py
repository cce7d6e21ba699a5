"""Which event loop is calling: trio (the library's own) or asyncio code outside it.

arkor-trio runs on trio. Awaited from asyncio (a notebook cell, a FastAPI handler) without
``arkor_trio.aio``, trio's primitives fail with messages that do not say what to do
(``RuntimeError: must be called from async context``, ``Task got bad yield``). The public entry
points ask :func:`called_from_asyncio` first: the trainer's calls then go through ``aio.run`` by
themselves; the others raise :func:`asyncio_error`, which names the ``aio`` call to use.

The check costs one ``trio.lowlevel.current_task()`` per public call (never per event).
"""

from __future__ import annotations

import asyncio

import trio

from ._errors import ConfigError

__all__ = ["asyncio_error", "called_from_asyncio"]


def called_from_asyncio() -> bool:
    """True when the caller is asyncio code, not a trio task (``aio`` runs trio tasks too)."""
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        pass
    else:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def asyncio_error(what: str, instead: str) -> ConfigError:
    """The error for ``what`` awaited from asyncio: ``instead`` is the ``aio`` form to use."""
    return ConfigError(
        f"{what} was awaited from asyncio (a Jupyter notebook, FastAPI, asyncio.run), but "
        f"arkor-trio runs on trio: use `{instead}` there (docs/asyncio.md)",
        field=None,
    )
