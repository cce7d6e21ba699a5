"""A small terminal line chart for loss curves: unicode markers, or plain ASCII.

No dependency: a character grid with a labelled y axis on the left and the step range below.
Several series share the axes; each point is drawn with its series' marker, later series on top,
and the columns between two points get a faint dot on the straight line joining them. When more
points than columns fall into one column they are averaged, so a long training run still draws
one point per column.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

__all__ = ["Series", "can_draw_unicode", "loss_chart"]

#: ``(label, points)``: the points are ``(step, value)`` pairs.
Series = tuple[str, Sequence[tuple[int, float]]]

_UNICODE = {"markers": "•◆▲■", "line": "·", "tick": "┤", "axis": "│", "corner": "└", "rule": "─"}
_ASCII = {"markers": "*o+#", "line": ".", "tick": "+", "axis": "|", "corner": "+", "rule": "-"}


def can_draw_unicode(encoding: str | None) -> bool:
    """True when text in ``encoding`` can carry the chart's box-drawing characters.

    None (an in-memory text stream) counts as unicode.
    """
    if encoding is None:
        return True
    sample = "".join(_UNICODE.values())
    try:
        sample.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _bucketed(
    points: Sequence[tuple[int, float]], x0: int, x1: int, width: int
) -> Mapping[int, float]:
    """Column -> mean value of the finite points falling into that column."""
    sums: dict[int, list[float]] = {}
    span = max(1, x1 - x0)
    for step, value in points:
        if not math.isfinite(value):
            continue
        col = round((step - x0) / span * (width - 1))
        sums.setdefault(col, []).append(value)
    return {col: sum(vs) / len(vs) for col, vs in sums.items()}


def _label(value: float) -> str:
    return f"{value:.3g}" if abs(value) >= 100 else f"{value:.2f}"


def loss_chart(
    series: Sequence[Series],
    *,
    width: int = 60,
    height: int = 12,
    unicode: bool = True,
    x_label: str = "step",
) -> list[str]:
    """Draw series of ``(step, value)`` points as lines of text.

    Args:
        series: ``(label, points)`` pairs; empty series are skipped (and listed in no legend).
        width: Columns of the plotting area (at least 8).
        height: Rows of the plotting area (at least 3).
        unicode: Box-drawing characters and round markers; False draws plain ASCII.
        x_label: Caption of the x axis.

    Returns:
        The chart's lines without newlines; an empty list when no series has a finite point.
    """
    width, height = max(8, width), max(3, height)
    glyphs = _UNICODE if unicode else _ASCII
    drawn = [(label, pts) for label, pts in series if any(math.isfinite(v) for _, v in pts)]
    if not drawn:
        return []
    steps = [s for _, pts in drawn for s, _ in pts]
    x0, x1 = min(steps), max(steps)
    buckets = [sorted(_bucketed(pts, x0, x1, width).items()) for _, pts in drawn]
    values = [v for columns in buckets for _, v in columns]
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    grid = [[" "] * width for _ in range(height)]

    def row_of(value: float) -> int:
        return round((hi - value) / (hi - lo) * (height - 1))

    for index, columns in enumerate(buckets):
        marker = glyphs["markers"][index % len(glyphs["markers"])]
        for (c0, v0), (c1, v1) in itertools.pairwise(columns):
            for col in range(c0 + 1, c1):
                row = row_of(v0 + (v1 - v0) * (col - c0) / (c1 - c0))
                if grid[row][col] == " ":
                    grid[row][col] = glyphs["line"]
        for col, value in columns:
            grid[row_of(value)][col] = marker
    labels = {0: _label(hi), height // 2: _label((hi + lo) / 2), height - 1: _label(lo)}
    pad = max(len(text) for text in labels.values())
    lines = []
    for row, cells in enumerate(grid):
        text = labels.get(row)
        axis = glyphs["tick"] if text is not None else glyphs["axis"]
        lines.append(f"{(text or ''):>{pad}} {axis}{''.join(cells)}".rstrip())
    lines.append(f"{'':>{pad}} {glyphs['corner']}{glyphs['rule'] * width}")
    left, right = str(x0), str(x1)
    gap = max(1, width - len(left) - len(right))
    lines.append(f"{'':>{pad}}  {left}{' ' * gap}{right}  {x_label}")
    legend = "   ".join(
        f"{glyphs['markers'][i % len(glyphs['markers'])]} {label}"
        for i, (label, _) in enumerate(drawn)
    )
    lines.append(f"{'':>{pad}}  {legend}")
    return lines
