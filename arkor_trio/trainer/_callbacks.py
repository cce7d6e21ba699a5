"""``Callbacks``: the six lifecycle hooks a trainer calls, and how several sets combine."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeAlias, cast

import attrs

from .._errors import ConfigError
from ._contexts import (
    CancelledContext,
    CheckpointContext,
    CompletedContext,
    FailedContext,
    LogContext,
    StartedContext,
)

__all__ = ["CALLBACK_NAMES", "Callback", "Callbacks", "CallbacksLike", "as_callbacks"]

#: A callback: a function or coroutine function taking one context; its return value is ignored.
Callback: TypeAlias = Callable[[Any], "Awaitable[object] | object"]

CALLBACK_NAMES: tuple[str, ...] = (
    "on_started",
    "on_log",
    "on_checkpoint",
    "on_completed",
    "on_failed",
    "on_cancelled",
)


def _chain(*fns: Callback | None) -> Callback | None:
    present = [f for f in fns if f is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return _Chain(tuple(present))


@attrs.frozen
class _Chain:
    """Several callbacks for one event, run in order, each awaited before the next."""

    fns: tuple[Callback, ...]

    async def __call__(self, ctx: Any) -> None:
        for fn in self.fns:
            result = fn(ctx)
            if inspect.isawaitable(result):
                await result


@attrs.frozen(kw_only=True)
class Callbacks:
    """The lifecycle callbacks of a trainer; each is optional, sync or async.

    They run one at a time, in stream order, inside ``Trainer.wait()``. A callback that raises ends
    ``wait()`` with that exception (the event is re-delivered by the next ``wait()``/``attach``).

    Args:
        on_started: Called with a :class:`StartedContext` on ``training.started``.
        on_log: Called with a :class:`LogContext` on every ``training.log``.
        on_checkpoint: Called with a :class:`CheckpointContext` on ``checkpoint.saved``.
        on_completed: Called once with a :class:`CompletedContext` when the job completes.
        on_failed: Called once with a :class:`FailedContext` when the backend reports a failure.
        on_cancelled: Called once with a :class:`CancelledContext` when the job was cancelled.
    """

    on_started: Callable[[StartedContext], Awaitable[object] | object] | None = None
    on_log: Callable[[LogContext], Awaitable[object] | object] | None = None
    on_checkpoint: Callable[[CheckpointContext], Awaitable[object] | object] | None = None
    on_completed: Callable[[CompletedContext], Awaitable[object] | object] | None = None
    on_failed: Callable[[FailedContext], Awaitable[object] | object] | None = None
    on_cancelled: Callable[[CancelledContext], Awaitable[object] | object] | None = None

    def __attrs_post_init__(self) -> None:
        for name in CALLBACK_NAMES:
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise ConfigError(
                    f"callbacks.{name} must be callable, got {type(value).__name__}",
                    field=f"callbacks.{name}",
                )

    @classmethod
    def merge(cls, *items: CallbacksLike | None) -> Callbacks:
        """Combine several callback sets: for each event every callback runs, in the order given.

        Each is awaited before the next; an exception stops the chain and ends ``wait()``.
        """
        sets = [as_callbacks(item) for item in items if item is not None]
        return cls(**{name: _chain(*(getattr(s, name) for s in sets)) for name in CALLBACK_NAMES})

    def __add__(self, other: CallbacksLike) -> Callbacks:
        if not isinstance(other, Callbacks | Mapping):
            return NotImplemented
        return Callbacks.merge(self, other)

    def __radd__(self, other: CallbacksLike) -> Callbacks:
        if not isinstance(other, Mapping):
            return NotImplemented
        return Callbacks.merge(other, self)


CallbacksLike: TypeAlias = "Callbacks | Mapping[str, Any]"


def as_callbacks(value: CallbacksLike | None) -> Callbacks:
    """Accept a :class:`Callbacks`, a mapping with its keys, or None.

    Raises:
        ConfigError: An unknown key, a non-callable value, or a value of another type.
    """
    if value is None:
        return Callbacks()
    if isinstance(value, Callbacks):
        return value
    if isinstance(value, Mapping):
        unknown = sorted(str(k) for k in value if k not in CALLBACK_NAMES)
        if unknown:
            raise ConfigError(
                f"unknown callbacks key(s) {', '.join(unknown)}; expected some of "
                f"{', '.join(CALLBACK_NAMES)}",
                field=f"callbacks.{unknown[0]}",
            )
        return Callbacks(**cast("dict[str, Any]", dict(value)))
    raise ConfigError(
        f"callbacks must be a Callbacks or a mapping, got {type(value).__name__}",
        field="callbacks",
    )
