"""Connection states of a channel, reported to an ``on_state`` callback as they change.

A channel is ``connecting`` (an attempt is under way), ``open`` (a response is being read),
``reconnecting`` (the last connection ended; the next attempt starts after ``delay`` seconds) or
``closed`` (the channel stopped: the stream ended, a permanent error, or the consumer left).
This is what an EventSource's ``readyState`` and LaunchDarkly's connection-state callbacks tell:
enough for a status line ("reconnecting in 3.2 s: ConnectError"), nothing about frames.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, TypeAlias

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["ConnectionState", "OnState", "StateName"]

StateName: TypeAlias = Literal["connecting", "open", "reconnecting", "closed"]


@attrs.frozen
class ConnectionState:
    """One state change of a channel.

    Attributes:
        name: ``"connecting"``, ``"open"``, ``"reconnecting"`` or ``"closed"``.
        attempt: Failed connections in a row so far (0 after a connection made progress).
        delay: For ``reconnecting``: seconds until the next attempt; else None.
        error: What ended the last connection (``reconnecting``) or the channel (``closed``),
            None when it ended without one.
    """

    name: StateName
    attempt: int = 0
    delay: float | None = None
    error: BaseException | None = None


#: The callback: called synchronously, in the channel's reader task; it must not block.
OnState: TypeAlias = "Callable[[ConnectionState], None]"
