"""Memory and scale: RSS while following a 1M-event stream; 1,000 job streams in one process.

Part 1: a completed job of ``--events`` events (started, logs, completed) in a local backend
of its own process; this process follows it with one ``EventStream`` and samples its own RSS
(``VmRSS``) as it goes. Growth is measured from the sample after the first 10k events (imports,
buffers and the connection are warm then) to the end; the target is < 10 MB.

Part 2: ``--jobs`` live jobs on one local backend (benchmark engine). This process follows all
of them, one ``EventStream`` each, over ``httpx.AsyncClient``s with no connection limit
(httpx's default pool allows 100 connections): first all over one client, then spread over
ten (httpcore's pool does O(connections) work per request and per response close). Once every
stream has its ``training.started``, each job emits ``--ticks`` ticks, one every
``--interval`` s, spread evenly over the jobs; each tick carries the server's ``time.time()``
when it was appended, and the client computes the latency (append -> SQLite -> stream ->
loopback -> EventStream -> consumer). Each configuration runs in a fresh process.

Usage: ``python benchmarks/memory_scale.py [--events N] [--jobs N] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import trio
from _backend import BENCH_MODEL, raise_fd_limit
from _common import (
    SCOPE,
    BackendProcess,
    fill,
    log_payloads,
    ms,
    open_backend_process,
    percentile,
    rss_mb,
    table,
    write_json,
)

from arkor_trio import ReconnectPolicy, TrainingCompleted, UnknownEvent

JOB = "job_million"
WARM_AT = 10_000
LINGER = 2.0


async def follow_million(args: argparse.Namespace) -> dict[str, Any]:
    samples: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory(prefix="arkor-bench-") as tmp:
        started = time.perf_counter()
        fill(Path(tmp), JOB, log_payloads(args.events))
        filled = time.perf_counter() - started
        async with open_backend_process(Path(tmp)) as backend, backend.client() as client:
            samples.append((0, rss_mb()))
            count = 0
            every = max(1, args.events // 10)
            started = time.perf_counter()
            async with client.events(JOB) as stream:
                async for _ in stream:
                    count += 1
                    if count == WARM_AT or count % every == 0:
                        samples.append((count, rss_mb()))
            elapsed = time.perf_counter() - started
            samples.append((count, rss_mb()))
    warm = next(rss for n, rss in samples if n == WARM_AT)
    return {
        "events": count,
        "fill_s": filled,
        "seconds": elapsed,
        "rss_start": samples[0][1],
        "rss_warm": warm,
        "rss_peak": max(rss for _, rss in samples),
        "rss_end": samples[-1][1],
        "growth": samples[-1][1] - warm,
        "samples": samples,
    }


async def create_jobs(backend: BackendProcess, args: argparse.Namespace, go: Path) -> list[str]:
    config = {
        "model": BENCH_MODEL, "bench": "ticks", "ticks": args.ticks,
        "interval": args.interval, "go": str(go), "linger": LINGER,
    }  # fmt: skip
    ids: list[str] = []
    async with httpx.AsyncClient(base_url=backend.base_url, headers=backend.headers()) as http:
        for i in range(args.jobs):
            offset = args.interval * i / args.jobs
            body = {"name": f"scale-{i}", "config": {**config, "offset": offset}}
            response = await http.post("/v1/jobs", params=SCOPE, json=body)
            response.raise_for_status()
            ids.append(response.json()["job"]["id"])
    return ids


async def follow_many(args: argparse.Namespace, pools: int) -> dict[str, Any]:
    ticks: list[float] = []
    completions: list[float] = []
    lags: list[float] = []
    ended = 0
    with tempfile.TemporaryDirectory(prefix="arkor-bench-") as tmp:
        go = Path(tmp) / "go"
        async with open_backend_process(Path(tmp) / "data", max_jobs=args.jobs) as backend:
            ids = await create_jobs(backend, args, go)
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
            rss_before = rss_mb()
            connected = trio.Semaphore(0)
            async with AsyncExitStack() as stack:
                clients = [
                    await stack.enter_async_context(
                        backend.client(http=httpx.AsyncClient(limits=limits))
                    )
                    for _ in range(pools)
                ]
                nursery = await stack.enter_async_context(trio.open_nursery())

                async def follow(index: int, job_id: str) -> None:
                    nonlocal ended
                    policy = ReconnectPolicy(buffer_size=64)
                    client = clients[index % pools]
                    async with client.events(job_id, policy=policy) as stream:
                        async for event in stream:
                            if isinstance(event, UnknownEvent):
                                ticks.append(time.time() - float(event.data["sent"]))
                            elif isinstance(event, TrainingCompleted) and event.timestamp:
                                sent = datetime.fromisoformat(event.timestamp).timestamp()
                                completions.append(time.time() - sent)
                            elif event.event_id == "1":
                                connected.release()
                    ended += 1

                async def watch_lag() -> None:
                    while True:
                        before = trio.current_time()
                        await trio.sleep(0.01)
                        lags.append(trio.current_time() - before - 0.01)

                opening = time.perf_counter()
                for index, job_id in enumerate(ids):
                    nursery.start_soon(follow, index, job_id)
                    await trio.sleep(0.002)
                for _ in ids:
                    await connected.acquire()
                opened = time.perf_counter() - opening
                rss_connected = rss_mb()
                nursery.start_soon(watch_lag)
                await trio.Path(go).write_text(f"{time.time() + 0.5}")
                rss_peak = rss_connected
                while ended < len(ids):
                    await trio.sleep(0.5)
                    rss_peak = max(rss_peak, rss_mb())
                rss_end = rss_mb()
                nursery.cancel_scope.cancel()
    return {
        "jobs": args.jobs,
        "pools": pools,
        "open_s": opened,
        "ticks": len(ticks),
        "expected": args.jobs * args.ticks,
        "rss_before": rss_before,
        "rss_connected": rss_connected,
        "rss_peak": rss_peak,
        "rss_end": rss_end,
        "per_stream_kb": (rss_peak - rss_before) * 1024 / args.jobs,
        "p50": percentile(ticks, 50),
        "p99": percentile(ticks, 99),
        "max": max(ticks, default=float("nan")),
        "done_p50": percentile(completions, 50),
        "done_p99": percentile(completions, 99),
        "done_max": max(completions, default=float("nan")),
        "lag_p99": percentile(lags, 99),
        "lag_max": max(lags, default=float("nan")),
    }


async def many_in_subprocess(args: argparse.Namespace, pools: int) -> dict[str, Any]:
    """Part 2 in a fresh process, so that each configuration starts from the same RSS."""
    with tempfile.TemporaryDirectory(prefix="arkor-bench-") as tmp:
        out = Path(tmp) / "many.json"
        command = [
            sys.executable, __file__, "--part", "many", "--pools", str(pools),
            "--jobs", str(args.jobs), "--ticks", str(args.ticks),
            "--interval", str(args.interval), "--json", str(out),
        ]  # fmt: skip
        await trio.run_process(command)
        result: dict[str, Any] = json.loads(await trio.Path(out).read_text())
    return result


def print_million(one: dict[str, Any]) -> None:
    print(
        f"Part 1: one EventStream over {one['events']:,} events "
        f"({one['seconds']:.1f} s, {one['events'] / one['seconds']:,.0f} events/s; "
        f"backlog written in {one['fill_s']:.1f} s)"
    )
    print()
    rows = [[f"{n:,}", f"{rss:.1f}"] for n, rss in one["samples"]]
    print(table(["events read", "RSS MiB"], rows))
    print()
    print(
        f"RSS growth after warm-up ({WARM_AT:,} events -> end): {one['growth']:+.1f} MiB "
        f"(start {one['rss_start']:.1f}, peak {one['rss_peak']:.1f} MiB; target < 10 MB)"
    )


def print_many(args: argparse.Namespace, many: list[dict[str, Any]]) -> None:
    print(
        f"Part 2: {args.jobs:,} concurrent job streams in one process, {args.ticks} ticks per "
        f"job (one per {args.interval:g} s per job, spread evenly: "
        f"{args.jobs / args.interval:,.0f} events/s in all). Latency = client receive time - "
        f"server append time. Each job completes {LINGER:g} s after its last tick, so the "
        "ticks flow in a steady state and the 1,000 completions (and stream closes) follow "
        "within one interval: their latency is from the event's millisecond `timestamp`. "
        "'loop lag' is how late a 10 ms sleep in the client wakes up."
    )
    print()
    print(
        table(
            ["httpx clients", "opened in", "ticks", "RSS before", "all connected", "peak",
             "per stream", "tick p50", "p99", "max", "completed p50", "p99", "max",
             "loop lag p99", "max"],
            [[f"{m['pools']} x {args.jobs // m['pools']} streams", f"{m['open_s']:.1f} s",
              f"{m['ticks']:,}/{m['expected']:,}", f"{m['rss_before']:.1f} MiB",
              f"{m['rss_connected']:.1f} MiB", f"{m['rss_peak']:.1f} MiB",
              f"{m['per_stream_kb']:.0f} KiB", f"{ms(m['p50'])} ms", f"{ms(m['p99'])} ms",
              f"{ms(m['max'])} ms", f"{ms(m['done_p50'])} ms", f"{ms(m['done_p99'])} ms",
              f"{ms(m['done_max'])} ms", f"{ms(m['lag_p99'])} ms", f"{ms(m['lag_max'])} ms"]
             for m in many],
        )
    )  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    if args.part == "many":
        write_json(args.json, await follow_many(args, int(args.pools)))
        return
    one = await follow_million(args)
    print_million(one)
    many = [await many_in_subprocess(args, int(pools)) for pools in args.pools.split(",")]
    print()
    print_many(args, many)
    write_json(args.json, {"million": one, "many": many})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=8)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--pools", default="1,10", help="httpx clients to spread streams over")
    parser.add_argument("--part", choices=["all", "many"], default="all", help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None)
    arguments = parser.parse_args()
    raise_fd_limit()
    trio.run(main, arguments)
