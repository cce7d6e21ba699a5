"""Bookkeeping of an event stream: its counters (``StreamStats``) and the recent-id set."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["RecentIds", "StreamStats"]

#: How many recent event ids are remembered to drop replayed duplicates.
RECENT_IDS = 4096


@attrs.frozen(kw_only=True)
class StreamStats:
    """A snapshot of an event stream's counters.

    Attributes:
        connections: Connections that got a 2xx response.
        reconnects: ``connections - 1`` when positive: successful reopenings.
        failures: Connection attempts or connections that counted as failures.
        bytes: Body bytes received.
        frames: SSE frames decoded (pings and control frames included).
        events: Events queued for the consumer.
        duplicates: Frames dropped because their id was already queued.
        skipped: Frames that were not JSON objects or did not fit their event type.
        unknown: Events of a ``type`` this client does not know (queued as ``UnknownEvent``).
        pings: ``ping`` frames.
        gaps: Seconds from each connection's end to the next successful open.
    """

    connections: int = 0
    reconnects: int = 0
    failures: int = 0
    bytes: int = 0
    frames: int = 0
    events: int = 0
    duplicates: int = 0
    skipped: int = 0
    unknown: int = 0
    pings: int = 0
    gaps: tuple[float, ...] = ()


@attrs.define
class _Counters:
    connections: int = 0
    failures: int = 0
    bytes: int = 0
    frames: int = 0
    events: int = 0
    duplicates: int = 0
    skipped: int = 0
    unknown: int = 0
    pings: int = 0
    gaps: list[float] = attrs.field(factory=list)

    def snapshot(self) -> StreamStats:
        fields = attrs.asdict(self, recurse=False)
        fields["gaps"] = tuple(self.gaps)
        return StreamStats(reconnects=max(0, self.connections - 1), **fields)


class RecentIds:
    """A bounded set of the most recent event ids."""

    def __init__(self, ids: Iterable[str], size: int = RECENT_IDS) -> None:
        self._order: deque[str] = deque()
        self._set: set[str] = set()
        self._size = size
        for i in ids:
            self.add(i)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._set

    def ids(self) -> list[str]:
        """The ids remembered, oldest first."""
        return list(self._order)

    def add(self, event_id: str) -> None:
        """Remember ``event_id``, forgetting the oldest one when full."""
        known = self._set
        if event_id in known:
            return
        order = self._order
        if len(order) >= self._size:
            known.discard(order.popleft())
        order.append(event_id)
        known.add(event_id)
