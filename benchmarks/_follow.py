"""One client following the tick backlog through its own chaos proxy (a worker process).

Usage: ``python benchmarks/_follow.py CLIENT PLAN --base-url U --token T --job J [options]``.
Prints one JSON line: the proxy's records turned into gaps (cut -> next connection, wall
clock), what the client delivered (lost / duplicated / corrupted) and the wall time. The
client is stopped after ``--cuts`` gaps or ``--budget`` seconds, whichever comes first.

Clients: ``arkor`` (``EventStream``), ``httpx-sse`` (peers/httpx_sse_loop.py), ``ts-policy``
(peers/ts_policy.py), ``eventsource`` (peers/eventsource_node.mjs under Node).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import trio
from _common import HERE, SCOPE, verify
from peers import httpx_sse_loop, ts_policy

if TYPE_CHECKING:
    from collections.abc import Callable

    from arkor_trio.sse import SSEFrame

from arkor_trio import ArkorClient, ReconnectPolicy, UnknownEvent
from arkor_trio.stream import open_sse
from arkor_trio.testing import (
    ConnectionRecord,
    CutAfterEvents,
    Plan,
    Refuse,
    Stall,
    Status,
    open_chaos_proxy,
)

#: Each cut and stall happens after a seeded draw of 4..16 complete frames.
K_RANGE = (4, 16)
PROGRESS_KINDS = frozenset({"clean", "mid_frame", "reset", "after_id"})
CLEAN = CutAfterEvents(0, mode="clean", graceful=True)
#: How long the proxy keeps a stalled connection open in the dead-connection benchmark.
STALL_LONG = 8.0

#: name -> (what the row injects, the seeded steps and their weights)
PLANS: dict[str, tuple[str, list[Any], list[float] | None]] = {
    "none": ("no fault", [], None),
    "clean": ("clean end of body after k frames", [CLEAN], None),
    "mid-frame": ("cut inside frame k+1", [CutAfterEvents(0, mode="mid_frame")], None),
    "reset": ("TCP RST inside frame k+1", [CutAfterEvents(0, mode="reset")], None),
    "after-id": ("cut after the id line of frame k+1", [CutAfterEvents(0, mode="after_id")], None),
    "503": (
        "clean cuts; 1 in 3 draws: two 503s with Retry-After: 1",
        [CLEAN, Status(code=503, count=2, retry_after=1)],
        [2, 1],
    ),
    "stall": ("stall after k frames; the proxy closes after 1 s", [Stall(seconds=1.0)], None),
    "refuse": (
        "RST cuts; 1 in 5 draws: refuse connections for 50 ms",
        [CutAfterEvents(0, mode="reset"), Refuse(ms=50)],
        [4, 1],
    ),
    "mix": (
        "all of the above, seeded draw per connection",
        [
            CLEAN,
            CutAfterEvents(0, mode="clean"),
            CutAfterEvents(0, mode="mid_frame"),
            CutAfterEvents(0, mode="reset"),
            CutAfterEvents(0, mode="after_id"),
            Status(code=503, count=1, retry_after=1),
            Refuse(ms=50),
            Stall(seconds=1.0),
        ],
        [3, 3, 3, 3, 3, 0.3, 0.5, 0.5],
    ),
    "stall-long": (
        f"stall after k frames; the proxy closes after {STALL_LONG:g} s",
        [Stall(seconds=STALL_LONG)],
        None,
    ),
}


def make_plan(name: str, seed: int) -> Plan:
    _, kinds, weights = PLANS[name]
    if not kinds:
        return Plan()
    return Plan.random(kinds, seed, weights=weights, events=K_RANGE)


def gaps_of(records: list[ConnectionRecord]) -> list[tuple[float, str, bool]]:
    """``(seconds, cut kind, after progress)`` for each cut connection followed by another."""
    out = []
    for record, following in itertools.pairwise(records):
        if record.cut_wall is None or record.cut_kind is None:
            continue
        kind = record.cut_kind.value
        progress = kind in PROGRESS_KINDS and record.events_passed >= 1
        out.append((following.opened_wall - record.cut_wall, kind, progress))
    return out


Received = list[tuple[str | None, Any]]


async def run_arkor(url: str, args: argparse.Namespace, received: Received) -> str:
    policy = ReconnectPolicy(idle_timeout=args.idle_timeout or 45.0)
    client = ArkorClient(base_url=url, token=args.token, org_slug="local", project_slug="default")
    async with client, client.events(args.job, policy=policy) as stream:
        async for event in stream:
            data = event.data if isinstance(event, UnknownEvent) else {"type": type(event).__name__}
            received.append((event.event_id, data))
    return "terminal event"


_TERMINAL_NAMES = frozenset({"training.completed", "training.failed", "training.cancelled"})


async def run_open_sse(url: str, args: argparse.Namespace, received: Received) -> str:
    """The general channel on the stream's URL, as a trio app would follow any SSE endpoint."""
    policy = ReconnectPolicy(idle_timeout=args.idle_timeout or 45.0)

    def is_final(frame: SSEFrame) -> bool:
        return frame.event in _TERMINAL_NAMES

    async with open_sse(
        f"{url}/v1/jobs/{args.job}/events/stream",
        headers=_headers(args),
        params=SCOPE,
        policy=policy,
        is_final=is_final,
    ) as stream:
        async for frame in stream:
            if frame.event != "ping":
                received.append((frame.id, frame.data))
    return "terminal event"


def _on_event(received: Received) -> Callable[[str | None, str, str], None]:
    def on_event(event_id: str | None, name: str, data: str) -> None:
        received.append((event_id, data))

    return on_event


async def run_httpx_sse(url: str, args: argparse.Namespace, received: Received) -> str:
    timeout = None if args.read_timeout == 0 else args.read_timeout
    return await httpx_sse_loop.follow(
        f"{url}/v1/jobs/{args.job}/events/stream",
        params=SCOPE,
        headers=_headers(args),
        on_event=_on_event(received),
        timeout=timeout,
    )


async def run_ts_policy(url: str, args: argparse.Namespace, received: Received) -> str:
    return await ts_policy.follow(
        f"{url}/v1/jobs/{args.job}/events/stream",
        params=SCOPE,
        headers=_headers(args),
        on_event=_on_event(received),
        rng=random.Random(args.seed),
    )


async def run_eventsource(url: str, args: argparse.Namespace, received: Received) -> str:
    query = "&".join(f"{k}={v}" for k, v in SCOPE.items())
    command = [
        "node",
        str(HERE / "peers" / "eventsource_node.mjs"),
        args.module_dir,
        f"{url}/v1/jobs/{args.job}/events/stream?{query}",
        json.dumps(_headers(args)),
    ]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
    assert process.stdout is not None
    outcome = "node exited"
    buffer = b""
    try:
        while chunk := await process.stdout.receive_some(65536):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                record = json.loads(line)
                if "id" in record:
                    received.append((record["id"], record["data"]))
                elif "closed" in record and outcome == "node exited":
                    outcome = record["closed"]
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
    return outcome


def _headers(args: argparse.Namespace) -> dict[str, str]:
    from arkor_trio._version import USER_AGENT

    return {"Authorization": f"Bearer {args.token}", "X-Arkor-Client": USER_AGENT}


CLIENTS = {
    "arkor": run_arkor,
    "open-sse": run_open_sse,
    "httpx-sse": run_httpx_sse,
    "ts-policy": run_ts_policy,
    "eventsource": run_eventsource,
}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    upstream = args.base_url
    received: Received = []
    outcome = "?"
    stopped = False
    async with open_chaos_proxy(upstream, plan=make_plan(args.plan, args.seed)) as proxy:
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:

            async def client() -> None:
                nonlocal outcome, stopped
                with trio.move_on_after(args.budget) as budget:
                    outcome = await CLIENTS[args.client](proxy.url, args, received)
                if budget.cancelled_caught:
                    outcome, stopped = f"stopped by the {args.budget:g} s budget", True
                nursery.cancel_scope.cancel()

            async def stop_after_cuts() -> None:
                nonlocal outcome, stopped
                seen = 1
                while True:
                    seen += 1
                    await proxy.wait_connections(seen)
                    if len(gaps_of(proxy.records)) >= args.cuts:
                        outcome, stopped = f"stopped after {args.cuts} cuts", True
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(client)
            if args.cuts:
                nursery.start_soon(stop_after_cuts)
        wall = time.perf_counter() - started
        records = proxy.records
    checked = verify(received, None if stopped else args.expected_last)
    return {
        "client": args.client,
        "plan": args.plan,
        "outcome": outcome,
        "stopped": stopped,
        "wall": wall,
        "conns": len(records),
        "gaps": gaps_of(records),
        "unique": len({i for i, _ in received}),
        **checked,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("client", choices=sorted(CLIENTS))
    parser.add_argument("plan", choices=sorted(PLANS))
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--expected-last", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cuts", type=int, default=0, help="stop after this many gaps (0: no)")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds before stopping")
    parser.add_argument("--idle-timeout", type=float, default=0.0, help="arkor; 0: default")
    parser.add_argument("--read-timeout", type=float, default=5.0, help="httpx-sse; 0: none")
    parser.add_argument("--module-dir", default="", help="eventsource: its node_modules parent")
    return parser.parse_args(argv)


if __name__ == "__main__":
    result = trio.run(main, parse_args())
    json.dump(result, sys.stdout)
    print()
