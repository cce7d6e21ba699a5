"""Backend fan-out on one core: events/s the local backend writes to 10,000 subscribed jobs.

A backend process (this script with ``--serve``), pinned to one core, creates ``--jobs`` running
jobs; a thread in it appends ``training.log`` events round-robin over the jobs at a given rate,
each stamped with its wall-clock append time (one transaction per 10 ms, straight into the
events table as ``websocket_feed.py``'s emitter does, then the backend's own hub is woken). A
minimal client in this process, pinned to another core, follows every job over one feed socket
(raw trio-websocket and orjson: no ``JobFeed``, so the client is not what limits) and checks
that each job's ids arrive once and in order.

The rate rises step by step until the backend falls behind. Per step: the offered rate, the rate
the emitter achieved (it shares the backend's core: at high rates it lags the offer), what was
delivered per second, latency from append to the client's receipt (p50/p99/max), the backend
process's CPU use, and its CPU time per event delivered, without the emitter thread's own
(``fan-out us/event``: the load-independent figure; ``1e6 / it`` is what one core could fan out).
A step "keeps up" when every event arrived and p99 stayed under ``KEEPS_UP_P99``; "sustained" is
the highest emitted rate of a step that kept up. On a machine shared with other work the rates
are noisy; the CPU time per event is not.

``--baseline DIR`` runs the same sweep first against a backend importing ``arkor_trio`` from
another checkout (e.g. ``/work/main``), side by side in one run.

Usage: ``python benchmarks/fanout.py [--jobs N] [--rates R,R,...] [--seconds S]
[--baseline DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import trio
import trio_websocket
from _common import SCOPE, percentile, table, write_json

#: A step keeps up when every event arrived and p99 latency stayed under this (seconds).
KEEPS_UP_P99 = 0.25
#: Messages up to this size from the server (its batches are at most 256 KiB).
MAX_MESSAGE = 4 * 1024 * 1024
SUBSCRIBES_PER_MESSAGE = 800  # ~45 KiB: under the server's 64 KiB per client message


def _pin(cpu: int | None) -> None:
    """Run this process (and the threads it starts later) on one CPU, if it has more."""
    if cpu is not None and hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {cpu})


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- the backend process ------------------------------------------------------------------


class _Emitter:
    """Appends ``training.log`` events round-robin over the jobs, one transaction per 10 ms."""

    def __init__(self, path: Path, jobs: list[str], notify: Any) -> None:
        self.path, self.jobs, self.notify = path, jobs, notify
        self.seq = dict.fromkeys(jobs, 1)  # training.started is event 1
        self.step = 0
        self.cpu = 0.0  # the emitter thread's own CPU time, in all

    def run(self, rate: float, seconds: float) -> int:
        import sqlite3

        cpu0 = time.thread_time()
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=5000")
        per_tick = max(1, round(rate / 100))
        start = time.perf_counter()
        emitted = 0
        for tick in range(1, round(seconds * 100) + 1):
            rows, woken = [], []
            for _ in range(per_tick):
                job = self.jobs[self.step % len(self.jobs)]
                self.step += 1
                seq = self.seq[job] = self.seq[job] + 1
                payload = (
                    f'{{"type":"training.log","step":{seq},"loss":0.5,"sent":{time.time()!r},'
                    f'"jobId":"{job}","timestamp":"bench"}}'
                )
                rows.append((job, seq, "training.log", payload))
                woken.append(job)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO events (job_id, seq, type, payload) VALUES (?, ?, ?, ?)", rows
            )
            conn.execute("COMMIT")
            for job in woken:
                self.notify(job)
            emitted += len(rows)
            delay = start + tick * 0.01 - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        conn.close()
        self.cpu += time.thread_time() - cpu0
        return emitted


async def serve(data_dir: Path, jobs: int) -> None:
    """Create ``jobs`` running jobs, then answer stdin commands: ``emit RATE SECONDS`` (one JSON
    line once emitted) and ``cpu`` (the process's and the emitter's CPU seconds); EOF stops."""
    import arkor_trio
    from arkor_trio.server import open_local_backend
    from arkor_trio.server._store import Store

    async with open_local_backend(data_dir, 0, max_concurrent_jobs=1, ping_interval=60) as backend:
        store = Store.in_dir(backend.data_dir)
        ids = [f"job_f{i:05d}" for i in range(jobs)]
        for job in ids:
            store.create_job(job_id=job, org_id="org_local", project_id="proj_default",
                             name=job, config={})  # fmt: skip
            store.append(job, {"type": "training.started"})
        store.close()
        emitter = _Emitter(store.path, ids, backend._hub.notify)  # the backend's own hub
        info = {
            "base_url": backend.base_url,
            "token": backend.token,
            "code": arkor_trio.__file__,
            "pid": os.getpid(),
        }
        print(json.dumps(info), flush=True)
        while line := await trio.to_thread.run_sync(sys.stdin.readline):
            command = line.split()
            if command[0] == "emit":
                rate, seconds = float(command[1]), float(command[2])
                started = time.perf_counter()
                emitted = await trio.to_thread.run_sync(emitter.run, rate, seconds)
                took = time.perf_counter() - started
                print(json.dumps({"emitted": emitted, "seconds": took}), flush=True)
            elif command[0] == "cpu":
                print(json.dumps({"cpu": _cpu(), "emitter": emitter.cpu}), flush=True)


# --- the client (this process) ------------------------------------------------------------


class _Backend:
    """The ``--serve`` child: started with a given ``arkor_trio`` checkout, driven by lines."""

    def __init__(self, data_dir: str, jobs: int, cpu: int | None, code: Path | None) -> None:
        env = dict(os.environ)
        if code is not None:
            env["PYTHONPATH"] = str(code)  # before site-packages: that checkout's arkor_trio
        command = [sys.executable, __file__, "--serve", data_dir, "--jobs", str(jobs)]
        if cpu is not None:
            command += ["--cpu", str(cpu)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.info = self.ask(None)

    def ask(self, line: str | None) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        if line is not None:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError("the backend process exited")
        result: dict[str, Any] = json.loads(answer)
        return result

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(30)


class _Receiver:
    """Counts, orders and times the events of every job on one socket."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.events = 0
        self.errors = 0
        self.subscribed = 0
        self.latencies: list[float] = []
        self.arrived = trio.Event()
        self.wanted = 0  # wake ``arrived`` once ``events`` reaches it

    def take(self, raw: str | bytes) -> None:
        now = time.time()
        decoded = orjson.loads(raw)
        for message in decoded if isinstance(decoded, list) else (decoded,):
            kind = message["type"]
            if kind == "event":
                job, n = message["job"], int(message["id"])
                if n != self.last.get(job, 0) + 1:
                    self.errors += 1
                self.last[job] = n
                self.events += 1
                sent = message["data"].get("sent")
                if sent is not None:
                    self.latencies.append(now - sent)
            elif kind == "subscribed":
                self.subscribed += 1
            elif kind in ("error", "reset", "end"):
                self.errors += 1
        if self.events >= self.wanted:
            self.arrived.set()

    async def until(self, count: int, timeout: float) -> bool:
        self.wanted = count
        with trio.move_on_after(timeout):
            while self.events < count:
                self.arrived = trio.Event()
                await self.arrived.wait()
            return True
        return False


async def sweep(backend: _Backend, jobs: int, rates: list[float], seconds: float) -> dict[str, Any]:
    info = backend.info
    url = (
        info["base_url"].replace("http://", "ws://")
        + "/v1/events/ws?"
        + ("&".join(f"{k}={v}" for k, v in SCOPE.items()))
    )
    from arkor_trio._version import USER_AGENT

    headers = [(b"authorization", f"Bearer {info['token']}".encode()),
               (b"x-arkor-client", USER_AGENT.encode())]  # fmt: skip
    receiver = _Receiver()
    rows: list[list[object]] = []
    sustained = 0.0
    at_10k: dict[str, float] = {}
    best_us = float("inf")
    async with trio_websocket.open_websocket_url(
        url, extra_headers=headers, max_message_size=MAX_MESSAGE, message_queue_size=1024
    ) as ws:

        async def read() -> None:
            while True:
                receiver.take(await ws.get_message())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            started = time.perf_counter()
            names = [f"job_f{i:05d}" for i in range(jobs)]
            for i in range(0, jobs, SUBSCRIBES_PER_MESSAGE):
                batch = [{"type": "subscribe", "job": j, "after": None}
                         for j in names[i : i + SUBSCRIBES_PER_MESSAGE]]  # fmt: skip
                await ws.send_message(orjson.dumps(batch).decode())
            if not await receiver.until(jobs, 120):  # every job's training.started
                raise RuntimeError(f"only {receiver.events} of {jobs} jobs' first events came")
            subscribe_s = time.perf_counter() - started
            behind = 0
            for rate in rates:
                receiver.latencies = []
                before = receiver.events
                cpu0 = await trio.to_thread.run_sync(backend.ask, "cpu")
                t0, mine0 = time.perf_counter(), _cpu()
                done = await trio.to_thread.run_sync(backend.ask, f"emit {rate} {seconds}")
                complete = await receiver.until(before + done["emitted"], 10 + seconds)
                took, mine = time.perf_counter() - t0, _cpu() - mine0
                cpu1 = await trio.to_thread.run_sync(backend.ask, "cpu")
                delivered = receiver.events - before
                lat = receiver.latencies
                p50, p99 = percentile(lat, 50), percentile(lat, 99)
                cpu = cpu1["cpu"] - cpu0["cpu"]
                emitter = cpu1["emitter"] - cpu0["emitter"]
                fan_us = (cpu - emitter) / max(delivered, 1) * 1e6
                keeps_up = complete and p99 <= KEEPS_UP_P99
                emitted_rate = done["emitted"] / done["seconds"]  # below ``rate`` if it lagged
                if keeps_up:
                    sustained = max(sustained, emitted_rate)
                    best_us = min(best_us, fan_us)
                if rate == 10_000:
                    at_10k = {"p50_ms": p50 * 1e3, "p99_ms": p99 * 1e3}
                rows.append([
                    f"{rate:,.0f}", f"{emitted_rate:,.0f}", f"{delivered:,} / {done['emitted']:,}",
                    f"{delivered / took:,.0f}",
                    f"{p50 * 1e3:.1f} / {p99 * 1e3:.1f} / {max(lat, default=0) * 1e3:.0f}",
                    f"{cpu / took * 100:.0f}%", f"{mine / took * 100:.0f}%",
                    f"{emitter / max(delivered, 1) * 1e6:.1f}", f"{fan_us:.1f}",
                    "yes" if keeps_up else "no",
                ])  # fmt: skip
                behind = 0 if keeps_up else behind + 1
                if behind >= 2 or not complete:
                    break
            nursery.cancel_scope.cancel()
    return {
        "code": info["code"],
        "rows": rows,
        "sustained": sustained,
        "fanout_us": best_us,
        "at_10k": at_10k,
        "subscribe_s": subscribe_s,
        "errors": receiver.errors,
    }


HEADERS = [
    "offered events/s", "emitted/s", "delivered / emitted", "delivered/s",
    "latency p50 / p99 / max ms", "backend CPU", "client CPU", "emitter us/event",
    "fan-out us/event", "keeps up",
]  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    _pin(args.client_cpu)
    results: dict[str, Any] = {}
    for label, code in [("baseline", args.baseline), ("this", None)]:
        if label == "baseline" and code is None:
            continue
        with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
            backend = _Backend(tmp, args.jobs, args.backend_cpu, code)
            try:
                results[label] = trio.run(sweep, backend, args.jobs, args.rates, args.seconds)
            finally:
                backend.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument(
        "--rates",
        type=lambda s: [float(r) for r in s.split(",")],
        default=[5_000, 10_000, 15_000, 20_000, 25_000, 30_000, 40_000],
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--baseline", type=Path, help="another checkout's arkor_trio to compare")
    parser.add_argument("--backend-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--serve", type=Path)
    parser.add_argument("--cpu", type=int)
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.serve is not None:
        _pin(args.cpu)
        trio.run(serve, args.serve, args.jobs)
        return
    results = run(args)
    print(f"Backend pinned to CPU {args.backend_cpu}, client to CPU {args.client_cpu}; "
          f"{args.jobs:,} jobs on one feed socket, {args.seconds:g} s per step; a step keeps up "
          f"when every event arrived and p99 <= {KEEPS_UP_P99 * 1e3:.0f} ms.")  # fmt: skip
    for label, result in results.items():
        name = "this checkout" if label == "this" else f"baseline ({args.baseline})"
        print(f"\n### {name}: sustained {result['sustained']:,.0f} events/s\n")
        print(f"Subscribe + first event of every job: {result['subscribe_s']:.2f} s; "
              f"out-of-order, lost or unexpected messages: {result['errors']}.\n")  # fmt: skip
        print(table(HEADERS, result["rows"]))
    if len(results) == 2:
        base, this = results["baseline"], results["this"]
        print("\n### Side by side\n")
        print(table(["measure", "baseline", "this checkout"], [
            ["sustained events/s (keeps up)", f"{base['sustained']:,.0f}",
             f"{this['sustained']:,.0f}"],
            ["fan-out CPU us/event (best step that kept up)", f"{base['fanout_us']:.1f}",
             f"{this['fanout_us']:.1f}"],
            ["latency p50 / p99 at 10,000/s, ms",
             *(f"{r['at_10k'].get('p50_ms', float('nan')):.1f} / "
               f"{r['at_10k'].get('p99_ms', float('nan')):.1f}" for r in (base, this))],
        ]))  # fmt: skip
    this = results["this"]
    write_json(args.json, {"sustained": this["sustained"], "fanout_us": this["fanout_us"],
                           **this["at_10k"]})  # fmt: skip


if __name__ == "__main__":
    main()
