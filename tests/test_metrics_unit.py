"""The OpenTelemetry instruments of the stream layer, read with the SDK's in-memory reader."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import attrs
import trio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from arkor_trio import JobFeed
from arkor_trio.stream import _metrics

from .ws_script_server import completed, event, open_ws_script, receive, send


@attrs.define
class Source:
    transport: str = "sse"
    connections: int = 0
    events: int = 0
    bytes: int = 0


def points(reader: InMemoryMetricReader) -> dict[tuple[str, tuple[tuple[str, Any], ...]], Any]:
    found: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}
    data = reader.get_metrics_data()
    if data is None:  # nothing recorded yet
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, tuple(sorted((point.attributes or {}).items())))
                    found[key] = point
    return found


def fresh() -> tuple[_metrics.Metrics, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    return _metrics.Metrics(MeterProvider(metric_readers=[reader]).get_meter("t")), reader


def test_counts_are_read_from_live_sources_and_kept_after_release() -> None:
    _, reader = fresh()
    sse = ("arkor.transport", "sse")
    base = points(reader).get(("messaging.client.consumed.messages", (sse,)))
    start = 0 if base is None else base.value
    a, b = Source(), Source(transport="websocket")
    _metrics.track(a)
    _metrics.track(b)
    a.events, b.events, a.bytes = 5, 7, 100
    got = points(reader)
    assert got[("messaging.client.consumed.messages", (sse,))].value == start + 5
    ws = ("arkor.transport", "websocket")
    assert got[("messaging.client.consumed.messages", (ws,))].value >= 7
    a.events = 9
    _metrics.release(a)
    _metrics.release(a)  # twice: counted once
    del a
    assert points(reader)[("messaging.client.consumed.messages", (sse,))].value == start + 9
    _metrics.release(b)


def test_reconnects_by_cause_gaps_and_leases() -> None:
    metrics, reader = fresh()
    metrics.reconnect("sse", "cut_mid_frame")
    metrics.reconnect("sse", "cut_mid_frame")
    metrics.reconnect("websocket", "status")
    metrics.reopened("sse", 0.25)
    metrics.lease("acquired")
    got = points(reader)
    cut = (("arkor.reconnect.cause", "cut_mid_frame"), ("arkor.transport", "sse"))
    assert got[("arkor.stream.reconnects", cut)].value == 2
    status = (("arkor.reconnect.cause", "status"), ("arkor.transport", "websocket"))
    assert got[("arkor.stream.reconnects", status)].value == 1
    gap = got[("arkor.stream.reconnect.gap", (("arkor.transport", "sse"),))]
    assert (gap.count, gap.sum) == (1, 0.25)
    assert got[("arkor.lease.events", (("arkor.lease.event", "acquired"),))].value == 1


def test_recording_only_with_an_sdk_installed() -> None:
    # In fresh interpreters: the test process itself may have installed a provider (the docs).
    probe = (
        "from arkor_trio.stream.lowlevel import metrics_recording as r; print(r(), end=' ');"
        "from opentelemetry import metrics; from opentelemetry.sdk.metrics import MeterProvider;"
        "metrics.set_meter_provider(MeterProvider()); print(r())"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout == "False True\n"


async def test_a_feed_with_a_reset_records_one_reset_and_its_events() -> None:
    _, reader = fresh()
    ws = ("arkor.transport", "websocket")

    def total(name: str) -> int:
        point = points(reader).get((name, (ws,)))
        return 0 if point is None else int(point.value)

    resets, consumed = total("arkor.stream.resets"), total("messaging.client.consumed.messages")

    async def script(request: Any, index: int) -> None:
        socket = await request.accept()
        await receive(socket)
        subscribed = {"type": "subscribed", "job": "j", "recovered": False}
        reset = {"type": "reset", "job": "j", "reason": "events 1 to 4 are no longer kept"}
        await send(socket, subscribed, reset, event("j", 5), completed("j", 6))
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with open_ws_script(script) as client, JobFeed(client) as feed:
            async with feed.subscribe("j") as sub:
                assert [e.event_id async for e in sub] == ["5", "6"]
            assert total("arkor.stream.resets") - resets == 1  # read while the feed is open
    assert total("arkor.stream.resets") - resets == 1  # and kept once it closed
    assert total("messaging.client.consumed.messages") - consumed == 2
