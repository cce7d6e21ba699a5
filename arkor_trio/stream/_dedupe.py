"""Dropping replayed frames: the recent-id window and the replay guard of a channel.

Ids are opaque strings, so a duplicate is recognised by identity, not by order (design.md section 3,
rule 2): a bounded window of the most recent ids catches a server that resends a few frames.

A server that ignores ``Last-Event-ID`` and replays its whole history can replay more frames than
any window holds: each id would be forgotten just before its duplicate arrives. The guard catches
that case from the first id-bearing frame of a reconnection: when it is an id this channel already
saw (in the window, or the first id of an earlier connection: the start of a replay from the
beginning), the server is replaying, and every frame is dropped until the replay passes the
resume point, that is, until the id the channel resumed from arrives, or (when the resume id was
an id-only block that dispatches no frame) a frame after the known ids arrives.

What this cannot see: a server that ignores ``Last-Event-ID`` on a channel's *first* connection
(a new process resuming from a stored cursor) sends ids this process never saw, so they are
dispatched. Such a server breaks resumption for every client; ours and the Arkor cloud honour it.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["RECENT_IDS", "DuplicateFilter", "RecentIds"]

#: How many recent event ids are remembered to drop replayed duplicates.
RECENT_IDS = 4096
#: How many connections' first ids are kept as replay anchors.
ANCHORS = 32


class RecentIds:
    """A bounded set of the most recent event ids: the last ``size`` to ``2 * size`` of them.

    Two generations of a set: ids go into the current one; when it holds ``size`` ids it becomes
    the previous one (the one before is forgotten). One set insertion per id, no ordering
    bookkeeping: the window costs O(1) per id and at most ``2 * size`` ids of memory.
    """

    __slots__ = ("current", "previous", "size")

    def __init__(self, ids: Iterable[str] = (), size: int = RECENT_IDS) -> None:
        #: The newer generation (ids in insertion order).
        self.current: dict[str, None] = {}
        #: The older generation.
        self.previous: dict[str, None] = {}
        self.size = size
        for i in ids:
            self.add(i)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self.current or event_id in self.previous

    def __len__(self) -> int:
        return len(self.current) + len(self.previous)

    def ids(self) -> list[str]:
        """The ids remembered, oldest first."""
        return [*self.previous, *self.current]

    def add(self, event_id: str) -> None:
        """Remember ``event_id``; the oldest generation goes when the current one is full."""
        current = self.current
        if event_id in current:
            return
        current[event_id] = None
        if len(current) >= self.size:
            self.previous = current
            self.current = {}


class DuplicateFilter:
    """Which frames of a channel were already delivered; shared by every connection of it.

    Call :meth:`connection` when a connection opens, :meth:`seen` for each frame (in order), and
    :meth:`add` for each frame delivered. A trainer keeps one filter across its ``wait()`` calls.

    Args:
        ids: Ids already delivered, oldest first.
        anchors: First ids of earlier connections (from :meth:`anchors` of a previous filter).
        size: How many recent ids the window holds.
    """

    __slots__ = (
        "_anchors",
        "_candidate",
        "_first",
        "_known_since",
        "_recent",
        "_resume",
        "_skipping",
    )

    def __init__(
        self, ids: Iterable[str] = (), *, anchors: Iterable[str] = (), size: int = RECENT_IDS
    ) -> None:
        self._recent = RecentIds(ids, size)
        self._anchors: deque[str] = deque(anchors, maxlen=ANCHORS)
        #: A connection's first new id: an anchor once delivered (a frame dropped or refused
        #: after it was seen must not look like the start of a replay when it comes again).
        self._candidate: str | None = None
        self._first = True
        self._resume = ""
        self._skipping = False
        self._known_since = False

    @property
    def skipping(self) -> bool:
        """True while a detected replay is being dropped (the resume point not yet passed)."""
        return self._skipping

    @property
    def resume_id(self) -> str:
        """The id the current connection resumed from (``""`` for none)."""
        return self._resume

    def ids(self) -> list[str]:
        """The ids in the recent window, oldest first."""
        return self._recent.ids()

    def anchors(self) -> list[str]:
        """The first ids of the connections seen (where a full replay would start)."""
        return list(self._anchors)

    def connection(self, resume_id: str) -> None:
        """A connection opened that asked to resume after ``resume_id`` (``""`` for none)."""
        self._first = True
        self._candidate = None
        self._resume = resume_id
        self._skipping = False
        self._known_since = False

    def seen(self, frame_id: str | None) -> bool:
        """True when the frame with this own ``id:`` must be dropped as already delivered."""
        if not (self._first or self._skipping):  # the hot path
            recent = self._recent
            return frame_id is not None and (
                frame_id in recent.current or frame_id in recent.previous
            )
        if self._skipping:
            return self._skip(frame_id)
        if not frame_id:
            return False
        if self._first:
            self._first = False
            replay = frame_id in self._recent or frame_id in self._anchors
            if not replay:
                self._candidate = frame_id
            elif self._resume:
                self._skipping = True
                return self._skip(frame_id)
        return frame_id in self._recent

    def _skip(self, frame_id: str | None) -> bool:
        if not frame_id:
            return True
        if frame_id == self._resume:
            self._skipping = False  # the replay reached the resume point: what follows is new
            return True
        if frame_id in self._recent:
            self._known_since = True
            return True
        if self._known_since:
            # A new id after known ones: the replay passed a resume point that had no frame.
            self._skipping = False
            return False
        return True  # still in the part of the replay older than the window

    def add(self, frame_id: str) -> None:
        """Remember a delivered frame's id."""
        if self._candidate is not None:
            if frame_id == self._candidate:
                self._anchors.append(frame_id)
            self._candidate = None
        recent = self._recent
        current = recent.current
        current[frame_id] = None
        if len(current) >= recent.size:
            recent.previous = current
            recent.current = {}
