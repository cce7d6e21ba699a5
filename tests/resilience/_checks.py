"""Checks of the resilience matrix: callback identities, exactly-once, the Last-Event-ID chain."""

from __future__ import annotations

import itertools
import json
from typing import TYPE_CHECKING, Any, TypeAlias

from arkor_trio.testing import CutKind

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from arkor_trio.testing import ConnectionRecord

#: Short names for the rows of the fault matrices.
CLEAN, MID, RESET, AFTER_ID = CutKind.CLEAN, CutKind.MID_FRAME, CutKind.RESET, CutKind.AFTER_ID
STALL, REFUSED, STATUS, DROP = CutKind.STALL, CutKind.REFUSED, CutKind.STATUS, CutKind.HEADERS_DROP
#: The stall rows' watchdog: far below the proxy's 1 s stall, so the client must notice.
IDLE = 0.3

#: What a callback saw, and what the backend logged, reduced to comparable tuples.
Identity: TypeAlias = tuple[Any, ...]
TERMINAL_KINDS = frozenset({"completed", "failed", "cancelled"})


def artifacts_key(artifacts: Sequence[Any] | None) -> str:
    """Artifacts as a canonical JSON string (comparable, hashable)."""
    return json.dumps(list(artifacts or []), sort_keys=True)


def identity_of_payload(payload: Mapping[str, Any]) -> Identity:
    """An event as logged by the backend (wire JSON), reduced to what a callback can see."""
    kind = payload["type"]
    if kind == "training.started":
        return ("started",)
    if kind == "training.log":
        return (
            "log",
            payload["step"],
            payload.get("loss"),
            payload.get("evalLoss"),
            payload.get("learningRate"),
            payload.get("epoch"),
        )
    if kind == "checkpoint.saved":
        return ("checkpoint", payload["step"], artifacts_key(payload.get("artifacts")))
    if kind == "training.completed":
        return ("completed", artifacts_key(payload.get("artifacts")))
    if kind == "training.failed":
        return ("failed", payload.get("error"))
    if kind == "training.cancelled":
        return ("cancelled",)
    return ("unknown", kind)


def stream_records(records: Sequence[ConnectionRecord]) -> list[ConnectionRecord]:
    """The stream connections (and refused ones, which never sent a request)."""
    return [r for r in records if r.path is None or "/events/stream" in r.path]


def expected_resume_ids(
    records: Sequence[ConnectionRecord], *, total: int, start: int = 0
) -> list[str | None]:
    """The ``Last-Event-ID`` each stream request must carry, from the proxy's frame counts.

    A connection that got a 200 delivered ``events_passed`` complete frames, which are events
    ``x+1, x+2, ...`` after its own resume point ``x`` (then ``end``): the next request resumes
    from the last of them. Half frames, ``id:`` lines of cut frames, error answers and refused
    connections move nothing.
    """
    position = start
    expected: list[str | None] = []
    for record in records:
        if record.method is None:
            continue  # refused or dropped before the request head: no header was seen
        expected.append(str(position) if position else None)
        if record.status == 200:
            position += min(record.events_passed, total - position)
    return expected


def seen_resume_ids(records: Sequence[ConnectionRecord]) -> list[str | None]:
    """The ``Last-Event-ID`` headers the proxy forwarded, for requests it read."""
    return [r.last_event_id for r in records if r.method is not None]


def assert_resume_chain(
    records: Sequence[ConnectionRecord], *, total: int, start: int = 0
) -> list[str | None]:
    """Assert every stream request resumed from the last complete frame; return the ids."""
    seen = seen_resume_ids(records)
    assert seen == expected_resume_ids(records, total=total, start=start)
    numbers = [int(i) if i else 0 for i in seen]
    assert numbers == sorted(numbers), f"Last-Event-ID went backwards: {seen}"
    return seen


def assert_exactly_once(
    calls: Sequence[Identity], saved: Sequence[str], log: Sequence[tuple[str, Identity]]
) -> None:
    """Callbacks and committed cursors match the backend's log: no loss, no duplicate, order."""
    assert len(calls) == len(saved), (len(calls), len(saved))
    dispatched = list(zip(saved, calls, strict=True))
    assert dispatched == list(log)
    assert len(set(saved)) == len(saved)
    terminal = [c for c in calls if c[0] in TERMINAL_KINDS]
    assert len(terminal) == 1, f"terminal callbacks: {terminal}"
    assert calls[-1] is terminal[0]


def cuts(records: Sequence[ConnectionRecord]) -> list[CutKind | None]:
    """The cut kind of every stream connection, in order."""
    return [r.cut_kind for r in records]


def gaps_after(records: Sequence[ConnectionRecord], kind: CutKind) -> list[float]:
    """Seconds from each ``kind`` cut to the next connection's accept (proxy clock)."""
    out = []
    for record, following in itertools.pairwise(records):
        if record.cut_kind is kind and record.cut_at is not None:
            out.append(following.opened_at - record.cut_at)
    return out
