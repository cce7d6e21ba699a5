"""The restart herd: N followers of running jobs resume after the backend is killed (kill -9).

A backend process (``websocket_feed.py --serve``) runs ``--followers`` jobs; each is followed
once, by SSE streams (10 ``ArkorClient`` s, ``followers / 10`` streams each) or by one feed (one
WebSocket). Once every follower has its first event, the backend is killed with SIGKILL and
started again on the same data dir and port (each job was running, so the new backend ends it
failed, "backend restarted": every follower has exactly one next event to get). Measured from
the new backend's "listening" line to each follower's next event: p50, p99 and all resumed;
every job's ids must arrive once and in order (lost / dup).

Phases (SSE; this process times its own connection attempts): how long the new backend took
to listen after the kill; the connects refused while it was down; after it listens, the wait
for each follower's first attempt (its retry schedule); the TCP connect (a SYN dropped because
the accept queue was full is retried by the kernel after 1 s, then 2 s more); connected until
the response headers (the accept queue, then the request's handling); headers until the event.

Accept backlog: the listening socket's backlog (``ss``'s Send-Q), ``net.core.somaxconn``, the
deepest accept queue seen (its Recv-Q in ``/proc/net/tcp``, sampled every ms by a child process),
the SYNs that socket dropped (``sk_drops``, the ``d`` of ``ss -m``: its own count), and the
kernel's ``ListenOverflows``, ``ListenDrops`` and ``TCPSynRetrans`` counters over the herd
(system-wide: other processes' listeners and connections count too).

``--down S`` waits S seconds between the kill and the restart (a supervisor's restart delay: the
followers' backoff grows meanwhile); ``--default-policy`` follows with ``ReconnectPolicy()``
(``max_delay`` 30 s) instead of the (0.05 s, 1 s) of the gap benchmark.

Usage: ``python benchmarks/herd.py [--followers N] [--runs R] [--transport sse|websocket|both]
[--down S] [--default-policy]``.
"""

from __future__ import annotations

import argparse
import contextvars
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
from _common import percentile, table
from websocket_reconnect import POLICY, Backend, check_ids

from arkor_trio import ReconnectPolicy
from arkor_trio.server._serve import local_client

CLIENTS = 10
SAMPLER = r"""
import select, sys, time
port = b":%04X" % int(sys.argv[1])
def depth():
    with open("/proc/net/tcp", "rb") as f:
        f.readline()
        for line in f:  # listening sockets come first
            fields = line.split()
            if fields[3] != b"0A":
                return None
            if fields[1].endswith(port):
                return int(fields[4].split(b":")[1], 16)
    return None
deepest = samples = 0
gone, listening = False, None
print("ready", flush=True)
while not select.select([sys.stdin], [], [], 0.001)[0]:
    d = depth()
    if d is None:
        gone = True
    elif gone:
        if listening is None:
            listening = time.perf_counter()
        samples += 1
        deepest = max(deepest, d)
print(deepest, samples, listening, flush=True)
"""


def netstat() -> dict[str, int]:
    """The kernel's TcpExt counters (``/proc/net/netstat``)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    out: dict[str, int] = {}
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            keys, nums = names.split()[1:], values.split()[1:]
            out.update(zip(keys, map(int, nums), strict=True))
    return out


def listener_of(port: int) -> tuple[int | None, int | None]:
    """(backlog, drops) of the socket listening on ``port``: ``ss``'s Send-Q of the LISTEN
    socket, and the ``d`` of its ``skmem`` (``sk_drops``: the SYNs this socket dropped because
    its accept queue was full, counted by the kernel for this socket alone)."""
    try:
        out = subprocess.run(
            ["ss", "-ltnmH", f"sport = :{port}"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, None
    fields = out.split()
    backlog = int(fields[2]) if len(fields) >= 3 else None
    drops = None
    for field in fields:
        if field.startswith("skmem:("):
            for item in field[len("skmem:(") : -1].split(","):
                if item.startswith("d") and item[1:].isdigit():
                    drops = int(item[1:])
    return backlog, drops


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def somaxconn() -> int:
    return int(Path("/proc/sys/net/core/somaxconn").read_text())


@attrs.define
class Attempts:
    """One SSE follower's connection attempts, timed from inside this process."""

    refused: int = 0
    #: (start, connected) of each TCP connect that succeeded.
    connects: list[tuple[float, float]] = attrs.Factory(list)
    #: Response headers of the last request.
    headers: float | None = None


FOLLOWER: contextvars.ContextVar[Attempts | None] = contextvars.ContextVar("follower", default=None)


def instrument() -> None:
    """Time every TCP connect and request of a follower (its tasks inherit FOLLOWER)."""
    open_tcp_stream = trio.open_tcp_stream
    send = httpx.AsyncClient.send

    async def timed_open(*args: Any, **kwargs: Any) -> trio.SocketStream:
        attempts = FOLLOWER.get()
        start = time.perf_counter()
        try:
            stream = await open_tcp_stream(*args, **kwargs)
        except OSError:
            if attempts is not None:
                attempts.refused += 1
            raise
        if attempts is not None:
            attempts.connects.append((start, time.perf_counter()))
        return stream

    async def timed_send(self: httpx.AsyncClient, *args: Any, **kwargs: Any) -> httpx.Response:
        response = await send(self, *args, **kwargs)
        attempts = FOLLOWER.get()
        if attempts is not None:
            attempts.headers = time.perf_counter()
        return response

    trio.open_tcp_stream = timed_open  # type: ignore[assignment]
    httpx.AsyncClient.send = timed_send  # type: ignore[method-assign]


@attrs.define
class Run:
    transport: str
    followers: int
    #: From the moment the new backend's socket listens (sampled) to each follower's next event.
    waits_ms: list[float]
    #: The same from its "listening" line (which a busy backend prints late).
    line_waits_ms: list[float]
    lost: int
    dup: int
    down_ms: float
    phases: dict[str, list[float]]
    refused: list[int]
    backlog: int | None
    deepest: int
    #: SYNs the new backend's listening socket dropped (its own count; None: unknown).
    drops: int | None
    counters: dict[str, int]
    #: CPU seconds of this process from the kill to all resumed, and of the new backend from
    #: its "listening" line to all resumed.
    cpu: tuple[float, float]


async def sample_queue(port: int) -> subprocess.Popen[str]:
    sampler = subprocess.Popen(  # noqa: ASYNC220  # returns at once
        [sys.executable, "-c", SAMPLER, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sampler.stdout is not None
    await trio.to_thread.run_sync(sampler.stdout.readline)
    return sampler


async def herd_run(
    transport: str, followers: int, down: float = 0.0, policy: ReconnectPolicy = POLICY
) -> Run:
    jobs = [f"job_s{i:05d}" for i in range(followers)]
    got: dict[str, list[int]] = {job: [] for job in jobs}
    attempts = {job: Attempts() for job in jobs}
    after: dict[str, float] = {}
    restarted: dict[str, float] = {}
    everyone, warm = trio.Event(), trio.Event()
    started = 0

    async def follow(stream_cm: Any, job: str) -> None:
        nonlocal started
        FOLLOWER.set(attempts[job])
        async with stream_cm as stream:
            async for event in stream:
                got[job].append(int(event.event_id or 0))
                if len(got[job]) == 1:
                    started += 1
                    if started == followers:
                        warm.set()
                if "at" in restarted and job not in after:
                    after[job] = time.perf_counter()
                    if len(after) == followers:
                        everyone.set()

    with tempfile.TemporaryDirectory(prefix="bench-herd-") as tmp:
        first = Backend(tmp, followers, 50.0)
        info = await first.ready()
        port = int(info["base_url"].rsplit(":", 1)[1])
        backlog, _ = listener_of(port)
        first.go()
        clients = [local_client(info["base_url"], info["token"]) for _ in range(CLIENTS)]
        feed_cm = clients[0].feed(policy=policy) if transport == "websocket" else nullcontext()
        async with feed_cm as feed, trio.open_nursery() as nursery:
            for i, job in enumerate(jobs):
                if feed is not None:
                    stream_cm: Any = feed.subscribe(job)
                else:
                    stream_cm = clients[i % CLIENTS].events(job, policy=policy)
                nursery.start_soon(follow, stream_cm, job)
            with trio.fail_after(120):
                await warm.wait()
                for a in attempts.values():
                    a.refused, a.connects, a.headers = 0, [], None
                sampler = await sample_queue(port)
                before = netstat()
                killed = time.perf_counter()
                client_cpu = time.process_time()
                first.process.send_signal(signal.SIGKILL)
                await trio.to_thread.run_sync(first.process.wait)
                await trio.sleep(down)  # a restart that takes longer (a supervisor's delay)
                second = Backend(tmp, followers, 0, port)
                restarted.update(at=(await second.ready())["at"])
                server_cpu = cpu_seconds(second.process.pid)
                await everyone.wait()
                counters = netstat()
                _, drops = await trio.to_thread.run_sync(listener_of, port)
                client_cpu = time.process_time() - client_cpu
                server_cpu = cpu_seconds(second.process.pid) - server_cpu
                assert sampler.stdin is not None
                assert sampler.stdout is not None
                sampler.stdin.close()
                sampled = (await trio.to_thread.run_sync(sampler.stdout.readline)).split()
                sampler.wait()
            nursery.cancel_scope.cancel()
        for client in clients:
            await client.aclose()
        await second.stop()
    deepest, listening = int(sampled[0]), float(sampled[2])
    waits = [(t - listening) * 1e3 for t in after.values()]
    line_waits = [(t - restarted["at"]) * 1e3 for t in after.values()]
    lost = sum(check_ids(ids)[0] for ids in got.values())
    dup = sum(check_ids(ids)[1] for ids in got.values())
    phases: dict[str, list[float]] = {
        k: [] for k in ("first try", "connect", "to headers", "to event")
    }
    for job, a in attempts.items():
        if not a.connects or a.headers is None:
            continue
        start, connected = a.connects[-1]
        phases["first try"].append((start - listening) * 1e3)
        phases["connect"].append((connected - start) * 1e3)
        phases["to headers"].append((a.headers - connected) * 1e3)
        phases["to event"].append((after[job] - a.headers) * 1e3)
    delta = {k: counters.get(k, 0) - before.get(k, 0) for k in
             ("ListenOverflows", "ListenDrops", "TCPSynRetrans")}  # fmt: skip
    return Run(
        transport, followers, waits, line_waits, lost, dup, (listening - killed) * 1e3, phases,
        [a.refused for a in attempts.values()], backlog, deepest, drops, delta,
        (client_cpu, server_cpu),
    )  # fmt: skip


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{percentile(values, 50):.0f} / {percentile(values, 99):.0f} / {max(values):.0f}"


def report(runs: list[Run]) -> None:
    name = {"websocket": "feed (1 socket)", "sse": f"SSE ({CLIENTS} clients)"}
    rows = [
        [name[r.transport], r.followers, f"{percentile(r.waits_ms, 50):.0f}",
         f"{percentile(r.waits_ms, 99):.0f}", f"{max(r.waits_ms):.0f}",
         f"{max(r.line_waits_ms):.0f}", r.lost, r.dup]
        for r in runs
    ]  # fmt: skip
    for transport in ("websocket", "sse"):
        mine = [r for r in runs if r.transport == transport]
        if len(mine) > 1:
            rows.append([
                f"{name[transport]}, median of {len(mine)}", mine[0].followers,
                f"{statistics.median(percentile(r.waits_ms, 50) for r in mine):.0f}",
                f"{statistics.median(percentile(r.waits_ms, 99) for r in mine):.0f}",
                f"{statistics.median(max(r.waits_ms) for r in mine):.0f}",
                f"{statistics.median(max(r.line_waits_ms) for r in mine):.0f}",
                sum(r.lost for r in mine), sum(r.dup for r in mine),
            ])  # fmt: skip
    headers = ["followers", "n", "next event p50 ms", "p99", "all resumed ms",
               "from its line ms", "lost", "dup"]  # fmt: skip
    print(
        "Times from the new backend's socket listening (sampled) to each follower's next event; "
        '`from its line`: all resumed, from the "listening" line it prints (late when the herd '
        "keeps it busy; the figure docs/benchmarks.md section 7c gave before).\n"
    )
    print(table(headers, rows))
    sse = [r for r in runs if r.transport == "sse"]
    if sse:
        print(
            "\nPhases of the SSE herd, ms (p50 / p99 / max over followers): the new backend "
            "listening after the kill; connects refused while it was down; after it listens, "
            "the wait for the first attempt; the TCP connect; connected until the response "
            "headers; headers until the next event; CPU seconds of the followers' process (kill "
            'to all resumed) and of the new backend (its "listening" line to all resumed).\n'
        )
        rows = [
            [i + 1, f"{r.down_ms:.0f}",
             f"{statistics.median(r.refused):.0f} / {max(r.refused)}",
             *(spread(r.phases[k]) for k in ("first try", "connect", "to headers", "to event")),
             f"{r.cpu[0]:.2f}", f"{r.cpu[1]:.2f}"]
            for i, r in enumerate(sse)
        ]  # fmt: skip
        headers = ["run", "listening after kill", "refused p50 / max", "first try", "connect",
                   "to headers", "to event", "client CPU s", "backend CPU s"]  # fmt: skip
        print(table(headers, rows))
    print(
        f"\nAccept backlog (net.core.somaxconn = {somaxconn()}; the deepest queue is sampled "
        "every ms; `SYNs dropped` is the new listening socket's own count; the other counters "
        "are the kernel's, system-wide (other processes count too), from the kill to all "
        "resumed).\n"
    )
    rows = [
        [name[r.transport], r.backlog if r.backlog is not None else "?", r.deepest,
         r.drops if r.drops is not None else "?", r.counters["ListenOverflows"],
         r.counters["ListenDrops"], r.counters["TCPSynRetrans"]]
        for r in runs
    ]  # fmt: skip
    headers = ["followers", "backlog", "deepest accept queue", "SYNs dropped", "ListenOverflows",
               "ListenDrops", "TCPSynRetrans"]  # fmt: skip
    print(table(headers, rows))


def headline(runs: list[Run]) -> dict[str, Any]:
    """Medians over the runs of each transport (for run_all.py's targets)."""
    out: dict[str, Any] = {"lost": sum(r.lost for r in runs), "dup": sum(r.dup for r in runs)}
    for transport in ("websocket", "sse"):
        mine = [r for r in runs if r.transport == transport]
        if mine:
            out[transport] = {
                "followers": mine[0].followers,
                "all_resumed_ms": statistics.median(max(r.waits_ms) for r in mine),
                "p99_ms": statistics.median(percentile(r.waits_ms, 99) for r in mine),
                "backlog": mine[0].backlog,
                "deepest_queue": max(r.deepest for r in mine),
                "listen_overflows": sum(r.counters["ListenOverflows"] for r in mine),
                "syns_dropped": sum(r.drops or 0 for r in mine),
            }
    return out


async def herd(
    transports: list[str], followers: int, runs: int, down: float, policy: ReconnectPolicy
) -> list[Run]:
    return [
        await herd_run(transport, followers, down, policy)
        for _ in range(runs)
        for transport in transports
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--followers", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--transport", choices=("sse", "websocket", "both"), default="both")
    parser.add_argument("--json", type=Path, help="also write the headline figures here")
    parser.add_argument(
        "--down", type=float, default=0.0, help="seconds between the kill and the restart"
    )
    parser.add_argument(
        "--default-policy",
        action="store_true",
        help="follow with ReconnectPolicy() (max_delay 30 s) instead of (0.05 s, 1 s)",
    )
    args = parser.parse_args()
    instrument()
    transports = ["websocket", "sse"] if args.transport == "both" else [args.transport]
    policy = ReconnectPolicy() if args.default_policy else POLICY
    print(
        f"### Herd: {args.followers:,} followers, backend killed (kill -9) and restarted"
        f"{f' {args.down:g} s later' if args.down else ''}\n"
    )
    print(
        f"Reconnect policy: initial_delay {policy.initial_delay:g} s, max_delay "
        f"{policy.max_delay:g} s.\n"
    )
    print(f"Load average before: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    runs = trio.run(herd, transports, args.followers, args.runs, args.down, policy)
    report(runs)
    if args.json is not None:
        args.json.write_text(json.dumps(headline(runs)))


if __name__ == "__main__":
    main()
