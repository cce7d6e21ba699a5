"""One feed following ``--jobs`` running jobs (100,000): memory, latency, and a reconnect.

The backend runs in its own process pinned to CPU 0 (this script with ``--serve``), the client
in this process pinned to CPU 1 (when the machine has two). The backend writes ``--jobs``
running jobs with ``--history`` events each straight into its store, and listens behind a small
TCP forwarder in its own process (so that it can cut the feed's socket without a close frame).

1. **Subscribe and replay**: one feed subscribes every job (one consumer task per job, as a
   program following them with ``feed.subscribe`` would run; with ``--one-task`` all of them
   from one task with ``feed.subscribe_many``) and each job's history is replayed; then
   ``gc.collect()`` and the RSS growth per job (idle: no event in flight).
2. **Latency**: an emitter thread in the backend appends ``training.log`` events round-robin at
   ``--rate`` events/s in all, each stamped with its wall-clock append time; per-event latency
   (append to ``async for``) p50 / p99 for ``--seconds``.
3. **Reconnect**: the emitter stops, the forwarder cuts the socket (a reset, no close frame),
   and the backend appends one more event to every job; measured from the cut until every job
   delivered that event: the feed resubscribes all jobs after their cursors and resumes.

Every job's ids must arrive exactly once and in order (``out-of-order or lost ids``).

Usage: ``python benchmarks/feed_scale.py [--jobs N] [--history H] [--rate R] [--seconds S]
[--one-task [--buffer B]]``. The last table (tracemalloc) gives the bytes per job both ways.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio
import trio.testing
from _common import numbers, percentile, rss_mb, table, write_json

from arkor_trio import ReconnectPolicy
from arkor_trio.server import WsLimits, open_local_backend
from arkor_trio.server._serve import local_client
from arkor_trio.server._store import DB_NAME

POLICY = ReconnectPolicy(initial_delay=0.05, max_delay=1.0, idle_timeout=60.0)


def _pin(cpu: int) -> str:
    """Pin this process to ``cpu`` when the machine has more than one; what was done."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return "not pinned"
    if len(cpus) < 2:
        return "not pinned (one CPU)"
    chosen = cpus[cpu % len(cpus)]
    os.sched_setaffinity(0, {chosen})
    return f"CPU {chosen}"


def _job_ids(jobs: int) -> list[str]:
    return [f"job_f{i:06d}" for i in range(jobs)]


def _payload(job: str, step: int, stamp: float) -> str:
    return json.dumps({"type": "training.log", "step": step, "loss": stamp, "jobId": job,
                       "timestamp": "bench"})  # fmt: skip


def _write_jobs(path: Path, jobs: list[str], history: int) -> None:
    """``jobs`` running jobs with ``history`` events each, in one transaction."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO jobs (id, org_id, project_id, name, status, config, created_at, started_at) "
        "VALUES (?, 'org_local', 'proj_default', ?, 'running', '{}', 'bench', 'bench')",
        ((job, job) for job in jobs),
    )
    conn.executemany(
        "INSERT INTO events (job_id, seq, type, payload) VALUES (?, ?, 'training.log', ?)",
        ((job, seq, _payload(job, seq, 0.0)) for job in jobs for seq in range(1, history + 1)),
    )
    conn.execute("COMMIT")
    conn.close()


class Emitter:
    """Appends events straight into the store (in ticks of 10 ms) and wakes the followers."""

    def __init__(self, path: Path, jobs: list[str], history: int, notify: Any) -> None:
        self.path, self.jobs, self.notify = path, jobs, notify
        self.seq = dict.fromkeys(jobs, history)
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def _insert(self, conn: sqlite3.Connection, jobs: list[str], stamp: float | None) -> None:
        rows = []
        for job in jobs:
            self.seq[job] += 1
            step = self.seq[job]
            rows.append((job, step, _payload(job, step, time.time() if stamp is None else stamp)))
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO events (job_id, seq, type, payload) VALUES (?, ?, 'training.log', ?)",
            rows,
        )
        conn.execute("COMMIT")
        for job in jobs:
            self.notify(job)

    def start(self, rate: float) -> None:
        self.stop.clear()
        self.thread = threading.Thread(target=self._run, args=(rate,), daemon=True)
        self.thread.start()

    def halt(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()

    def _run(self, rate: float) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=5000")
        per_tick, step, start, ticks = max(1, round(rate / 100)), 0, time.perf_counter(), 0
        jobs = self.jobs
        while not self.stop.is_set():
            batch = [jobs[(step + i) % len(jobs)] for i in range(per_tick)]
            step += per_tick
            with self.lock:
                self._insert(conn, batch, None)
            ticks += 1
            delay = start + ticks * 0.01 - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        conn.close()

    def one_each(self, stamp: float) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=5000")
        with self.lock:
            self._insert(conn, self.jobs, stamp)
        conn.close()


async def _forward(source: trio.SocketStream, sink: trio.SocketStream) -> None:
    try:
        while data := await source.receive_some(1 << 16):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


class Forwarder:
    """A TCP forwarder that can cut every connection at once (RST, no close frame)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.scopes: set[trio.CancelScope] = set()
        self.streams: list[trio.SocketStream] = []

    async def handle(self, client: trio.SocketStream) -> None:
        upstream = await trio.open_tcp_stream("127.0.0.1", self.upstream_port)
        self.streams += [client, upstream]
        with trio.CancelScope() as scope:
            self.scopes.add(scope)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_forward, client, upstream)
                nursery.start_soon(_forward, upstream, client)
        self.scopes.discard(scope)
        for stream in (client, upstream):
            await stream.aclose()

    def cut(self) -> None:
        import socket
        import struct

        for stream in self.streams:  # a reset: SO_LINGER 0, then close
            sock = stream.socket
            if sock.fileno() >= 0:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.streams = []
        for scope in list(self.scopes):
            scope.cancel()


async def serve(data_dir: Path, jobs: int, history: int, send_queue: int) -> None:
    pinned = _pin(0)
    # A send queue that holds the whole replay: with the default 4,096 the jobs' replay tasks
    # wait for room, and every message sent wakes all of them (a herd on the backend's core).
    limits = WsLimits(max_subscriptions=jobs + 10, max_total_subscriptions=jobs + 10,
                      send_queue=send_queue or jobs * (history + 2))  # fmt: skip
    async with open_local_backend(data_dir, ws_limits=limits) as backend, trio.open_nursery() as n:
        ids = _job_ids(jobs)
        path = data_dir / DB_NAME
        _write_jobs(path, ids, history)
        emitter = Emitter(path, ids, history, backend._hub.notify)
        forwarder = Forwarder(int(backend.base_url.rsplit(":", 1)[1].split("/")[0]))
        listeners = await n.start(partial(trio.serve_tcp, forwarder.handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        print(json.dumps({"base_url": base, "token": backend.token, "pinned": pinned}), flush=True)
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        buffer = b""
        async with stdin:
            while chunk := await stdin.receive_some(4096):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    command, *args = line.decode().split()
                    if command == "go":
                        emitter.start(float(args[0]))
                    elif command == "cut":
                        await trio.to_thread.run_sync(emitter.halt)
                        cut_at = time.time()
                        forwarder.cut()
                        await trio.to_thread.run_sync(emitter.one_each, cut_at)
                        print(json.dumps({"cut_at": cut_at}), flush=True)
        emitter.halt()
        n.cancel_scope.cancel()


class Client:
    """The follower: one feed, one consumer task per job."""

    def __init__(self, jobs: int, history: int) -> None:
        self.jobs = _job_ids(jobs)
        self.history = history
        self.last: dict[str, int] = {}
        self.errors = 0
        self.latencies: list[float] = []
        self.recording = False
        self.replayed = 0
        self.replay_done = trio.Event()
        self.after_cut: dict[str, float] = {}
        self.cut_step: dict[str, int] = {}
        self.all_cut = trio.Event()

    async def follow(self, feed: Any, job: str) -> None:
        """One job, in a consumer task of its own (``feed.subscribe``)."""
        async with feed.subscribe(job, after=None) as sub:
            async for event in sub:
                self.on_event(job, event)

    async def follow_many(self, feed: Any, buffer_size: int | None) -> None:
        """Every job from this one task (``feed.subscribe_many``)."""
        async with feed.subscribe_many(self.jobs, after=None, buffer_size=buffer_size) as merged:
            async for job, event in merged:
                self.on_event(job, event)

    def on_event(self, job: str, event: Any) -> None:
        last = self.last
        n = int(event.event_id or 0)
        if n != last.get(job, 0) + 1:
            self.errors += 1
        last[job] = n
        if n == self.history:
            self.replayed += 1
            if self.replayed == len(self.jobs):
                self.replay_done.set()
        elif self.recording:
            self.latencies.append(time.time() - event.loss)
        elif n == self.cut_step.get(job):
            self.after_cut[job] = time.time()
            if len(self.after_cut) == len(self.jobs):
                self.all_cut.set()


async def _ask(process: subprocess.Popen[str], line: str) -> None:
    assert process.stdin is not None
    process.stdin.write(line + "\n")
    process.stdin.flush()
    await trio.lowlevel.checkpoint()


async def run(args: argparse.Namespace) -> list[list[object]]:
    with tempfile.TemporaryDirectory(prefix="bench-feed-") as tmp:
        command = [sys.executable, __file__, "--serve", tmp, "--jobs", str(args.jobs),
                   "--history", str(args.history),
                   "--send-queue", str(args.send_queue)]  # fmt: skip
        process = subprocess.Popen(  # noqa: ASYNC220  # a pipe-driven child, waited for below
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        pinned = _pin(1)  # after the backend started: it pins itself to CPU 0
        assert process.stdout is not None
        try:
            info = json.loads(await trio.to_thread.run_sync(process.stdout.readline))
            return await _measure(args, info, process, pinned)
        finally:
            assert process.stdin is not None
            process.stdin.close()
            process.wait(60)


async def _measure(
    args: argparse.Namespace, info: dict[str, Any], process: subprocess.Popen[str], pinned: str
) -> list[list[object]]:
    client = Client(args.jobs, args.history)
    pauses: list[float] = []  # full (generation 2) collections of the client, seconds
    lags: list[float] = []  # a 10 ms ticker's lateness in the client
    gc_started = [0.0]
    young = [0.0]  # seconds in generation 0 and 1 collections

    def on_gc(phase: str, gc_info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        elif gc_info["generation"] == 2:
            pauses.append(time.perf_counter() - gc_started[0])
        else:
            young[0] += time.perf_counter() - gc_started[0]

    async def ticker() -> None:
        while True:
            before = trio.current_time()
            await trio.sleep(0.01)
            lags.append(trio.current_time() - before - 0.01)

    def cpu() -> tuple[float, float]:
        """CPU seconds so far: this process, the backend process."""
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return time.process_time(), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    gc.collect()
    rss0 = rss_mb()
    async with (
        local_client(info["base_url"], info["token"]) as http,
        http.feed(policy=POLICY) as feed,
        trio.open_nursery() as nursery,
    ):
        started = time.perf_counter()
        if args.one_task:
            nursery.start_soon(client.follow_many, feed, args.buffer or None)
        else:
            for job in client.jobs:
                nursery.start_soon(client.follow, feed, job)
        await client.replay_done.wait()
        replayed = time.perf_counter() - started
        gc.collect()
        await trio.sleep(0.5)  # idle: the acknowledgements and commits of the last events
        gc.collect()
        rss_idle = rss_mb()
        if args.freeze:  # what a program following this many jobs may do once subscribed
            gc.freeze()
        # latency at --rate
        gc.callbacks.append(on_gc)
        nursery.start_soon(ticker)
        client.recording = True
        await _ask(process, f"go {args.rate}")
        await trio.sleep(args.seconds)
        rate_pauses, rate_lags, pauses[:], lags[:] = list(pauses), list(lags), [], []
        rate_young, young[0] = young[0], 0.0
        # reconnect: the emitter stops, the socket is cut, every job gets one more event
        client.recording = False
        delivered = len(client.latencies)
        seq_before = dict(client.last)
        await trio.sleep(1.0)  # what was in flight arrives
        client.cut_step = {job: client.last.get(job, 0) + 1 for job in client.jobs}
        cpu_before = cpu()
        pauses[:], lags[:] = [], []
        await _ask(process, "cut")
        assert process.stdout is not None
        cut_at = json.loads(await trio.to_thread.run_sync(process.stdout.readline))["cut_at"]
        with trio.move_on_after(120):
            await client.all_cut.wait()
        resumed = sorted(t - cut_at for t in client.after_cut.values())
        cpu_after = cpu()
        gc.callbacks.remove(on_gc)
        stats = feed.stats
        nursery.cancel_scope.cancel()
    del seq_before

    def gc_row(found: list[float]) -> str:
        return f"{len(found)}, longest {max(found) * 1e3:.0f} ms" if found else "0"

    def lag_row(found: list[float]) -> str:
        if not found:
            return "-"
        return f"{percentile(found, 99) * 1e3:.1f} / {max(found) * 1e3:.0f} ms"

    lat = client.latencies
    return [
        ["client / backend CPU", f"{pinned} / {info['pinned']}"],
        ["followed from", "one task (subscribe_many)" if args.one_task
         else "one task per job (subscribe)"],
        ["gc.freeze() after the replay", "yes" if args.freeze else "no"],
        ["jobs on one socket", f"{args.jobs:,}"],
        ["history per job", f"{args.history} events"],
        ["subscribe + replay every job", f"{replayed:.2f} s"],
        ["RSS growth, idle after replay", f"{rss_idle - rss0:.1f} MiB"],
        ["RSS growth per job", f"{(rss_idle - rss0) * 1024 / args.jobs:.2f} KiB"],
        ["events delivered / offered", f"{delivered:,} / {int(args.rate * args.seconds):,}"],
        ["event latency p50 / p99 / max",
         f"{percentile(lat, 50) * 1e3:.1f} / {percentile(lat, 99) * 1e3:.1f} / "
         f"{max(lat) * 1e3:.1f} ms" if lat else "-"],
        ["client loop lag p99 / max, at the rate", lag_row(rate_lags)],
        ["client full GCs at the rate", gc_row(rate_pauses)],
        ["client young GCs at the rate (generations 0, 1)", f"{rate_young:.2f} s"],
        ["reconnect: jobs resumed", f"{len(resumed):,} / {args.jobs:,}"],
        ["reconnect: next event p50 / all",
         f"{percentile(resumed, 50):.2f} / {resumed[-1]:.2f} s" if resumed else "-"],
        ["reconnect: CPU s, client / backend",
         f"{cpu_after[0] - cpu_before[0]:.1f} / {cpu_after[1] - cpu_before[1]:.1f} s"],
        ["reconnect: client loop lag p99 / max; full GCs", f"{lag_row(lags)}; {gc_row(pauses)}"],
        ["out-of-order or lost ids", client.errors],
        ["jobs paused (shared or own queue full)", f"{stats.pauses:,}"],
        ["sockets opened", stats.connections],
    ]  # fmt: skip


async def state_bytes(jobs: int, history: int) -> list[list[object]]:
    """Bytes per job of the feed's own state and of a waiting consumer task (tracemalloc)."""
    import random
    import tracemalloc

    from arkor_trio.stream import Ledger, MemoryCursorStore, as_cursor_store
    from arkor_trio.wire._codec import decode_event
    from arkor_trio.wire._feed_job import FeedJob, FeedSubscription

    store, rng = as_cursor_store(MemoryCursorStore()), random.Random(1)
    events = [
        decode_event(json.loads(_payload("j", n, 0.0)), str(n)) for n in range(1, history + 1)
    ]
    held: dict[str, FeedJob] = {}
    subs: list[FeedSubscription] = []
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for job_id in _job_ids(jobs):
        job = FeedJob(job_id, after=None, policy=POLICY, rng=rng, created_at=None,
                      ledger=Ledger(store, job_id))  # fmt: skip
        held[job_id] = job
        sub = FeedSubscription(job, None, held.pop)
        subs.append(sub)
        job.subscribing()
        for event in events:  # the history replayed (through the duplicate check) and handled
            assert event.event_id is not None
            if not job.is_duplicate(event.event_id):
                job.accept(event)
            await sub.__anext__()
        sub.ledger.handled_nowait()
    gc.collect()
    state = (tracemalloc.get_traced_memory()[0] - before) / jobs

    async def consumer(sub: FeedSubscription) -> None:
        async for _ in sub:
            pass

    async with trio.open_nursery() as nursery:
        before = tracemalloc.get_traced_memory()[0]
        for sub in subs:
            nursery.start_soon(consumer, sub)
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        task = (tracemalloc.get_traced_memory()[0] - before) / jobs
        nursery.cancel_scope.cancel()
    del held, subs
    merged_state = await _merged_state_bytes(jobs, events, tracemalloc)
    tracemalloc.stop()
    return [
        ["feed state per job (queue, ledger, dedupe, cursor in a MemoryCursorStore)",
         f"{state:,.0f} B"],
        ["a consumer task waiting in `async for` per job", f"{task:,.0f} B"],
        ["per job, `subscribe` (state + a consumer task)", f"{state + task:,.0f} B"],
        ["per job, `subscribe_many` (state with a lane of the shared queue, no task)",
         f"{merged_state:,.0f} B"],
    ]  # fmt: skip


async def _merged_state_bytes(jobs: int, events: list[Any], tracemalloc: Any) -> float:
    """Bytes per job of a merged subscription's jobs, idle after their history (one task)."""
    import random

    from arkor_trio.stream import Ledger, MemoryCursorStore, as_cursor_store
    from arkor_trio.wire._feed_job import FeedJob
    from arkor_trio.wire._feed_merged import MergedSubscription, _Lane

    store, rng = as_cursor_store(MemoryCursorStore()), random.Random(1)
    merged = MergedSubscription(None, len(events) + 1)  # type: ignore[arg-type]  # no feed
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    for job_id in _job_ids(jobs):
        job = FeedJob(job_id, after=None, policy=POLICY, rng=rng, created_at=None,
                      ledger=Ledger(store, job_id), queue=_Lane(merged, job_id))  # fmt: skip
        merged._jobs[job_id] = job
        job.subscribing()
        for event in events:  # the history replayed and handled, as above
            if not job.is_duplicate(event.event_id):
                job.accept(event)
            await merged.__anext__()
    assert merged._pending is not None
    merged._pending.handled_nowait()
    gc.collect()
    return (tracemalloc.get_traced_memory()[0] - before) / jobs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--history", type=int, default=3)
    parser.add_argument("--rate", type=float, default=10_000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--send-queue", type=int, default=0, help="0: the whole replay")
    parser.add_argument("--serve", type=Path)
    parser.add_argument(
        "--freeze", action="store_true", help="gc.freeze() once every job is replayed"
    )
    parser.add_argument(
        "--one-task", action="store_true", help="follow every job from one task (subscribe_many)"
    )
    parser.add_argument("--buffer", type=int, default=0, help="--one-task: its queue (0: default)")
    parser.add_argument("--state-only", action="store_true", help="only the tracemalloc table")
    parser.add_argument("--json", help="also write the headline figures here")
    args = parser.parse_args()
    if args.serve is not None:
        trio.run(serve, args.serve, args.jobs, args.history, args.send_queue)
        return
    if args.state_only:
        print(table(["what", "bytes"], trio.run(state_bytes, 20_000, args.history)))
        return
    print(f"### One feed, {args.jobs:,} jobs, {args.rate:,.0f} events/s in all\n")
    rows = trio.run(run, args)
    print(table(["measure", "value"], rows))
    latency = numbers(rows, "event latency p50 / p99 / max")
    resumed = numbers(rows, "reconnect: jobs resumed")
    reconnect = numbers(rows, "reconnect: next event p50 / all")
    per_job = numbers(rows, "RSS growth per job")
    errors = numbers(rows, "out-of-order or lost ids")
    write_json(args.json, {
        "jobs": args.jobs,
        "jobs_followed": args.jobs if errors == [0.0] and resumed[:1] == [args.jobs] else None,
        "rss_per_job_kib": per_job[0] if per_job else None,
        "latency_p99_ms": latency[1] if len(latency) > 1 else None,
        "reconnect_all_s": reconnect[1] if len(reconnect) > 1 else None,
    })  # fmt: skip
    print(
        f"\n### Per-job bytes after a history of {args.history} events (tracemalloc, 20,000 jobs)\n"
    )
    print(table(["what", "bytes"], trio.run(state_bytes, 20_000, args.history)))


if __name__ == "__main__":
    main()
