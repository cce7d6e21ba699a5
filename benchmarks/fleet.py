"""A fleet's costs on Redis (issue 19): commit cost per event, lease takeover after ``kill -9``.

* **commit**: ``RedisCursorStore.commit`` carrying a lease (one Lua compare-and-set on the
  token, one round trip on loopback), ``--n`` in a row on one key: what a replica pays after
  each callback. Also ``load`` and a fleet ``heartbeat`` for scale.
* **takeover**: a child process holds a job's lease (``lease_ttl`` = ``--ttl``) and is killed
  with SIGKILL at a random point of its renewal cycle; the time until this process acquires the
  lease (the store's own polling, as a successor replica's trainer does). A fleet adds at most
  one heartbeat (``ttl / 3``) to notice the dead member; tests/test_fleet_redis.py checks the
  end-to-end bound.

Runs its own ``redis-server`` (the distribution's binary) on a free loopback port.
Usage: ``python benchmarks/fleet.py [--n 2000] [--kills 20] [--ttl 1.0]``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio
from _common import percentile, table

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
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--ttl", type=float, default=1.0)
    trio.run(main, parser.parse_args())
