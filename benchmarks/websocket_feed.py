"""WebSocket job feed: throughput vs SSE for one job, and one process following N running jobs.

Throughput: a completed job of ``--events`` ticks (the same backlog) is read once over SSE
(``client.events(job)``) and once over WebSocket (``transport="websocket"``), in this process,
against a backend in its own process; both count and check every id.

Scale: a backend process (this script with ``--serve``) creates ``--jobs`` running jobs and a
thread appends ``training.log`` events round-robin at ``--rate`` events/s in all, each carrying
its wall-clock append time. This process follows every job over one feed for ``--seconds`` and
reports per-event latency (append to dispatch), RSS growth, the loop lag (a 10 ms ticker's
lateness) and per-job cost. Every job's ids must arrive exactly once and in order.

Throughput also reports each side's CPU time per event (the backend process's, all threads, from
``/proc/<pid>/task/*/schedstat``; this process's): load-independent where the events/s are not.

``--pin`` runs the backend process on CPU 0 and this process on CPU 1 (each on its own core, as
the issue-23 target "10,000 events/s in all, 10,000 jobs" asks).

Usage: ``python benchmarks/websocket_feed.py [--events N] [--jobs N] [--rate R] [--seconds S]
[--pin]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import trio
from _common import (
    BACKLOG_JOB,
    fill,
    numbers,
    open_backend_process,
    percentile,
    rss_mb,
    table,
    tick_payloads,
    write_json,
)

from arkor_trio.server import open_local_backend
from arkor_trio.server._serve import local_client
from arkor_trio.server._store import Store

BACKEND_CPU, CLIENT_CPU = 0, 1


def pin(cpu: int) -> bool:
    """Run this process (and the threads it starts later) on ``cpu``; False on one CPU."""
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        return False
    os.sched_setaffinity(0, {cpu})
    return True


def pin_process(pid: int, cpu: int) -> None:
    """Pin every thread of another process to ``cpu`` (threads it starts later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), {cpu})


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of a process, in seconds (nanosecond resolution)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total / 1e9


def _emitter(path: Path, jobs: list[str], rate: float, notify, stop: threading.Event) -> None:
    """Append ``training.log`` events round-robin over the jobs at ``rate`` events/s in all.

    Every 10 ms one transaction inserts the tick's events straight into the events table (in
    the store's row format, as ``_common.fill`` does), then wakes the jobs' followers: the
    load generator must not be what limits the backend process (one ``Store.append`` per
    event costs ~65 us of the backend's one core).
    """
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=5000")
    seq = dict.fromkeys(jobs, 1)  # training.started is event 1
    per_tick, step, start = max(1, round(rate / 100)), 0, time.perf_counter()
    ticks = 0
    while not stop.is_set():
        rows, woken = [], []
        for _ in range(per_tick):
            job = jobs[step % len(jobs)]
            step += 1
            seq[job] += 1
            payload = {"type": "training.log", "step": seq[job], "loss": time.time(),
                       "jobId": job, "timestamp": "bench"}  # fmt: skip
            rows.append((job, seq[job], "training.log", json.dumps(payload)))
            woken.append(job)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO events (job_id, seq, type, payload) VALUES (?, ?, ?, ?)", rows
        )
        conn.execute("COMMIT")
        for job in woken:
            notify(job)
        ticks += 1
        delay = start + ticks * 0.01 - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    conn.close()


async def serve(data_dir: Path, jobs: int, rate: float, port: int = 0) -> None:
    """The backend of the scale run (and of ``websocket_reconnect.py``): ``jobs`` running jobs
    fed by the emitter once stdin says "go"; with ``rate == 0`` the jobs exist already (a
    restart on the same data dir) and nothing is emitted."""
    async with open_local_backend(data_dir, port, max_concurrent_jobs=1) as backend:
        store = Store.in_dir(backend.data_dir, on_append=backend._hub.notify)
        ids = [f"job_s{i:05d}" for i in range(jobs)]
        for job in ids if rate > 0 else ():
            store.create_job(job_id=job, org_id="org_local", project_id="proj_default",
                             name=job, config={})  # fmt: skip
            store.append(job, {"type": "training.started"})
        print(json.dumps({"base_url": backend.base_url, "token": backend.token}), flush=True)
        if rate <= 0:
            store.close()
            await trio.to_thread.run_sync(sys.stdin.readline)  # EOF: stop
            return
        store.close()
        stop = threading.Event()
        thread = threading.Thread(
            target=_emitter,
            args=(store.path, ids, rate, backend._hub.notify, stop),  # the backend's own hub
            daemon=True,
        )
        await trio.to_thread.run_sync(sys.stdin.readline)  # "go"
        thread.start()
        await trio.to_thread.run_sync(sys.stdin.readline)  # EOF: stop
        stop.set()
        thread.join()


async def throughput(events: int, pinned: bool = False) -> list[list[object]]:
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ws-") as tmp:
        fill(Path(tmp), BACKLOG_JOB, tick_payloads(events))
        async with (
            open_backend_process(Path(tmp)) as backend,
            local_client(backend.base_url, backend.token) as client,
        ):
            if pinned:
                pin_process(backend.pid, BACKEND_CPU)
            for transport in ("sse", "websocket", "sse", "websocket"):
                server0, client0 = cpu_seconds(backend.pid), time.process_time()
                started = time.perf_counter()
                count, last = 0, 0
                async with client.events(BACKLOG_JOB, transport=transport) as stream:
                    async for event in stream:
                        count += 1
                        if event.event_id is not None:
                            # In order, none missing; the backlog ends with the "backend restarted"
                            # failure that recovery appends after a gap of ids (never reused).
                            assert int(event.event_id) == last + 1 or count == events + 1
                            last = int(event.event_id)
                took = time.perf_counter() - started
                server = cpu_seconds(backend.pid) - server0
                mine = time.process_time() - client0
                per = [f"{server / count * 1e6:.2f}", f"{mine / count * 1e6:.2f}"]
                rows.append([transport, count, f"{took:.2f}", f"{count / took:,.0f}", *per])
    return rows


async def scale(jobs: int, rate: float, seconds: float, pinned: bool = False) -> list[list[object]]:
    with tempfile.TemporaryDirectory(prefix="bench-ws-") as tmp:
        command = [
            sys.executable,
            __file__,
            "--serve",
            tmp,
            "--jobs",
            str(jobs),
            "--rate",
            str(rate),
        ]
        if pinned:
            command += ["--cpu", str(BACKEND_CPU)]
        process = subprocess.Popen(  # noqa: ASYNC220  # a pipe-driven child, waited for below
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert process.stdin is not None
        assert process.stdout is not None
        info = json.loads(await trio.to_thread.run_sync(process.stdout.readline))
        try:
            return await _follow_all(info, jobs, rate, seconds, process.stdin)
        finally:
            process.stdin.close()
            process.wait(30)


async def _follow_all(info, jobs: int, rate: float, seconds: float, go) -> list[list[object]]:
    gc.collect()
    rss0 = rss_mb()
    latencies: list[float] = []
    last: dict[str, int] = {}
    errors = 0
    lags: list[float] = []
    pauses: list[float] = []  # this process's full (generation 2) garbage collections
    started: list[float] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            pauses.append(time.perf_counter() - started[0])

    async def ticker() -> None:
        while True:
            before = trio.current_time()
            await trio.sleep(0.01)
            lags.append(trio.current_time() - before - 0.01)

    async with local_client(info["base_url"], info["token"]) as client, client.feed() as feed:

        async def follow(job: str) -> None:
            nonlocal errors
            async with feed.subscribe(job) as sub:
                async for event in sub:
                    n = int(event.event_id or 0)
                    if n != last.get(job, 0) + 1:
                        errors += 1
                    last[job] = n
                    loss = getattr(event, "loss", None)
                    if loss is not None:
                        latencies.append(time.time() - loss)

        async with trio.open_nursery() as nursery:
            subscribe_start = time.perf_counter()
            for i in range(jobs):
                nursery.start_soon(follow, f"job_s{i:05d}")
            while len(last) < jobs:  # every job delivered its training.started  # noqa: ASYNC110
                await trio.sleep(0.05)
            subscribed = time.perf_counter() - subscribe_start
            rss_subscribed = rss_mb()
            go.write("go\n")
            go.flush()
            gc.callbacks.append(on_gc)
            nursery.start_soon(ticker)
            await trio.sleep(seconds)
            rss_end = rss_mb()
            stats = feed.stats
            nursery.cancel_scope.cancel()
            gc.callbacks.remove(on_gc)
    delivered = len(latencies)
    return [
        ["jobs on one socket", f"{jobs:,}"],
        ["subscribe + first event of every job", f"{subscribed:.2f} s"],
        ["events delivered / offered", f"{delivered:,} / {int(rate * seconds):,}"],
        ["event latency p50 / p99 / max",
         f"{percentile(latencies, 50) * 1e3:.1f} / {percentile(latencies, 99) * 1e3:.1f} / "
         f"{max(latencies) * 1e3:.1f} ms"],
        ["client full GCs while measured: count / longest",
         f"{len(pauses)} / {max(pauses, default=0) * 1e3:.0f} ms"],
        ["loop lag p50 / p99",
         f"{percentile(lags, 50) * 1e3:.2f} / {percentile(lags, 99) * 1e3:.2f} ms"],
        ["RSS growth: subscribed / end", f"{rss_subscribed - rss0:.1f} / {rss_end - rss0:.1f} MiB"],
        ["per-job cost", f"{(rss_end - rss0) * 1024 / jobs:.1f} KiB"],
        ["out-of-order or lost ids", errors],
        ["sockets opened", stats.connections],
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--serve", type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--pin", action="store_true", help="backend on CPU 0, client on CPU 1")
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)  # --serve's own pinning
    parser.add_argument("--json", help="also write the headline figures here")
    args = parser.parse_args()
    if args.serve is not None:
        if args.cpu is not None:
            pin(args.cpu)
        trio.run(serve, args.serve, args.jobs, args.rate, args.port)
        return
    pinned = args.pin and pin(CLIENT_CPU)
    where = (f" (backend on CPU {BACKEND_CPU}, client on CPU {CLIENT_CPU})" if pinned
             else "")  # fmt: skip
    print(f"### Throughput, one job of {args.events:,} events{where}\n")
    rows = trio.run(throughput, args.events, pinned)
    print(table(["transport", "events", "seconds", "events/s", "backend CPU us/event",
                 "client CPU us/event"], rows))  # fmt: skip
    rates = {
        transport: statistics.median(
            float(str(row[3]).replace(",", "")) for row in rows if row[0] == transport
        )
        for transport in ("sse", "websocket")
    }
    print(f"\nWebSocket / SSE, medians: {rates['websocket'] / rates['sse']:.2f}x")
    print(f"\n### One feed, {args.jobs:,} running jobs, {args.rate:,.0f} events/s in all{where}\n")
    scaled = trio.run(scale, args.jobs, args.rate, args.seconds, pinned)
    print(table(["measure", "value"], scaled))
    latency = numbers(scaled, "event latency p50 / p99 / max")
    delivered = numbers(scaled, "events delivered / offered")
    write_json(args.json, {
        "jobs": args.jobs, "rate": args.rate,
        "ws_sse_ratio": rates["websocket"] / rates["sse"],
        "latency_p99_ms": latency[1] if len(latency) > 1 else None,
        "delivered_all": len(delivered) == 2 and delivered[0] >= 0.99 * delivered[1],
    })  # fmt: skip


if __name__ == "__main__":
    main()
