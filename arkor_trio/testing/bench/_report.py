"""The report of ``arkor-trio bench`` as a text table and as JSON."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ._score import percentile

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._run import BenchReport, ProfileResult

__all__ = ["gap_figures", "render_table", "text_table", "to_json"]

HEADERS = (
    "profile", "conns", "gaps", "p50 ms", "p95 ms", "p99 ms", "max ms", "lost", "dup",
    "corrupt", "order", "Last-Event-ID", "wall s (x clean)", "ended",
)  # fmt: skip


def gap_figures(result: ProfileResult) -> dict[str, float]:
    """p50, p95, p99 and max of the profile's gaps, in milliseconds (NaN without gaps)."""
    seconds = [gap.seconds for gap in result.gaps]
    return {
        "p50_ms": percentile(seconds, 50) * 1000,
        "p95_ms": percentile(seconds, 95) * 1000,
        "p99_ms": percentile(seconds, 99) * 1000,
        "max_ms": max(seconds, default=math.nan) * 1000,
    }


def _ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def text_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (readable as text) with columns padded to their widest cell."""
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *[line(r) for r in cells[1:]]])


def row_of(report: BenchReport, result: ProfileResult) -> list[object]:
    """One table row of ``result``."""
    figures = gap_figures(result)
    ratio = report.wall_ratio(result)
    wall = f"{result.wall:.2f}" + ("" if ratio is None else f" ({ratio:.1f}x)")
    lost = str(result.lost) + (f" (+{result.unreached} unreached)" if result.unreached else "")
    leid = f"{result.leid_ok}/{len(result.leid)}" if result.leid else "-"
    return [
        result.profile, result.connections, len(result.gaps),
        _ms(figures["p50_ms"]), _ms(figures["p95_ms"]), _ms(figures["p99_ms"]),
        _ms(figures["max_ms"]), lost, result.dup, result.corrupt, result.out_of_order, leid,
        wall, result.ended,
    ]  # fmt: skip


def render_table(report: BenchReport) -> str:
    """The stdout table: one row per profile."""
    return text_table(HEADERS, [row_of(report, r) for r in report.results])


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 3)


def to_json(report: BenchReport) -> dict[str, Any]:
    """Everything the report shows, as JSON-ready data (times in seconds unless named ``_ms``)."""
    config = report.config
    profiles = []
    for result in report.results:
        ratio = report.wall_ratio(result)
        start = result.started
        profiles.append(
            {
                "profile": result.profile,
                "description": result.description,
                "connections": result.connections,
                "gaps": len(result.gaps),
                **{k: _finite(v) for k, v in gap_figures(result).items()},
                "deliveries": result.deliveries,
                "lost": result.lost,
                "unreached": result.unreached,
                "duplicated": result.dup,
                "corrupt": result.corrupt,
                "out_of_order": result.out_of_order,
                "last_event_id_ok": result.leid_ok,
                "reconnects_checked": len(result.leid),
                "wall_s": round(result.wall, 3),
                "wall_x_clean": None if ratio is None else round(ratio, 2),
                "ended": result.ended,
                "completed": result.completed,
                "exit_code": result.returncode,
                "ignored_lines": result.ignored_lines,
                "oversized_lines": result.oversized_lines,
                "stdout_bytes": result.stdout_bytes,
                "stderr_tail": result.stderr[-2000:],
                "gap_list": [
                    {"s": round(g.seconds, 6), "kind": g.kind, "after": g.index}
                    for g in result.gaps
                ],
                "reconnects": [
                    {"connection": c.index, "sent": c.sent, "expected": c.expected, "ok": c.ok}
                    for c in result.leid
                ],
                "connections_list": [
                    {
                        "index": r.index,
                        "opened_s": round(r.opened_wall - start, 6),
                        "ended_s": _end(r, start),
                        "status": r.status,
                        "last_event_id": r.last_event_id,
                        "events_passed": r.events_passed,
                        "cut": None if r.cut_kind is None else r.cut_kind.value,
                        "ended_by": r.ended_by,
                    }
                    for r in result.records
                ],
                "timeline": [
                    {"s": round(at, 6), "event": position, "verdict": verdict}
                    for at, position, verdict in result.timeline
                ],
            }
        )
    return {
        "tool": "arkor-trio bench",
        "command": list(config.command),
        "events": config.events,
        "seed": config.seed,
        "deadline_s": config.deadline,
        "retry_ms": config.retry_ms,
        "profiles": profiles,
    }


def _end(record: Any, start: float) -> float | None:
    end = record.cut_wall if record.cut_wall is not None else record.closed_wall
    return None if end is None else round(end - start, 6)
