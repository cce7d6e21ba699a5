"""The ``--html`` report: one self-contained page (inline CSS and SVG, no script, no CDN).

It is drawn from :func:`~._report.to_json`'s data, so the page and ``--json`` never disagree.
Per profile: the figures, a histogram of reconnect gaps on a log scale, and a timeline of the
proxy's connections above the client's deliveries (event number against time).
"""

from __future__ import annotations

import html
import math
from typing import Any

__all__ = ["render_html"]

_BINS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
_BIN_LABELS = (
    "<1ms", "1-3ms", "3-10ms", "10-30ms", "30-100ms", "0.1-0.3s", "0.3-1s", "1-3s", "3-10s",
    ">10s",
)  # fmt: skip
_VERDICT_COLOURS = {"ok": "#2b6cb0", "dup": "#dd6b20", "corrupt": "#c53030", "order": "#805ad5"}
_CUT_COLOURS = {
    "clean": "#718096", "mid_frame": "#c05621", "reset": "#c53030", "after_id": "#b7791f",
    "stall": "#6b46c1", "refused": "#1a202c", "status": "#d69e2e", "headers_drop": "#975a16",
    "upstream": "#2c7a7b", None: "#38a169",
}  # fmt: skip
_MAX_DOTS = 4000
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#1a202c;
padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em} h2{margin-top:2em;border-bottom:1px solid #cbd5e0}
table{border-collapse:collapse;margin:1em 0;font-size:13px} td,th{border:1px solid #cbd5e0;
padding:3px 7px;text-align:right} th{background:#edf2f7}
td:first-child,td:last-child,th:last-child{text-align:left}
td:first-child{white-space:nowrap}
.bad{background:#fed7d7;font-weight:600} .good{background:#f0fff4} .muted{color:#4a5568}
.charts{display:flex;gap:1.5em;flex-wrap:wrap;align-items:flex-start} svg{background:#fff;
border:1px solid #e2e8f0} .legend span{display:inline-block;margin-right:1em}
.swatch{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:-.1em}
pre{background:#f7fafc;padding:.5em;overflow:auto;max-height:10em;font-size:12px}
dt{font-weight:600} dd{margin:0 0 .5em 1.5em}
figure{margin:0} figcaption{font-size:12px;color:#4a5568;max-width:420px;margin-top:.3em}
figure:last-child figcaption{max-width:640px}
"""
_GLOSSARY = (
    ("conns", "TCP connections the client opened to the proxy."),
    ("gaps, p50 .. max", "For each connection the proxy cut (or whose source went away) and that "
     "the client followed with another: the time from the cut to the next connection, measured "
     "by the proxy. It is how long the client waits before it reconnects."),
    ("lost", "Events the source sent that the client never handed to its application intact. "
     "When the client is killed at the deadline, the events past the last one it got are "
     "'unreached' instead."),
    ("dup", "Events handed over more than once."),
    ("corrupt", "Events whose data (or id) differs from what the source sent: e.g. the half of "
     "a frame cut in the middle, handed on as if whole."),
    ("order", "Events handed over after a later one."),
    ("Last-Event-ID", "Reconnects that sent the right Last-Event-ID header (the id of the last "
     "complete event the client received), out of all reconnects."),
    ("wall s (x clean)", "Time from the client's first connection to its final event (or to "
     "its end), and its ratio to the 'clean' profile's time."),
    ("ended", "How the run ended: completed (the final event, then the client exited), exited "
     "before the final event, killed at deadline, no output..."),
)  # fmt: skip


def _e(value: object) -> str:
    return html.escape(str(value))


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _summary(data: dict[str, Any]) -> str:
    head = (
        "<tr><th>profile</th><th>conns</th><th>gaps</th><th>p50 ms</th><th>p95 ms</th>"
        "<th>p99 ms</th><th>max ms</th><th>lost</th><th>dup</th><th>corrupt</th><th>order</th>"
        "<th>Last-Event-ID</th><th>wall s (x clean)</th><th>ended</th></tr>"
    )
    rows = []
    for p in data["profiles"]:

        def count(value: int, extra: str = "") -> str:
            return f'<td class="{"bad" if value else "good"}">{value}{extra}</td>'

        wrong = p["reconnects_checked"] - p["last_event_id_ok"]
        checked = p["reconnects_checked"]
        leid = f"{p['last_event_id_ok']}/{checked}" if checked else "-"
        ratio = "" if p["wall_x_clean"] is None else f" ({p['wall_x_clean']:.1f}x)"
        unreached = f" (+{p['unreached']} unreached)" if p["unreached"] else ""
        rows.append(
            f'<tr><td><a href="#p-{_e(p["profile"])}">{_e(p["profile"])}</a></td>'
            f"<td>{p['connections']}</td><td>{p['gaps']}</td><td>{_ms(p['p50_ms'])}</td>"
            f"<td>{_ms(p['p95_ms'])}</td><td>{_ms(p['p99_ms'])}</td><td>{_ms(p['max_ms'])}</td>"
            f"{count(p['lost'], unreached)}{count(p['duplicated'])}{count(p['corrupt'])}"
            f"{count(p['out_of_order'])}"
            f'<td class="{"bad" if wrong else "good"}">{leid}</td>'
            f"<td>{p['wall_s']:.2f}{ratio}</td>"
            f'<td class="{"good" if p["completed"] and p["ended"] == "completed" else "bad"}">'
            f"{_e(p['ended'])}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _histogram(p: dict[str, Any]) -> str:
    counts = [0] * len(_BIN_LABELS)
    for gap in p["gap_list"]:
        index = next((i for i, edge in enumerate(_BINS) if gap["s"] < edge), len(_BINS))
        counts[index] += 1
    width, height, left, bottom, top = 420, 220, 34, 44, 16
    plot_w, plot_h = width - left - 8, height - bottom - top
    most = max(counts) or 1
    bar = plot_w / len(counts)
    parts = [
        f'<svg role="img" aria-label="gap distribution of {_e(p["profile"])}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 8}" y2="{top + plot_h}" '
        'stroke="#4a5568"/>',
        f'<text x="4" y="{top + 8}" font-size="10">{most}</text>',
        f'<text x="4" y="{top + plot_h / 2}" font-size="10">gaps</text>',
        f'<text x="4" y="{top + plot_h}" font-size="10">0</text>',
    ]
    for i, count in enumerate(counts):
        x = left + i * bar
        h = plot_h * count / most
        parts.append(
            f'<rect x="{x + 2:.1f}" y="{top + plot_h - h:.1f}" width="{bar - 4:.1f}" '
            f'height="{h:.1f}" fill="#3182ce"><title>{_BIN_LABELS[i]}: {count}</title></rect>'
        )
        if count:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{top + plot_h - h - 2:.1f}" font-size="10" '
                f'text-anchor="middle">{count}</text>'
            )
        parts.append(
            f'<text x="{x + bar / 2:.1f}" y="{top + plot_h + 12}" font-size="9" '
            f'text-anchor="end" transform="rotate(-35 {x + bar / 2:.1f} {top + plot_h + 12})">'
            f"{_BIN_LABELS[i]}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _timeline(p: dict[str, Any], events: int) -> str:
    conns = p["connections_list"]
    dots = p["timeline"]
    ends = [c["ended_s"] or c["opened_s"] for c in conns] + [d["s"] for d in dots] + [p["wall_s"]]
    span = max(max(ends, default=0.0), 1e-3) * 1.02
    width, left, right = 640, 46, 10
    lanes_top, lane_h = 8, 9
    plot_top, plot_h = lanes_top + 2 * lane_h + 16, 200
    height = plot_top + plot_h + 30
    plot_w = width - left - right

    def x_of(seconds: float) -> float:
        return left + plot_w * max(0.0, seconds) / span

    parts = [
        f'<svg role="img" aria-label="timeline of {_e(p["profile"])}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f'<text x="2" y="{lanes_top + 8}" font-size="9">conns</text>',
    ]
    for c in conns:
        start = x_of(c["opened_s"])
        end = x_of(c["ended_s"] if c["ended_s"] is not None else span)
        y = lanes_top + (c["index"] % 2) * lane_h
        colour = _CUT_COLOURS.get(c["cut"] or ("upstream" if c["ended_by"] == "upstream" else None))
        parts.append(
            f'<rect x="{start:.1f}" y="{y}" width="{max(end - start, 1.5):.1f}" '
            f'height="{lane_h - 2}" fill="{colour}"><title>#{c["index"]}: '
            f"Last-Event-ID {_e(c['last_event_id'])}, status {_e(c['status'])}, "
            f"{c['events_passed']} frames, ended: {_e(c['cut'] or c['ended_by'])}</title></rect>"
        )
    bottom = plot_top + plot_h
    parts += [
        f'<line x1="{left}" y1="{bottom}" x2="{width - right}" y2="{bottom}" stroke="#4a5568"/>',
        f'<line x1="{left}" y1="{plot_top}" x2="{left}" y2="{bottom}" stroke="#4a5568"/>',
        f'<text x="2" y="{plot_top + 8}" font-size="9">event {events}</text>',
        f'<text x="2" y="{bottom}" font-size="9">event 1</text>',
    ]
    for tick in _ticks(span):
        parts.append(
            f'<text x="{x_of(tick):.1f}" y="{bottom + 13}" font-size="9" text-anchor="middle">'
            f"{tick:g} s</text>"
        )
    step = max(1, math.ceil(len(dots) / _MAX_DOTS))
    for d in dots[::step] + [d for d in dots if d["verdict"] != "ok"][:_MAX_DOTS]:
        position = max(d["event"], 0)
        y = bottom - plot_h * position / max(events - 1, 1)
        radius = 1.6 if d["verdict"] == "ok" else 2.6
        parts.append(
            f'<circle cx="{x_of(d["s"]):.1f}" cy="{y:.1f}" r="{radius}" '
            f'fill="{_VERDICT_COLOURS[d["verdict"]]}"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


_TIMELINE_CAPTION = (
    "Timeline from the client's start: each bar is one connection to the proxy, coloured by how "
    "it ended; each dot one event the client handed to its application (event number up, time "
    "across). A step is a wait to reconnect; dots that go back down are duplicates or reorders."
)


def _gap_caption(p: dict[str, Any]) -> str:
    if not p["gap_list"]:
        return "Reconnect gaps: none (no connection was cut and followed by another)."
    return (
        f"Reconnect gaps: how long the client took to connect again after each cut, on the "
        f"proxy's clock. n={len(p['gap_list'])}, p50 {_ms(p['p50_ms'])} ms, p95 "
        f"{_ms(p['p95_ms'])} ms, max {_ms(p['max_ms'])} ms."
    )


def _ticks(span: float) -> list[float]:
    raw = span / 6
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return [round(i * step, 6) for i in range(int(span / step) + 1)]


def _legend() -> str:
    def swatch(colour: str, text: str) -> str:
        return f'<span><i class="swatch" style="background:{colour}"></i>{_e(text)}</span>'

    cuts = {
        None: "ran to the end", "clean": "clean cut", "mid_frame": "cut mid-frame",
        "reset": "TCP reset", "after_id": "cut after id line", "stall": "stalled",
        "refused": "refused", "status": "503 answer", "upstream": "source went away",
    }  # fmt: skip
    deliveries = {
        "ok": "delivered", "dup": "duplicate", "corrupt": "corrupt", "order": "out of order",
    }  # fmt: skip
    return (
        '<p class="legend">Connections: '
        + "".join(swatch(_CUT_COLOURS[k], v) for k, v in cuts.items())
        + '</p><p class="legend">Events: '
        + "".join(swatch(_VERDICT_COLOURS[k], v) for k, v in deliveries.items())
        + "</p>"
    )


def render_html(data: dict[str, Any]) -> str:
    """The whole page for ``data`` (the output of ``to_json``)."""
    sections = []
    for p in data["profiles"]:
        stderr = p["stderr_tail"].strip()
        sections.append(
            f'<h2 id="p-{_e(p["profile"])}">{_e(p["profile"])}</h2>'
            f'<p class="muted">Fault: {_e(p["description"])}. Ended: <b>{_e(p["ended"])}</b>; '
            f"{p['deliveries']} events handed over, {p['connections']} connections, "
            f"{p['last_event_id_ok']}/{p['reconnects_checked']} reconnects with the right "
            f"Last-Event-ID; lost {p['lost']}, duplicated {p['duplicated']}, corrupt "
            f"{p['corrupt']}, out of order {p['out_of_order']}.</p>"
            f'<div class="charts"><figure>{_histogram(p)}<figcaption>{_gap_caption(p)}'
            f"</figcaption></figure><figure>{_timeline(p, data['events'] + 1)}"
            f"<figcaption>{_TIMELINE_CAPTION}</figcaption></figure></div>"
            + (f"<details><summary>client stderr (tail)</summary><pre>{_e(stderr)}</pre></details>"
               if stderr else "")
        )  # fmt: skip
    glossary = "".join(f"<dt>{_e(t)}</dt><dd>{_e(d)}</dd>" for t, d in _GLOSSARY)
    command = " ".join(data["command"])
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>arkor-trio bench report</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head><body>"
        "<h1>SSE client resilience report</h1>"
        f'<p class="muted">Client: <code>{_e(command)}</code>. The source sent '
        f"{data['events']} events and a final one; a proxy between it and the client injected "
        f"one kind of fault per profile (seed {data['seed']}, deadline {data['deadline_s']:g} s "
        "per profile). Counts that should be zero are red when they are not.</p>"
        f"{_summary(data)}{_legend()}"
        "<details><summary>What each figure means</summary>"
        f"<dl>{glossary}</dl></details>"
        f"{''.join(sections)}"
        '<p class="muted">Made by <code>arkor-trio bench</code>.</p></body></html>'
    )
