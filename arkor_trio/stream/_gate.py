"""Streams to one origin resume together once it answers again (the restart herd).

When a backend restarts, every stream that followed it fails to connect (connection refused)
and backs off on its own full-jitter schedule: after the server listens again, each stream's
next attempt is still up to ``max_delay`` away (30 s by default). A connect error says nothing
about one stream that is not true of every stream to the same origin, and so does a connection
that opens again: when one stream of this trio run opens a connection to an origin
(``scheme://host:port``), the streams waiting out a backoff after a *connect error* to that origin
try again at once, each after its own ``uniform(0, initial_delay)`` so that they do not hit the
server in the same instant. Waits after a status (5xx, 429 with ``Retry-After``) or after a
connection that ended without progress are not cut short: the server answered those itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import trio

if TYPE_CHECKING:
    import random

__all__ = ["OriginGate", "gate_for", "unreachable"]


class OriginGate:
    """Wakes the streams backing off from an origin when another stream reaches it."""

    def __init__(self) -> None:
        self._opened = trio.Event()
        #: Connections opened to the origin through this gate (for tests and stats).
        self.opens = 0

    def opened(self) -> None:
        """A stream's connection to the origin opened: wake every stream waiting on the gate."""
        self.opens += 1
        self._opened.set()
        self._opened = trio.Event()

    async def backoff(self, delay: float, spread: float, rng: random.Random) -> bool:
        """Wait ``delay`` seconds, or less when a connection to the origin opens meanwhile.

        Once woken, wait ``uniform(0, spread)`` more (never past ``delay``). Returns True when
        the wait was cut short.
        """
        deadline = trio.current_time() + delay
        opened = self._opened
        with trio.move_on_at(deadline):
            await opened.wait()
            await trio.sleep_until(min(deadline, trio.current_time() + rng.uniform(0.0, spread)))
            return True
        return False


_GATES: trio.lowlevel.RunVar[dict[tuple[str, str], OriginGate]] = trio.lowlevel.RunVar(
    "arkor_trio_origin_gates"
)


def gate_for(url: str) -> OriginGate:
    """The gate of ``url``'s origin in this trio run (one per scheme and host:port)."""
    try:
        gates = _GATES.get()
    except LookupError:
        gates = {}
        _GATES.set(gates)
    parts = urlsplit(url)
    key = (parts.scheme.lower(), parts.netloc.lower())
    gate = gates.get(key)
    if gate is None:
        gate = gates[key] = OriginGate()
    return gate


def unreachable(error: BaseException | None) -> bool:
    """True for a failure to connect at all (refused, unreachable, DNS): no server answered."""
    return isinstance(error, httpx.ConnectError)
