"""Bookkeeping of a channel: its live counters and their frozen snapshot, ``StreamStats``."""

from __future__ import annotations

import attrs

__all__ = ["StreamCounters", "StreamStats"]


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
    gaps: list[float] = attrs.field(factory=list)

    def snapshot(self) -> StreamStats:
        fields = attrs.asdict(self, recurse=False)
        fields["gaps"] = tuple(self.gaps)
        return StreamStats(reconnects=max(0, self.connections - 1), **fields)
