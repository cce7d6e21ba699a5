"""Collapse trio's ExceptionGroups at the public boundary: our calls raise single exceptions."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["collapse_groups", "lone_exception"]


def lone_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception a nursery's group stands for, or None when it stands for several.

    That is its only non-``Cancelled`` leaf (``Cancelled`` siblings are the nursery tearing down
    around it), or one ``Cancelled`` when every leaf is one (design.md section 3.6).
    """
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(reversed(exc.exceptions))
        else:
            leaves.append(exc)
    real = [e for e in leaves if not isinstance(e, trio.Cancelled)]
    if len(real) == 1:
        return real[0]
    if not real and leaves:
        return leaves[0]
    return None


@contextmanager
def collapse_groups() -> Iterator[None]:
    """Re-raise a group escaping the block as its lone exception (see :func:`lone_exception`).

    A group that stands for several exceptions propagates unchanged.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        lone = lone_exception(group)
        if lone is None:
            raise
        raise lone from None
