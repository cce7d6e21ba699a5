"""A fleet under load (issue 19): ``--jobs`` running jobs across ``--replicas`` replica processes
at ``--rate`` events/s in all; dispatch lag from an event's append to its callback starting.

* The local backend runs in its own process (``websocket_feed.py --serve``: ``--jobs`` running
  jobs, and a thread that appends ``training.log`` events round-robin at ``--rate`` events/s in
  all, each stamped with its wall-clock append time in ``loss``).
* ``redis-server`` runs on its own free loopback port (``fleet.py``'s).
* Each replica is a process running a :class:`~arkor_trio.Fleet` (its jobs over one job feed,
  ``--transport``) on a
  :class:`~arkor_trio.stream.RedisCursorStore` whose ``on_log`` records ``time.time() -
  ctx.loss`` when the callback starts, and the event's id (so duplicates and losses are
  counted). The replicas start together and share the jobs; the emitter starts once every job
  is held and its stream open, and runs for ``--seconds``. With ``--gc-freeze`` each replica
  calls ``gc.freeze()`` when the load starts: what start-up built (a thousand trainers, leases,
  subscriptions) is long-lived, and Python's full collections walk all of it each time (pauses
  of 0.1 to 0.6 s were seen on a loaded 2-core box).

Reported: jobs held per replica, events dispatched / offered, dispatch lag p50 / p99 / max,
duplicates (an id dispatched twice) and gaps (an id skipped), each replica's CPU time.

Usage: ``python benchmarks/fleet_load.py [--jobs 1000] [--replicas 3] [--rate 1000]
[--seconds 20] [--no-pipeline] [--transport auto|feed|sse] [--gc-freeze]``
(``--no-pipeline --transport sse``: how replicas ran before pipelining and the feed).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from _common import percentile, table, write_json
from fleet import start_redis

HERE = Path(__file__).resolve().parent


async def replica(
    base_url: str, token: str, redis_url: str, out: Path, pipeline: bool, transport: str,
    freeze: bool,
) -> None:  # fmt: skip
    """One replica: follow every job; on SIGTERM write what was dispatched to ``out``."""
    from arkor_trio import Callbacks, Fleet
    from arkor_trio.server._serve import local_client
    from arkor_trio.stream import RedisCursorStore

    lags: list[float] = []
    sent: list[float] = []
    ids: list[tuple[str, int]] = []
    stalls: list[float] = []  # how late a 10 ms sleep wakes: the replica's loop lag

    started = 0

    async def on_started(ctx: Any) -> None:
        nonlocal started
        started += 1

    async def on_log(ctx: Any) -> None:
        if freeze and not lags:  # the load starts: what start-up built is long-lived
            gc.freeze()
        lags.append(time.time() - ctx.loss)
        sent.append(ctx.loss)
        ids.append((ctx.delivery.job_id, int(ctx.delivery.event_id)))

    store = RedisCursorStore(redis_url, namespace="load", pipeline=pipeline)
    async with local_client(base_url, token) as client:
        callbacks = Callbacks(on_started=on_started, on_log=on_log)
        fleet = Fleet(client, store=store, callbacks=callbacks, lease_ttl=10.0, transport=transport)

        async def status() -> None:
            last = None
            while True:
                now = {"held": fleet.stats.held, "started": started}  # fleet.stats: not cheap
                if now != last:
                    print(json.dumps(now), flush=True)
                    last = now
                await trio.sleep(0.2)

        async def ticker() -> None:
            while True:
                before = trio.current_time()
                await trio.sleep(0.01)
                if lags:  # under load only: start-up (333 streams opening) is not counted
                    stalls.append(trio.current_time() - before - 0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(status)
            nursery.start_soon(ticker)
            with trio.open_signal_receiver(signal.SIGTERM) as signals:
                nursery.start_soon(stop_on_signal, fleet, signals)
                await fleet.run()
            usage = resource.getrusage(resource.RUSAGE_SELF)
            feed = fleet.feed
            result = {"lags": lags, "sent": sent, "ids": ids, "stalls": stalls,
                      "sockets": feed.stats.connections if feed is not None else 0,
                      "cpu": usage.ru_utime + usage.ru_stime}  # fmt: skip
            await trio.Path(out).write_text(json.dumps(result))
            nursery.cancel_scope.cancel()


async def stop_on_signal(fleet: Any, signals: Any) -> None:
    async for _ in signals:
        fleet.stop()  # between events: what was dispatched was committed
        return


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        redis, redis_url = start_redis(Path(tmp))
        backend_dir = Path(tmp) / "backend"
        backend_dir.mkdir()
        backend = subprocess.Popen(
            [sys.executable, str(HERE / "websocket_feed.py"), "--serve", str(backend_dir),
             "--jobs", str(args.jobs), "--rate", str(args.rate)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        replicas: list[subprocess.Popen[str]] = []
        try:
            assert backend.stdin is not None
            assert backend.stdout is not None
            info = json.loads(backend.stdout.readline())
            started = time.perf_counter()
            for i in range(args.replicas):
                command = [sys.executable, __file__, "--replica", info["base_url"], info["token"],
                           redis_url, str(Path(tmp) / f"replica{i}.json")]  # fmt: skip
                if args.no_pipeline:
                    command.append("--no-pipeline")
                command += ["--transport", args.transport]
                if args.gc_freeze:
                    command.append("--gc-freeze")
                replicas.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
            held = wait_until_all_held(replicas, args.jobs, timeout=60.0)
            spread = time.perf_counter() - started
            backend.stdin.write("go\n")
            backend.stdin.flush()
            time.sleep(args.seconds)  # the load runs in the other processes
            for process in replicas:
                process.send_signal(signal.SIGTERM)
            for process in replicas:
                process.wait(30)
            results = [json.loads((Path(tmp) / f"replica{i}.json").read_text())
                       for i in range(args.replicas)]  # fmt: skip
        finally:
            for process in replicas:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            if backend.stdin is not None:
                backend.stdin.close()
            backend.wait(30)
            redis.kill()
            redis.wait()
    if args.dump:
        Path(args.dump).write_text(json.dumps(results))
    report(args, results, held, spread)


def wait_until_all_held(
    replicas: list[subprocess.Popen[str]], jobs: int, timeout: float
) -> list[int]:
    """Read the replicas' status lines until every job is held and its ``training.started``
    was dispatched (its stream is open)."""
    import selectors

    held = [0] * len(replicas)
    ready = [0] * len(replicas)
    selector = selectors.DefaultSelector()
    for i, process in enumerate(replicas):
        assert process.stdout is not None
        selector.register(process.stdout, selectors.EVENT_READ, i)
    deadline = time.monotonic() + timeout
    while sum(ready) < jobs:
        if time.monotonic() > deadline:
            sys.exit(f"the replicas follow {ready} of {jobs} jobs after {timeout:g} s")
        for key, _ in selector.select(timeout=1.0):
            line = key.fileobj.readline()  # type: ignore[union-attr]
            if not line:
                sys.exit(f"replica {key.data} exited")
            status = json.loads(line)
            held[key.data], ready[key.data] = status["held"], status["started"]
    selector.close()
    return held


def report(args: argparse.Namespace, results: list[dict[str, Any]], held: list[int],
           spread: float) -> None:  # fmt: skip
    lags = [lag for r in results for lag in r["lags"]]
    stalls = [s for r in results for s in r["stalls"]]
    seen: dict[str, list[int]] = {}
    for r in results:
        for job, n in r["ids"]:
            seen.setdefault(job, []).append(n)
    duplicates = sum(len(ns) - len(set(ns)) for ns in seen.values())
    gaps = sum(max(ns) - min(ns) + 1 - len(set(ns)) for ns in seen.values())
    offered = int(args.rate * args.seconds)
    mode = "off" if args.no_pipeline else "on"
    rows = [
        ["jobs / replicas / rate", f"{args.jobs:,} / {args.replicas} / {args.rate:,.0f} events/s"],
        ["commit pipelining / transport / gc.freeze()",
         f"{mode} / {args.transport} / {'yes' if args.gc_freeze else 'no'}"],
        ["feed sockets per replica", " / ".join(str(r["sockets"]) for r in results)],
        ["jobs held per replica", " / ".join(str(h) for h in held)],
        ["start to every job held and its stream open", f"{spread:.1f} s"],
        ["events dispatched / offered (about)", f"{len(lags):,} / {offered:,}"],
        ["dispatch lag p50 / p99 / max",
         f"{percentile(lags, 50) * 1e3:.1f} / {percentile(lags, 99) * 1e3:.1f} / "
         f"{max(lags) * 1e3:.1f} ms"],
        ["duplicates / gaps", f"{duplicates} / {gaps}"],
        ["replica loop lag under load p99 / max",
         f"{percentile(stalls, 99) * 1e3:.1f} / {max(stalls) * 1e3:.1f} ms"],
        ["replica CPU s (each)", " / ".join(f"{r['cpu']:.1f}" for r in results)],
    ]  # fmt: skip
    print(table(["measure", "value"], rows))
    write_json(args.json, {"lag_p99_ms": percentile(lags, 99) * 1e3, "twice": duplicates,
                           "gaps": gaps})  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--replica":
        base_url, token, redis_url, out = sys.argv[2:6]
        transport = sys.argv[sys.argv.index("--transport") + 1]
        pipeline = "--no-pipeline" not in sys.argv
        freeze = "--gc-freeze" in sys.argv
        trio.run(replica, base_url, token, redis_url, Path(out), pipeline, transport, freeze)
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--no-pipeline", action="store_true")
    parser.add_argument("--transport", choices=["auto", "feed", "sse"], default="auto")
    parser.add_argument("--gc-freeze", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--dump", help="write every replica's samples to this file")
    main(parser.parse_args())
