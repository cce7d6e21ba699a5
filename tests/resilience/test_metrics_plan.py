"""OpenTelemetry metrics of ``open_sse`` under a known plan of faults, read with the SDK.

The plan gives six connections: two graceful cuts at frame boundaries (a clean end of the
body), one cut inside a frame, one 503, one that reads the rest of the feed to its end (a clean
end), then the 204. The instruments must say exactly that: five reconnects by cause, a gap
sample for each connection that opened after another ended, and event counts equal to the
stream's own. (An abrupt cut at a boundary reads as a clean end or a transport error, as the
close races the last read, so the plan has none.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from arkor_trio.stream import _channel
from arkor_trio.stream._metrics import Metrics
from arkor_trio.testing import CutAfterEvents, Plan, Status

from ._feed import assert_feed_run, follow_feed

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def reader(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemoryMetricReader]:
    """The channel's instruments, on a meter of a private SDK provider with a memory reader."""
    memory = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[memory])
    monkeypatch.setattr(_channel, "METRICS", Metrics(provider.get_meter("test")))
    yield memory
    provider.shutdown()


def points(reader: InMemoryMetricReader) -> dict[tuple[str, tuple[tuple[str, Any], ...]], Any]:
    found: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    found[(metric.name, tuple(sorted((point.attributes or {}).items())))] = point
    return found


def reconnects(got: dict[tuple[str, tuple[tuple[str, Any], ...]], Any], cause: str) -> int:
    key = (
        "arkor.stream.reconnects",
        (("arkor.reconnect.cause", cause), ("arkor.transport", "sse")),
    )
    point = got.get(key)
    return 0 if point is None else int(point.value)


async def test_reconnects_by_cause_and_gaps_follow_the_plan(reader: InMemoryMetricReader) -> None:
    sse = (("arkor.transport", "sse"),)
    before = points(reader) if reader.get_metrics_data() is not None else {}
    events_before = before.get(("messaging.client.consumed.messages", sse))
    plan = Plan.of(
        CutAfterEvents(7, graceful=True),
        CutAfterEvents(20, graceful=True),
        CutAfterEvents(10, mode="mid_frame"),
        Status(code=503),
    )
    run = await follow_feed(plan)
    assert_feed_run(run)
    got = points(reader)
    assert reconnects(got, "clean_end") == 3
    assert reconnects(got, "error") == 0
    assert reconnects(got, "cut_mid_frame") == 1
    assert reconnects(got, "status") == 1
    assert reconnects(got, "idle_timeout") == 0
    gap = got[("arkor.stream.reconnect.gap", sse)]
    assert gap.count == len(run.stats.gaps) == run.stats.connections - 1 == 3  # 503: no open
    assert gap.sum == pytest.approx(sum(run.stats.gaps))
    consumed = got[("messaging.client.consumed.messages", sse)].value
    start = 0 if events_before is None else events_before.value
    assert consumed - start == run.stats.events == 60
