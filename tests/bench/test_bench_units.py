"""Units of the bench engine: the script and its layout, scoring, Last-Event-ID checks, reports."""

from __future__ import annotations

import json
import re

import attrs
import pytest

from arkor_trio._errors import ConfigError
from arkor_trio.testing import ConnectionRecord, CutKind, PassThrough
from arkor_trio.testing.bench import (
    DEFAULT_PROFILES,
    BenchConfig,
    BenchReport,
    gaps_of,
    layout,
    parse_profiles,
    percentile,
    render_html,
    render_table,
    script,
    to_json,
)
from arkor_trio.testing.bench._run import ProfileResult
from arkor_trio.testing.bench._score import Tally, last_event_id_checks

EVENTS = script(20)


def line(event_id: object, data: object) -> bytes:
    return json.dumps({"id": event_id, "event": "tick", "data": data}).encode()


def test_the_script_is_seeded_checksummed_and_ends_with_the_final_event() -> None:
    assert script(20) == EVENTS
    assert script(20, seed=8) != EVENTS
    assert [e.id for e in EVENTS] == [str(n) for n in range(1, 22)]
    assert EVENTS[-1].data == '{"final": true}'
    assert "\n" in EVENTS[9].data  # split over two data lines
    assert json.loads(EVENTS[9].data)["n"] == 10
    assert EVENTS[4].event == "message"


def test_the_layout_resumes_after_the_id_asked_for() -> None:
    whole = layout(EVENTS, None, 100)
    assert whole[0].raw == b"retry: 100\n\n"
    assert [f.id for f in whole if f.id] == [e.id for e in EVENTS]
    assert b": keep-alive\n\n" in [f.raw for f in whole]
    assert b"\r\n" in b"".join(f.raw for f in whole)
    resumed = layout(EVENTS, "7", 100)
    assert next(f.id for f in resumed if f.id) == "8"
    assert layout(EVENTS, "no such id", 100) == whole


def test_tally_counts_each_kind_of_delivery_once() -> None:
    tally = Tally(EVENTS)
    verdicts = [
        tally.line(line("1", EVENTS[0].data), 0.0),
        tally.line(line(3, json.loads(EVENTS[2].data)), 0.1),  # a number id, parsed data: fine
        tally.line(line("2", EVENTS[1].data), 0.2),  # after 3: out of order
        tally.line(line("3", EVENTS[2].data), 0.3),  # again: a duplicate
        tally.line(line("4", EVENTS[3].data[:-5]), 0.4),  # half the data
        tally.line(line(None, EVENTS[4].data), 0.5),  # no id
        tally.line(line("99", "x"), 0.6),  # an id never sent
        tally.line(b"not json", 0.7),
        tally.line(b'{"id": "5"}', 0.8),  # no data: not a delivery
    ]
    assert verdicts == ["ok", "ok", "order", "dup", "corrupt", "corrupt", "corrupt", None, None]
    assert (tally.dup, tally.corrupt, tally.out_of_order, tally.ignored) == (1, 3, 1, 2)
    assert tally.missing(whole=True) == (18, 0)
    assert tally.missing(whole=False) == (0, 18)  # stopped: nothing below event 3 is missing
    assert not tally.final_seen
    tally.line(line("21", '{"final": true}'), 1.0)
    assert tally.final_seen


def record(index: int, **fields: object) -> ConnectionRecord:
    base = {
        "index": index, "faults": (PassThrough(),), "opened_at": float(index),
        "opened_wall": float(index), "method": "GET", "path": "/events", "last_event_id": None,
        "status": 200, "cut_kind": None, "cut_at": None, "cut_wall": None, "bytes_up": 0,
        "bytes_down": 0, "events_passed": 0, "ended_by": "complete", "closed_at": None,
        "closed_wall": None,
    }  # fmt: skip
    return ConnectionRecord(**{**base, **fields})  # type: ignore[arg-type]


def test_last_event_id_checks_follow_what_the_proxy_passed() -> None:
    # 1 + 5 frames: retry, events 1..5 (no comment before index 7); then resumed after "5":
    # events 6, 7 then the comment, 8.
    records = [
        record(0, events_passed=6, cut_kind=CutKind.CLEAN, cut_wall=0.5),
        record(1, last_event_id="5", status=503, cut_kind=CutKind.STATUS, cut_wall=1.2),
        record(2, method=None, cut_kind=CutKind.REFUSED, cut_wall=2.0),
        record(3, last_event_id="5", events_passed=5, cut_kind=CutKind.MID_FRAME, cut_wall=3.1),
        record(4, last_event_id="7"),
    ]
    checks = last_event_id_checks(records, EVENTS, 100)
    assert [(c.index, c.sent, c.expected, c.ok) for c in checks] == [
        (1, "5", "5", True),
        (3, "5", "5", True),
        (4, "7", "8", False),  # frames: retry, 6, 7, comment, 8: event 8 was passed whole
    ]
    gaps = gaps_of(records)
    assert [(g.index, g.kind, round(g.seconds, 3)) for g in gaps] == [
        (0, "clean", 0.5), (1, "status", 0.8), (2, "refused", 1.0), (3, "mid_frame", 0.9),
    ]  # fmt: skip
    assert percentile([g.seconds for g in gaps], 50) == pytest.approx(0.85)


def test_unknown_profiles_are_refused_with_the_known_ones_named() -> None:
    assert parse_profiles("clean, 503,clean") == ["clean", "503"]
    with pytest.raises(ConfigError, match=r"unknown profile 'cleen' \(known: none, clean"):
        parse_profiles("cleen")
    with pytest.raises(ConfigError, match="no profile"):
        parse_profiles(" , ")


def result(profile: str, **fields: object) -> ProfileResult:
    base = {
        "profile": profile, "description": "d <b>", "connections": 2,
        "gaps": gaps_of([record(0, cut_kind=CutKind.RESET, cut_wall=0.25), record(1)]),
        "deliveries": 21, "lost": 0, "unreached": 0, "dup": 0, "corrupt": 0, "out_of_order": 0,
        "leid": [], "wall": 2.0, "ended": "completed", "completed": True, "returncode": 0,
        "ignored_lines": 0, "oversized_lines": 0, "stdout_bytes": 10, "stderr": "<oops>",
        "started": 0.0, "records": [record(0, cut_kind=CutKind.RESET, cut_wall=0.25), record(1)],
        "timeline": [(0.3, 0, "ok"), (0.4, 0, "dup")],
    }  # fmt: skip
    return ProfileResult(**{**base, **fields})  # type: ignore[arg-type]


def test_reports_compare_wall_time_with_the_clean_run_and_escape_what_the_client_said() -> None:
    report = BenchReport(
        BenchConfig(command=("client", "{url}"), profiles=DEFAULT_PROFILES[:2]),
        [result("clean"), result("mid-frame", wall=3.0, dup=2, lost=1, unreached=4)],
    )
    table = render_table(report)
    assert "| mid-frame | 2     | 1    | 750" in table
    assert "1 (+4 unreached) | 2   |" in table
    assert "3.00 (1.5x)" in table
    data = to_json(report)
    assert data["profiles"][1]["wall_x_clean"] == 1.5
    assert data["profiles"][0]["gap_list"] == [{"s": 0.75, "kind": "reset", "after": 0}]
    page = render_html(data)
    assert "<oops>" not in page
    assert "&lt;oops&gt;" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # self-contained: nothing fetched
    assert "<script" not in page
    unfinished = attrs.evolve(result("clean"), completed=False, ended="killed at deadline")
    assert BenchReport(report.config, [unfinished]).wall_ratio(unfinished) is None
