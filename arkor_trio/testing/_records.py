"""What the chaos proxy records about each connection, measured from outside the client."""

from __future__ import annotations

import enum
import time
from typing import Literal, TypeAlias

import attrs
import trio

from ._plan import Fault

__all__ = ["ConnState", "ConnectionRecord", "CutKind", "EndedBy"]

EndedBy: TypeAlias = Literal["complete", "proxy", "client", "upstream", "error"]


class CutKind(enum.StrEnum):
    """How the proxy cut a connection (the fault that ended it)."""

    CLEAN = "clean"
    MID_FRAME = "mid_frame"
    AFTER_ID = "after_id"
    BYTES = "bytes"
    RESET = "reset"
    STALL = "stall"
    REFUSED = "refused"
    STATUS = "status"
    HEADERS_DROP = "headers_drop"


@attrs.frozen(kw_only=True)
class ConnectionRecord:
    """A snapshot of one proxied connection.

    Times ending in ``_at`` come from ``trio.current_time()`` (virtual under a MockClock); those
    ending in ``_wall`` from ``time.perf_counter()``. Byte counts include HTTP heads and framing.

    Attributes:
        index: Accept order, from 0.
        faults: The plan step applied to this connection.
        opened_at: When the connection was accepted.
        opened_wall: The same, on the wall clock.
        method: The request method (None when no request head arrived).
        path: The request target.
        last_event_id: The request's ``Last-Event-ID`` header, None when absent.
        status: The response status sent downstream (None when none was sent).
        cut_kind: How the proxy cut the connection, None when it did not.
        cut_at: When the cut happened (for a stall: when forwarding stopped).
        cut_wall: The same, on the wall clock.
        bytes_up: Bytes forwarded upstream (request head and body).
        bytes_down: Bytes written downstream.
        events_passed: Complete SSE frames written downstream.
        ended_by: ``"complete"`` (whole response forwarded), ``"proxy"`` (a fault, or the proxy
            shutting down), ``"client"`` (the client went away first), ``"upstream"``
            (unreachable, or closed early), ``"error"`` (malformed request); None while open.
        closed_at: When the proxy closed the downstream side, None while open.
        closed_wall: The same, on the wall clock.
    """

    index: int
    faults: tuple[Fault, ...]
    opened_at: float
    opened_wall: float
    method: str | None
    path: str | None
    last_event_id: str | None
    status: int | None
    cut_kind: CutKind | None
    cut_at: float | None
    cut_wall: float | None
    bytes_up: int
    bytes_down: int
    events_passed: int
    ended_by: EndedBy | None
    closed_at: float | None
    closed_wall: float | None

    def describe(self) -> str:
        """One human-readable line, as printed by ``arkor-trio chaos``."""
        request = f"{self.method} {self.path}" if self.method else "(no request)"
        parts = [f"#{self.index} {request}"]
        if self.last_event_id is not None:
            parts.append(f"last-event-id={self.last_event_id}")
        parts.append(f"status={self.status if self.status is not None else '-'}")
        parts.append(f"events={self.events_passed} up={self.bytes_up}B down={self.bytes_down}B")
        if self.cut_kind is not None and self.cut_at is not None:
            parts.append(f"cut={self.cut_kind.value}@{self.cut_at - self.opened_at:.3f}s")
        if self.closed_at is not None:
            parts.append(f"ended={self.ended_by} after {self.closed_at - self.opened_at:.3f}s")
        return " ".join(parts)


@attrs.define(kw_only=True)
class ConnState:
    """The live, mutable state behind a :class:`ConnectionRecord`."""

    index: int
    faults: tuple[Fault, ...]
    opened_at: float = attrs.field(factory=trio.current_time)
    opened_wall: float = attrs.field(factory=time.perf_counter)
    method: str | None = None
    path: str | None = None
    last_event_id: str | None = None
    status: int | None = None
    cut_kind: CutKind | None = None
    cut_at: float | None = None
    cut_wall: float | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    events_passed: int = 0
    ended_by: EndedBy | None = None
    closed_at: float | None = None
    closed_wall: float | None = None

    def cut(self, kind: CutKind) -> None:
        """Record that a fault cut the connection now."""
        self.cut_kind = kind
        self.cut_at = trio.current_time()
        self.cut_wall = time.perf_counter()
        self.finish("proxy")

    def finish(self, ended_by: EndedBy) -> None:
        """Record why the connection ends; the first reason given wins."""
        if self.ended_by is None:
            self.ended_by = ended_by

    def mark_closed(self) -> None:
        """Record the close time (once), just before the proxy closes the downstream side."""
        if self.closed_at is None:
            self.finish("proxy")
            self.closed_at = trio.current_time()
            self.closed_wall = time.perf_counter()

    def snapshot(self) -> ConnectionRecord:
        """A frozen copy of the current state."""
        return ConnectionRecord(**attrs.asdict(self, recurse=False))
