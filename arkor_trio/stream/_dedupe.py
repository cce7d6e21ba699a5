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

from bisect import bisect_right
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["MAX_RUNS", "RECENT_IDS", "DuplicateFilter", "RecentIds"]

#: How many recent event ids are remembered to drop replayed duplicates.
RECENT_IDS = 4096
#: How many connections' first ids are kept as replay anchors.
ANCHORS = 32


#: How many separate ranges of numeric ids a :class:`RecentIds` keeps before it falls back to
#: its window of id strings.
MAX_RUNS = 8
#: The longest numeric id kept as a number (a longer one makes the window take over).
_MAX_DIGITS = 18
#: The window's generations while the ids are kept as ranges (never written to).
_NONE: dict[str, None] = {}


def _number(event_id: str) -> int | None:
    """The id as a number when it is written as one canonically (``"7"``, not ``"07"``)."""
    if (
        event_id.isdigit()
        and event_id.isascii()
        and len(event_id) <= _MAX_DIGITS
        and (event_id[0] != "0" or len(event_id) == 1)
    ):
        return int(event_id)
    return None


class RecentIds:
    """A bounded set of the most recent event ids: the last ``size`` to ``2 * size`` of them.

    While the ids arrive in ascending order as decimal numbers written canonically, in at
    most :data:`MAX_RUNS` ranges of consecutive numbers (a job's ids on the local backend: 1,
    2, 3, ...), the set is those ranges: a few integers whatever the number of ids, so a
    followed job costs next to nothing while it is idle. The lowest (the oldest) ids go once
    ``2 * size`` are held; the last ``size`` stay. Membership is still by identity: ``"7"`` is
    in the set only when ``"7"`` itself was added.

    Any other id (not a canonical number, lower than the highest without being in the set, or
    one range too many) turns the set into the window it starts as for such ids: two
    generations of a set; ids go into the current one; when it holds ``size`` ids it becomes
    the previous one (the one before is forgotten). Every id of the ranges carries over. Either
    way O(1) per id in order, and the last ``size`` ids added are always remembered (at most
    ``3 * size`` in all, right after the ranges gave way, else ``2 * size``).
    """

    __slots__ = ("_count", "_next", "_runs", "current", "previous", "size")

    def __init__(self, ids: Iterable[str] = (), size: int = RECENT_IDS) -> None:
        #: The newer generation (ids in insertion order); unused while ``_runs`` is set.
        self.current: dict[str, None] = _NONE
        #: The older generation.
        self.previous: dict[str, None] = _NONE
        #: Ranges of numeric ids, ``[first0, last0, first1, last1, ...]`` in ascending order, or
        #: None once the window took over.
        self._runs: list[int] | None = None if size < 1 else []
        #: The id right after the highest (``str(last + 1)``): the next one in order, taken
        #: without parsing it; None without ranges.
        self._next: str | None = None
        #: How many ids the ranges hold.
        self._count = 0
        if size < 1:
            self.current, self.previous = {}, {}
        self.size = size
        for i in ids:
            self.add(i)

    @property
    def ranged(self) -> bool:
        """True while the ids are kept as ranges of numbers (not as a window of strings)."""
        return self._runs is not None

    def copy(self) -> RecentIds:
        """An independent set holding the same ids."""
        clone = RecentIds((), self.size)
        runs = self._runs
        if runs is not None:
            clone._runs = runs.copy()
            clone._next, clone._count = self._next, self._count
        else:
            clone._runs = None
            clone.current, clone.previous = dict(self.current), dict(self.previous)
        return clone

    def __contains__(self, event_id: str) -> bool:
        runs = self._runs
        if runs is None:
            return event_id in self.current or event_id in self.previous
        if not runs or event_id == self._next:
            return False
        number = _number(event_id)
        if number is None or number > runs[-1]:
            return False
        if number >= runs[-2]:
            return True
        at = bisect_right(runs, number)
        return at % 2 == 1 or runs[at - 1] == number

    def __len__(self) -> int:
        if self._runs is None:
            return len(self.current) + len(self.previous)
        return self._count

    def ids(self) -> list[str]:
        """The ids remembered, oldest first (numeric ids: in ascending order)."""
        runs = self._runs
        if runs is None:
            return [*self.previous, *self.current]
        return [str(n) for i in range(0, len(runs), 2) for n in range(runs[i], runs[i + 1] + 1)]

    def add(self, event_id: str) -> None:
        """Remember ``event_id``; the oldest go when ``2 * size`` are held."""
        runs = self._runs
        if runs is not None:
            if event_id == self._next:  # the next id in order: the common case
                last = runs[-1] + 1
                runs[-1] = last
                self._next = str(last + 1)
                count = self._count = self._count + 1
                if count >= 2 * self.size:
                    self._trim()
                return
            number = _number(event_id)
            if number is not None and self._insert(runs, number):
                return
            self._to_window()
        current = self.current
        if event_id in current:
            return
        current[event_id] = None
        if len(current) >= self.size:
            self.previous = current
            self.current = {}

    def _insert(self, runs: list[int], number: int) -> bool:
        """Add ``number`` as a new highest range, or find it already there; False: the window
        must take over (an id lower than the highest one that is not in a range, or a range too
        many)."""
        if not runs or number > runs[-1]:
            if len(runs) >= 2 * MAX_RUNS:
                return False
            runs += (number, number)
            self._next = str(number + 1)
            self._count += 1
            if self._count >= 2 * self.size:
                self._trim()
            return True
        at = bisect_right(runs, number)
        return at % 2 == 1 or runs[at - 1] == number  # already there: nothing changes

    def _trim(self) -> None:
        """Forget the lowest ids until ``size`` are left."""
        runs = self._runs
        assert runs is not None
        excess = self._count - self.size
        self._count -= max(0, excess)
        while excess > 0:
            span = runs[1] - runs[0] + 1
            if span <= excess:
                del runs[0:2]
                excess -= span
            else:
                runs[0] += excess
                excess = 0

    def _to_window(self) -> None:
        """Keep the ids as a window of strings from now on (all of them carry over: fewer than
        ``2 * size``, in the order they came)."""
        kept = self.ids()
        self._runs = None
        self._next = None
        self.previous = dict.fromkeys(kept)
        self.current = {}


class DuplicateFilter:
    """Which frames of a channel were already delivered; shared by every connection of it.

    Call :meth:`connection` when a connection opens, :meth:`seen` for each frame (in order), and
    :meth:`add` for each frame delivered. A trainer keeps one filter across its ``wait()`` calls.

    Args:
        ids: Ids already delivered, oldest first (or a :class:`RecentIds`, copied).
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
        self,
        ids: Iterable[str] | RecentIds = (),
        *,
        anchors: Iterable[str] = (),
        size: int = RECENT_IDS,
    ) -> None:
        self._recent = ids.copy() if isinstance(ids, RecentIds) else RecentIds(ids, size)
        #: Oldest first, at most ANCHORS (a list: a deque's first block costs ~600 bytes).
        self._anchors: list[str] | None = None
        for anchor in anchors:
            self._anchor(anchor)
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
        return list(self._anchors) if self._anchors is not None else []

    def _anchor(self, anchor: str) -> None:
        anchors = self._anchors
        if anchors is None:
            self._anchors = [anchor]
            return
        anchors.append(anchor)
        if len(anchors) > ANCHORS:
            del anchors[0]

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
            if recent._runs is None:
                return frame_id is not None and (
                    frame_id in recent.current or frame_id in recent.previous
                )
            if frame_id == recent._next:  # the next id in order: new
                return False
            return frame_id is not None and frame_id in recent
        if self._skipping:
            return self._skip(frame_id)
        if not frame_id:
            return False
        if self._first:
            self._first = False
            anchors = self._anchors
            replay = frame_id in self._recent or (anchors is not None and frame_id in anchors)
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
                self._anchor(frame_id)
            self._candidate = None
        recent = self._recent
        if recent._runs is None:
            current = recent.current
            current[frame_id] = None
            if len(current) >= recent.size:
                recent.previous = current
                recent.current = {}
        else:
            recent.add(frame_id)
