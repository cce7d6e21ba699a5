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
import json
import random
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import trio
from _common import HERE, SCOPE, verify
from peers import httpx_sse_loop, ts_policy

if TYPE_CHECKING:
    from collections.abc import Callable

    from arkor_trio.sse import SSEFrame

from arkor_trio import ArkorClient, ReconnectPolicy, UnknownEvent
from arkor_trio.stream import open_sse
from arkor_trio.testing import ConnectionRecord, bench
from arkor_trio.testing.bench import PROFILES, STALL_LONG, make_plan, run_through_proxy

__all__ = ["PLANS", "STALL_LONG", "gaps_of"]

PLANS = PROFILES


def gaps_of(records: list[ConnectionRecord]) -> list[tuple[float, str, bool]]:
    """``(seconds, cut kind, after progress)`` for each cut connection followed by another."""
    return [(gap.seconds, gap.kind, gap.after_progress) for gap in bench.gaps_of(records)]


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
    received: Received = []

    async def client(url: str) -> str:
        return await CLIENTS[args.client](url, args, received)

    trial = await run_through_proxy(
        args.base_url,
        make_plan(args.plan, args.seed),
        client,
        budget=args.budget,
        stop_after_gaps=args.cuts,
    )
    outcome = {
        None: trial.result,
        "budget": f"stopped by the {args.budget:g} s budget",
        "gaps": f"stopped after {args.cuts} cuts",
    }[trial.stopped]
    stopped = trial.stopped is not None
    checked = verify(received, None if stopped else args.expected_last)
    return {
        "client": args.client,
        "plan": args.plan,
        "outcome": outcome,
        "stopped": stopped,
        "wall": trial.wall,
        "conns": len(trial.records),
        "gaps": gaps_of(trial.records),
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
