"""``arkor-trio bench`` against clients with one deliberate defect each, and a correct one.

Each client (tests/bench/sse_client.py) logs every line it prints, tagged when the line comes
from its defect; the tool, which only sees the client's stdout and the proxy's records, must
count exactly that. Few events and a fixed seed keep every run small and the same each time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from arkor_trio.testing.bench import (
    DEFAULT_PROFILES,
    BenchConfig,
    BenchReport,
    ProfileResult,
    run_bench,
    script,
)

CLIENT = Path(__file__).resolve().parent / "sse_client.py"
EVENTS = 40
SEED = 1


async def bench(
    tmp_path: Path, profiles: tuple[str, ...], *options: str, deadline: float = 20.0
) -> tuple[BenchReport, list[list[dict[str, Any]]]]:
    """Run the test client with ``options`` once per profile; return the report and its logs."""
    command = (sys.executable, str(CLIENT), "{url}", "--log", str(tmp_path), *options)
    config = BenchConfig(
        command=command, profiles=profiles, events=EVENTS, seed=SEED, deadline=deadline
    )
    report = await run_bench(config)
    logs = [
        [json.loads(row) for row in path.read_text().splitlines()]
        for path in sorted(tmp_path.glob("*.jsonl"))
    ]
    assert len(logs) == len(profiles)  # one run of the client per profile
    return report, logs


def reference(log: list[dict[str, Any]]) -> dict[str, int]:
    """Lost, duplicated, corrupt and out-of-order counts of the lines a client printed."""
    sent = {event.id: event.data for event in script(EVENTS, seed=SEED)}
    order = list(sent)
    seen: set[str] = set()
    counts = {"dup": 0, "corrupt": 0, "order": 0}
    highest = -1
    for entry in log:
        line = json.loads(entry["line"])
        if sent.get(line["id"]) != line["data"]:
            counts["corrupt"] += 1
        elif line["id"] in seen:
            counts["dup"] += 1
        else:
            seen.add(line["id"])
            position = order.index(line["id"])
            counts["order"] += position < highest
            highest = max(highest, position)
    return {**counts, "lost": len(sent) - len(seen)}


def counts(result: ProfileResult) -> dict[str, int]:
    return {
        "dup": result.dup,
        "corrupt": result.corrupt,
        "order": result.out_of_order,
        "lost": result.lost,
    }


def tagged(log: list[dict[str, Any]], tag: str) -> int:
    return sum(entry["tag"] == tag for entry in log)


async def test_a_correct_client_scores_zero_in_every_profile(tmp_path: Path) -> None:
    report, logs = await bench(tmp_path, DEFAULT_PROFILES)
    for result, log in zip(report.results, logs, strict=True):
        assert counts(result) == reference(log) == {"dup": 0, "corrupt": 0, "order": 0, "lost": 0}
        assert result.ended == "completed", result.profile
        assert result.deliveries == EVENTS + 1
        assert result.leid, result.profile
        assert result.leid_ok == len(result.leid), result.profile
        assert len(result.gaps) == result.connections - 1 >= 1, result.profile
    assert {r.profile for r in report.results} == set(DEFAULT_PROFILES)


async def test_a_client_that_never_sends_last_event_id(tmp_path: Path) -> None:
    # Every connection starts over and is cut after 4..16 events: it never gets to the end.
    profiles = ("clean", "restart")
    report, logs = await bench(tmp_path, profiles, "--defect", "no-leid", deadline=2.0)
    for result, log in zip(report.results, logs, strict=True):
        assert result.ended == "killed at deadline"
        expected = reference(log)
        # Stopped by the deadline, the events past the highest one delivered are unreached.
        expected["lost"] -= result.unreached
        assert counts(result) == expected
        assert result.dup > 0
        assert result.leid
        assert result.leid_ok == 0  # every reconnect should have sent one
        assert all(check.sent is None and check.expected is not None for check in result.leid)


async def test_a_client_that_hands_on_a_cut_frames_half(tmp_path: Path) -> None:
    report, (log,) = await bench(tmp_path, ("mid-frame",), "--defect", "partial")
    (result,) = report.results
    assert counts(result) == reference(log)
    partial = tagged(log, "partial")
    assert partial > 0
    assert result.corrupt == partial
    # It commits the half frame's id, so the source resumes after it: that event is lost.
    assert result.lost == partial
    assert result.leid_ok == 0


async def test_a_client_that_quits_on_the_first_5xx(tmp_path: Path) -> None:
    report, (log,) = await bench(tmp_path, ("503",), "--defect", "quit-5xx")
    (result,) = report.results
    assert result.ended == "exit 1 before the final event"
    assert not result.completed
    assert counts(result) == reference(log)
    assert result.lost == EVENTS + 1 - len(log) > 0  # it ended on its own: the rest is lost
    assert result.unreached == 0
    assert result.records[-1].status == 503


async def test_the_gaps_of_a_client_that_waits_a_fixed_delay(tmp_path: Path) -> None:
    delay = 0.3
    profiles = ("clean", "reset", "503")
    report, logs = await bench(tmp_path, profiles, "--defect", "fixed-delay", "--delay", str(delay))
    for result, log in zip(report.results, logs, strict=True):
        assert counts(result) == reference(log) == {"dup": 0, "corrupt": 0, "order": 0, "lost": 0}
        assert len(result.gaps) >= 2
        # It ignores retry: (100 ms) and Retry-After (1 s): each gap is its delay plus the time
        # to notice the cut and connect. The proxy stamps a clean cut or a 503 just after its
        # last write, so a busy machine may shift a gap by a few ms either way; the bounds are
        # generous for one, and far from 0.1 s and 1 s.
        seconds = sorted(gap.seconds for gap in result.gaps)
        assert seconds[0] > delay - 0.05, seconds
        assert seconds[len(seconds) // 2] < delay + 0.2, seconds
        assert seconds[-1] < 0.95, seconds


async def test_a_client_that_reorders(tmp_path: Path) -> None:
    report, (log,) = await bench(tmp_path, ("clean",), "--defect", "reorder")
    (result,) = report.results
    assert counts(result) == reference(log)
    assert result.out_of_order == tagged(log, "late") > 0
    assert result.dup == result.corrupt == result.lost == 0


async def test_the_open_sse_adapter_of_the_docs_scores_zero(tmp_path: Path) -> None:
    adapter = Path(__file__).resolve().parents[2] / "examples" / "bench" / "arkor_open_sse.py"
    config = BenchConfig(
        command=(sys.executable, str(adapter), "{url}"),
        profiles=("mid-frame", "after-id"),
        events=EVENTS,
        seed=SEED,
        deadline=20.0,
    )
    report = await run_bench(config)
    for result in report.results:
        assert (result.lost, result.dup, result.corrupt, result.out_of_order) == (0, 0, 0, 0)
        assert result.ended == "completed"
        assert result.leid_ok == len(result.leid) > 0
