"""Throughput: one backlog replayed by the local backend, read by five clients in the same run.

The backend (its own process) holds a completed job of ``--events`` events (started, logs,
completed). Each round reads the whole replay with each client in turn, over loopback:

* raw: httpx ``aiter_raw`` counting frame ends (what the server can send; target >= 50k/s);
* httpx-sse: the bare ``aconnect_sse`` / ``aiter_sse`` loop, nothing else (the baseline);
* httpx-sse + json: the same, also ``json.loads`` of each event's data (for reference);
* open_sse: the general channel, yielding frames without JSON (target >= 0.9x the bare loop);
* EventStream: ``client.events(job)``, iterating every decoded event (target >= 1.0x the bare
  loop + json.loads, the like-for-like peer);
* Trainer: ``Trainer.attach(job).wait()`` with async no-op callbacks (target >= 0.8x of it).

Each client gets an ``httpx.AsyncClient`` made before the clock starts. The table gives the
median of the rounds, and its ratio to the median of the baseline.

Usage: ``python benchmarks/throughput.py [--events N] [--rounds R] [--json PATH] [--otel-sdk]``
(``--otel-sdk`` installs the OpenTelemetry SDK with an in-memory reader first, as an application
that exports metrics would: ``benchmarks/otel_cost.py`` compares the two).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import trio
from _common import (
    SCOPE,
    BackendProcess,
    fill,
    log_payloads,
    open_backend_process,
    table,
    write_json,
)
from httpx_sse import aconnect_sse

from arkor_trio import Callbacks, Trainer
from arkor_trio.stream import open_sse

if TYPE_CHECKING:
    from arkor_trio.sse import SSEFrame

JOB = "job_throughput"
PATH = f"/v1/jobs/{JOB}/events/stream"


async def raw(backend: BackendProcess, http: httpx.AsyncClient) -> int:
    frames = 0
    tail = b""
    async with http.stream("GET", backend.base_url + PATH, params=SCOPE) as response:
        async for chunk in response.aiter_raw():
            frames += chunk.count(b"\n\n") + (tail == b"\n" and chunk[:1] == b"\n")
            tail = chunk[-1:]
    return frames - 1  # the end frame


async def bare(backend: BackendProcess, http: httpx.AsyncClient, *, parse: bool = False) -> int:
    events = 0
    async with aconnect_sse(http, "GET", backend.base_url + PATH, params=SCOPE) as source:
        async for sse in source.aiter_sse():
            if sse.event == "end":
                break
            if parse:
                json.loads(sse.data)
            events += 1
    return events


async def bare_json(backend: BackendProcess, http: httpx.AsyncClient) -> int:
    return await bare(backend, http, parse=True)


async def stream(backend: BackendProcess, http: httpx.AsyncClient) -> int:
    events = 0
    async with backend.client(http=http) as client, client.events(JOB) as source:
        async for _ in source:
            events += 1
    return events


async def channel(backend: BackendProcess, http: httpx.AsyncClient) -> int:
    events = 0
    is_end = _is_end
    async with open_sse(backend.base_url + PATH, params=SCOPE, http=http, is_final=is_end) as sse:
        async for frame in sse:
            if frame.event == "end":
                break
            events += 1
    return events


def _is_end(frame: SSEFrame) -> bool:
    return frame.event == "end"


async def noop(ctx: Any) -> None:
    pass


async def trainer(backend: BackendProcess, http: httpx.AsyncClient) -> int:
    callbacks = Callbacks(on_started=noop, on_log=noop, on_completed=noop)
    async with backend.client(http=http) as client:
        counted = Trainer.attach(JOB, client=client, callbacks=callbacks)
        await counted.wait()
    return int(counted.cursor or 0)


Reader = Callable[[BackendProcess, httpx.AsyncClient], Awaitable[int]]
VARIANTS: dict[str, Reader] = {
    "raw (server replay)": raw,
    "httpx-sse, bare loop": bare,
    "httpx-sse + json.loads": bare_json,
    "arkor-trio open_sse (frames, no JSON)": channel,
    "arkor-trio EventStream": stream,
    "arkor-trio Trainer (no-op callbacks)": trainer,
}
BASELINE = "httpx-sse, bare loop"
JSON_BASELINE = "httpx-sse + json.loads"


async def main(args: argparse.Namespace) -> None:
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="arkor-bench-") as tmp:
        fill(Path(tmp), JOB, log_payloads(args.events))
        async with open_backend_process(Path(tmp)) as backend:
            for _ in range(args.rounds):
                for name, read in VARIANTS.items():
                    async with httpx.AsyncClient(headers=backend.headers(), timeout=None) as http:
                        started = time.perf_counter()
                        count = await read(backend, http)
                        elapsed = time.perf_counter() - started
                    if count != args.events:
                        raise AssertionError(f"{name} read {count} events, not {args.events}")
                    rates[name].append(count / elapsed)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    rows = [
        [
            name,
            f"{medians[name]:,.0f}",
            f"{min(values):,.0f} .. {max(values):,.0f}",
            f"{1e6 / medians[name]:.1f}",
            f"{medians[name] / medians[BASELINE]:.2f}x",
            f"{medians[name] / medians[JSON_BASELINE]:.2f}x",
        ]
        for name, values in rates.items()
    ]
    print(
        f"{args.events:,} events (training.started, logs, completed), {args.rounds} rounds. The "
        "bare loop decodes no JSON; the json.loads row shows what decoding alone costs."
    )
    print()
    header = ["reader", "events/s (median)", "range", "us/event", "vs bare", "vs bare+json"]
    print(table(header, rows))
    ratio_channel = medians["arkor-trio open_sse (frames, no JSON)"] / medians[BASELINE]
    ratio_stream = medians["arkor-trio EventStream"] / medians[BASELINE]
    ratio_trainer = medians["arkor-trio Trainer (no-op callbacks)"] / medians[BASELINE]
    json_stream = medians["arkor-trio EventStream"] / medians[JSON_BASELINE]
    json_trainer = medians["arkor-trio Trainer (no-op callbacks)"] / medians[JSON_BASELINE]
    print()
    print(
        f"Targets: open_sse {ratio_channel:.2f}x of the bare loop (>= 0.9x); EventStream "
        f"{json_stream:.2f}x of the bare loop + json.loads (>= 1.0x); Trainer {json_trainer:.2f}x "
        f"of it (>= 0.8x); server replay {medians['raw (server replay)']:,.0f}/s (>= 50,000/s). "
        "Every event EventStream and Trainer yield is parsed JSON, so the json.loads loop is their "
        "like-for-like peer; open_sse and the bare loop only split SSE frames."
    )
    write_json(
        args.json,
        {
            "events_per_s": medians,
            "channel_ratio": ratio_channel,
            "stream_ratio": ratio_stream,
            "trainer_ratio": ratio_trainer,
            "stream_ratio_json": json_stream,
            "trainer_ratio_json": json_trainer,
            "server_replay": medians["raw (server replay)"],
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None)
    parser.add_argument("--otel-sdk", action="store_true", help="record metrics with the SDK")
    parsed = parser.parse_args()
    if parsed.otel_sdk:
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    trio.run(main, parsed)
