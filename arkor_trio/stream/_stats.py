"""Bookkeeping of a channel: its live counters and their frozen snapshot, ``StreamStats``."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["GAPS_KEPT", "GapLog", "StreamCounters", "StreamStats"]

#: How many of the most recent reconnect gaps a channel keeps (the rest only counted).
GAPS_KEPT = 64


class GapLog:
    """Reconnect gaps in bounded memory: the last :data:`GAPS_KEPT` of them, plus the count,
    the sum and the longest of all (a channel reconnecting for days keeps a few hundred bytes)."""

    __slots__ = ("count", "longest", "recent", "total")

    def __init__(self) -> None:
        self.recent: deque[float] = deque(maxlen=GAPS_KEPT)
        self.count = 0
        self.total = 0.0
        self.longest = 0.0

    def append(self, seconds: float) -> None:
        """Record one gap."""
        self.recent.append(seconds)
        self.count += 1
        self.total += seconds
        self.longest = max(self.longest, seconds)

    def __len__(self) -> int:
        return len(self.recent)

    def __iter__(self) -> Iterator[float]:
        return iter(self.recent)


@attrs.frozen(kw_only=True)
class StreamStats:
    """A snapshot of an event stream's counters.

    Attributes:
        connections: Connections that got a 2xx response.
        reconnects: ``connections - 1`` when positive: successful reopenings.
        failures: Connection attempts or connections that counted as failures.
        bytes: Body bytes received.
        frames: SSE frames decoded (pings and control frames included).
        events: Items queued for the consumer.
        duplicates: Frames dropped because their id was already delivered (or a detected replay
            of a server that ignored ``Last-Event-ID`` had not yet passed the resume point).
        skipped: Frames the item decoder refused (e.g. not JSON objects, or not fitting their
            event type); never for a plain :func:`open_sse`, which yields every frame.
        unknown: Events of a ``type`` the item decoder does not know (job stream:
            queued as ``UnknownEvent``).
        pings: Keep-alive frames the item decoder dropped (job stream: ``ping`` frames).
        gaps: Seconds from a connection's end to the next successful open: the last 64 gaps.
        gap_count: How many gaps there were in all.
        gap_total: Their sum, seconds.
        gap_max: The longest, seconds.
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
    gap_count: int = 0
    gap_total: float = 0.0
    gap_max: float = 0.0


@attrs.define
class StreamCounters:
    """The live counters behind :class:`StreamStats`; a channel's item decoder may count into
    ``pings``, ``skipped`` and ``unknown`` (see :class:`~arkor_trio.stream.SSEChannel`)."""

    connections: int = 0
    failures: int = 0
    bytes: int = 0
    frames: int = 0
    events: int = 0
    duplicates: int = 0
    skipped: int = 0
    unknown: int = 0
    pings: int = 0
    gaps: GapLog = attrs.field(factory=GapLog)

    def snapshot(self) -> StreamStats:
        fields = attrs.asdict(self, recurse=False)
        gaps = self.gaps
        fields["gaps"] = tuple(gaps.recent)
        return StreamStats(
            reconnects=max(0, self.connections - 1),
            gap_count=gaps.count,
            gap_total=gaps.total,
            gap_max=gaps.longest,
            **fields,
        )
