"""Scoring a client from outside: what it printed against what was sent, and the proxy's records.

One delivery is one line of the bench protocol, ``{"id": ..., "event": ..., "data": ...}``. A
delivery is *corrupt* when its id was never sent or its data differs from what was sent under that
id (data may be the text or the JSON it holds); a *duplicate* when that id was already delivered
intact; *out of order* when it is the first delivery of an id lower than one delivered before.
Memory stays bounded whatever the client prints: counts and one set of ids, plus a capped timeline.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import TYPE_CHECKING, Any, Literal

import attrs

from ._source import SentEvent, layout

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._records import ConnectionRecord

__all__ = ["Gap", "LeidCheck", "Tally", "gaps_of", "last_event_id_checks", "percentile"]

Verdict = Literal["ok", "dup", "corrupt", "order"]
#: At most this many deliveries are kept, with their time, for the report's timeline.
TIMELINE_CAP = 20000
PROGRESS_KINDS = frozenset({"clean", "mid_frame", "reset", "after_id"})


class Tally:
    """The running count of what a client delivered."""

    def __init__(self, events: Sequence[SentEvent]) -> None:
        self._sent = {e.id: e for e in events}
        self._order = {e.id: i for i, e in enumerate(events)}
        self._final = events[-1].id
        self.delivered: set[str] = set()
        self.lines = 0
        self.deliveries = 0
        self.ignored = 0
        self.dup = 0
        self.corrupt = 0
        self.out_of_order = 0
        self.final_seen = False
        self._highest = -1
        self.timeline: list[tuple[float, int, Verdict]] = []

    def line(self, raw: bytes, at: float) -> Verdict | None:
        """Count one line of the client's stdout read at ``at``; None when it is not a delivery."""
        self.lines += 1
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError):
            self.ignored += 1
            return None
        if not isinstance(record, dict) or "data" not in record:
            self.ignored += 1
            return None
        self.deliveries += 1
        verdict, position = self._judge(record)
        if len(self.timeline) < TIMELINE_CAP:
            self.timeline.append((at, position, verdict))
        return verdict

    def _judge(self, record: dict[str, Any]) -> tuple[Verdict, int]:
        ident = record.get("id")
        key = ident if isinstance(ident, str) else None if ident is None else _text(ident)
        sent = self._sent.get(key) if key is not None else None
        if sent is None or not _same(record["data"], sent.data):
            self.corrupt += 1
            return "corrupt", self._order.get(key, -1) if key is not None else -1
        position = self._order[sent.id]
        if sent.id in self.delivered:
            self.dup += 1
            return "dup", position
        self.delivered.add(sent.id)
        if sent.id == self._final:
            self.final_seen = True
        if position < self._highest:
            self.out_of_order += 1
            return "order", position
        self._highest = position
        return "ok", position

    def missing(self, *, whole: bool) -> tuple[int, int]:
        """``(lost, unreached)``: events never delivered intact.

        With ``whole`` (the client ended on its own) every missing event is lost; otherwise (it
        was stopped) those past the highest delivered are unreached, not lost.
        """
        missing = [i for i, e in enumerate(self._sent) if e not in self.delivered]
        if whole:
            return len(missing), 0
        lost = sum(1 for i in missing if i < self._highest)
        return lost, len(missing) - lost


def _text(value: object) -> str:
    return json.dumps(value) if not isinstance(value, int | float) else str(value)


def _same(data: object, sent: str) -> bool:
    if isinstance(data, str):
        return data == sent
    try:
        return bool(data == json.loads(sent))
    except ValueError:
        return False


@attrs.frozen
class Gap:
    """From a connection's end (the proxy's cut, or its close) to the next connection's accept."""

    seconds: float
    kind: str
    after_progress: bool
    index: int


def gaps_of(records: Sequence[ConnectionRecord]) -> list[Gap]:
    """One gap per connection that was cut (or lost its upstream) and followed by another.

    Times are the proxy's ``time.perf_counter`` stamps: the cut is stamped when the fault fires,
    before the proxy tears its side down.
    """
    out = []
    for record, following in itertools.pairwise(records):
        if record.cut_kind is not None and record.cut_wall is not None:
            end, kind = record.cut_wall, record.cut_kind.value
        elif record.ended_by == "upstream" and record.closed_wall is not None:
            end, kind = record.closed_wall, "upstream"
        else:
            continue
        progress = kind in PROGRESS_KINDS and record.events_passed >= 1
        out.append(Gap(following.opened_wall - end, kind, progress, record.index))
    return out


@attrs.frozen
class LeidCheck:
    """One reconnect: the ``Last-Event-ID`` it sent and the one it should have sent."""

    index: int
    sent: str | None
    expected: str | None

    @property
    def ok(self) -> bool:
        return (self.sent or None) == self.expected


def last_event_id_checks(
    records: Sequence[ConnectionRecord], events: Sequence[SentEvent], retry_ms: int
) -> list[LeidCheck]:
    """Check every connection after the first that sent a request.

    The right ``Last-Event-ID`` is the id of the last complete frame with an id that the proxy
    passed to the client on any earlier connection (a frame cut after its ``id:`` line does not
    count: its id is never dispatched). The source's body is a known function of the id asked for
    (:func:`layout`), so the proxy's count of complete frames tells which ids passed.
    """
    checks = []
    expected: str | None = None
    first = True
    for record in records:
        if record.method is None:
            continue
        if not first:
            checks.append(LeidCheck(record.index, record.last_event_id, expected))
        first = False
        if record.events_passed and record.status == 200:
            frames = layout(events, record.last_event_id, retry_ms)[: record.events_passed]
            ids = [f.id for f in frames if f.id is not None]
            if ids:
                expected = ids[-1]
    return checks


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
