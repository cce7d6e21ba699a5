"""A fleet's costs on Redis (issue 19): commit cost per event, lease takeover after ``kill -9``.

* **commit**: ``RedisCursorStore.commit`` carrying a lease (one Lua compare-and-set on the
  token, one round trip on loopback), ``--n`` in a row on one key: what a replica pays after
  each callback. Also ``load`` and a fleet ``heartbeat`` for scale.
* **commits of many jobs**: ``--jobs`` followers of one replica (one store, one lease each)
  commit ``--per-job`` events each, one after another as a follower does, all at once; with
  ``pipeline=False`` (one script call per commit, as before pipelining) and ``pipeline=True``
  (the commits waiting at the same moment share one script call), alternating, ``--rounds``
  times: per-call latency p50/p99, and the amortised cost (wall time / commits).
* **takeover**: a child process holds a job's lease (``lease_ttl`` = ``--ttl``) and is killed
  with SIGKILL at a random point of its renewal cycle; the time until this process acquires the
  lease (the store's own polling, as a successor replica's trainer does). A fleet adds at most
  one heartbeat (``ttl / 3``) to notice the dead member; tests/test_fleet_redis.py checks the
  end-to-end bound.

Runs its own ``redis-server`` (the distribution's binary) on a free loopback port.
Usage: ``python benchmarks/fleet.py [--n 2000] [--jobs 1,10,100,1000] [--per-job 20000]
[--rounds 3] [--kills 20] [--ttl 1.0]`` (``--per-job`` is the commits of one round in all,
spread over the jobs).
"""

from __future__ import annotations

import argparse
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import trio
from _common import percentile, table, write_json

from arkor_trio.stream import RedisCursorStore

CHILD = """
import sys, trio
from arkor_trio.stream import RedisCursorStore
async def main():
    async with RedisCursorStore(sys.argv[1], namespace="bench") as store:
        async with store.lease("job", ttl=float(sys.argv[2])):
            print("held", flush=True)
            await trio.sleep_forever()
trio.run(main)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is missing: apt-get install -y redis-server")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        if b"Ready to accept connections" in line:
            break
    return process, f"redis://127.0.0.1:{port}/0"


async def commit_costs(url: str, n: int) -> list[list[str]]:
    rows = []
    async with (
        RedisCursorStore(url, namespace="bench") as store,
        store.lease("commit", ttl=30.0) as lease,
    ):
        for what, call in (
            ("commit (with lease)", lambda i: store.commit("commit", str(i), lease=lease)),
            ("load", lambda i: store.load("commit")),
            ("heartbeat", lambda i: store.heartbeat("m", ttl=10.0, info="{}")),
        ):
            samples = []
            for i in range(n):
                t0 = time.perf_counter()
                await call(i)
                samples.append(time.perf_counter() - t0)
            rows.append([what, str(n)] + [f"{percentile(samples, q) * 1e3:.3f}"
                                          for q in (50, 99)])  # fmt: skip
    return rows


async def many_jobs_once(url: str, jobs: int, per_job: int, pipeline: bool) -> dict[str, float]:
    """``jobs`` followers commit ``per_job`` cursors each, concurrently, on one store."""
    samples: list[float] = []
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(
            RedisCursorStore(url, namespace=f"bench-{jobs}", pipeline=pipeline)
        )
        leases = [await stack.enter_async_context(store.lease(f"j{j}", ttl=60.0))
                  for j in range(jobs)]  # fmt: skip
        before = store.commits.requests, store.commits.items

        async def follower(j: int) -> None:
            key, lease = f"j{j}", leases[j]
            for i in range(per_job):
                t0 = time.perf_counter()
                await store.commit(key, str(i), lease=lease)
                samples.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for j in range(jobs):
                nursery.start_soon(follower, j)
        wall = time.perf_counter() - t0
        requests = store.commits.requests - before[0]
        items = store.commits.items - before[1]
    return {
        "p50": percentile(samples, 50),
        "p99": percentile(samples, 99),
        "amortised": wall / len(samples),
        "batch": items / requests if requests else 1.0,
    }


async def paced_once(
    url: str, jobs: int, rate: float, seconds: float, pipeline: bool
) -> dict[str, float]:
    """``jobs`` followers commit at ``rate`` commits/s in all (each on its own clock, random
    phase), for ``seconds``: per-call latency at a load the box can carry."""
    samples: list[float] = []
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(
            RedisCursorStore(url, namespace=f"paced-{jobs}", pipeline=pipeline)
        )
        leases = [await stack.enter_async_context(store.lease(f"j{j}", ttl=60.0))
                  for j in range(jobs)]  # fmt: skip
        period = jobs / rate
        start = trio.current_time() + 0.1

        async def follower(j: int) -> None:
            key, lease = f"j{j}", leases[j]
            at = start + random.uniform(0, period)
            i = 0
            while at < start + seconds:
                await trio.sleep_until(at)
                t0 = time.perf_counter()
                await store.commit(key, str(i), lease=lease)
                samples.append(time.perf_counter() - t0)
                i += 1
                at += period

        async with trio.open_nursery() as nursery:
            for j in range(jobs):
                nursery.start_soon(follower, j)
    return {"p50": percentile(samples, 50), "p99": percentile(samples, 99), "n": len(samples)}


async def paced(url: str, jobs: int, rate: float, seconds: float, rounds: int) -> list[list[str]]:
    results: dict[bool, list[dict[str, float]]] = {}
    for _ in range(rounds):
        for pipeline in (False, True):
            results.setdefault(pipeline, []).append(
                await paced_once(url, jobs, rate, seconds, pipeline)
            )
    return [
        [str(jobs), f"{rate:,.0f}", "on" if pipeline else "off",
         f"{sum(r['n'] for r in runs):,.0f}",
         f"{statistics.median(r['p50'] for r in runs) * 1e3:.3f}",
         f"{statistics.median(r['p99'] for r in runs) * 1e3:.3f}"]
        for pipeline, runs in results.items()
    ]  # fmt: skip


async def many_jobs(url: str, counts: list[int], total: int, rounds: int) -> list[list[str]]:
    results: dict[tuple[int, bool], list[dict[str, float]]] = {}
    for _ in range(rounds):
        for jobs in counts:
            for pipeline in (False, True):  # side by side, alternating
                per_job = max(1, total // jobs)
                got = await many_jobs_once(url, jobs, per_job, pipeline)
                results.setdefault((jobs, pipeline), []).append(got)
    rows = []
    for (jobs, pipeline), runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        rows.append([str(jobs), "on" if pipeline else "off", f"{med['batch']:.1f}",
                     f"{med['amortised'] * 1e3:.3f}", f"{med['p50'] * 1e3:.3f}",
                     f"{med['p99'] * 1e3:.3f}"])  # fmt: skip
    return rows


async def takeover_once(url: str, ttl: float) -> float:
    child = subprocess.Popen(  # noqa: ASYNC220  # the benchmark waits for it on purpose
        [sys.executable, "-c", CHILD, url, str(ttl)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "held"
    await trio.sleep(random.uniform(0, ttl))  # anywhere in the renewal cycle
    child.kill()
    killed = trio.current_time()
    child.wait()
    async with RedisCursorStore(url, namespace="bench") as store, store.lease("job", ttl=ttl):
        took = trio.current_time() - killed
    return took


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as directory:
        redis, url = start_redis(Path(directory))
        try:
            rows = await commit_costs(url, args.n)
            print(table(["call", "n", "p50 ms", "p99 ms"], rows))
            summary = {"commit_p99_ms": float(rows[0][3])}
            print()
            counts = [int(x) for x in args.jobs.split(",")]
            rows = await many_jobs(url, counts, args.per_job, args.rounds)
            for row in rows:  # the amortised cost with the most jobs, pipelined
                if row[1] == "on":
                    summary["amortised_ms"] = float(row[3])
            print(table(["jobs", "pipeline", "commits / call", "amortised ms / commit",
                         "per-call p50 ms", "p99 ms"], rows))  # fmt: skip
            print()
            rows = []
            for rate in (float(x) for x in args.rates.split(",")):
                rows += await paced(url, args.paced_jobs, rate, args.seconds, args.rounds)
            print(table(["jobs", "commits/s", "pipeline", "commits", "per-call p50 ms",
                         "p99 ms"], rows))  # fmt: skip
            write_json(args.json, summary)
            if args.kills == 0:
                return
            takeovers = [await takeover_once(url, args.ttl) for _ in range(args.kills)]
            print()
            print(table(
                ["lease ttl s", "kills", "takeover p50 s", "p99 s", "max s"],
                [[f"{args.ttl:g}", str(args.kills), f"{percentile(takeovers, 50):.3f}",
                  f"{percentile(takeovers, 99):.3f}", f"{max(takeovers):.3f}"]],
            ))  # fmt: skip
        finally:
            redis.kill()
            redis.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--jobs", default="1,10,100,1000")
    parser.add_argument("--per-job", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paced-jobs", type=int, default=1000)
    parser.add_argument("--rates", default="1000,4000")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--json")
    parser.add_argument("--ttl", type=float, default=1.0)
    trio.run(main, parser.parse_args())
