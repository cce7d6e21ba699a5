"""Reconnects over WebSocket vs SSE: gaps and loss under the same faults, and the restart herd.

Gap and loss: a backend process (``websocket_feed.py --serve``) runs one job whose emitter
appends ``--rate`` events/s. For each fault mode, each transport follows the job through its
own chaos proxy with the same seeded plan (every connection cut after 4..16 frames or
messages) for ``--seconds``; the proxy records each cut and the next connection's arrival
(the gap). Every event id must arrive once, in order (lost / dup).

The restart herd (many followers across a kill -9 and restart of the backend) is
``herd.py``, which uses this script's :class:`Backend` and :func:`check_ids`.

Usage: ``python benchmarks/websocket_reconnect.py [--rate R] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from _common import percentile, table

from arkor_trio import ReconnectPolicy
from arkor_trio.server._serve import local_client
from arkor_trio.server._store import RECOVERY_ID_GAP
from arkor_trio.testing import CutAfterEvents, Plan, open_chaos_proxy

FEED = str(Path(__file__).resolve().parent / "websocket_feed.py")
POLICY = ReconnectPolicy(initial_delay=0.05, max_delay=1.0)


class Backend:
    """``websocket_feed.py --serve`` in a child process."""

    def __init__(self, data: str, jobs: int, rate: float, port: int = 0) -> None:
        command = [sys.executable, FEED, "--serve", data, "--jobs", str(jobs)]
        command += ["--rate", str(rate), "--port", str(port)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    async def ready(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await trio.to_thread.run_sync(self.process.stdout.readline)
        info: dict[str, Any] = json.loads(line)
        info["at"] = time.perf_counter()
        return info

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    async def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        await trio.to_thread.run_sync(self.process.wait, 30)


def check_ids(ids: list[int]) -> tuple[int, int]:
    """(lost, duplicated) of a run of event ids that must be consecutive.

    One jump of exactly ``RECOVERY_ID_GAP`` is not a loss: after a restart the backend records
    "backend restarted" for a job it was running at an id past that gap (ids are never reused).
    """
    dup = sum(1 for a, b in itertools.pairwise(ids) if b <= a)
    lost = sum(
        b - a - 1 for a, b in itertools.pairwise(ids) if b > a + 1 and b - a - 1 != RECOVERY_ID_GAP
    )
    return lost, dup


async def gap_row(info: dict[str, Any], transport: str, mode: str, seconds: float) -> list[object]:
    plan = Plan.random([CutAfterEvents(0, mode=mode)], seed=7, events=(4, 16))  # type: ignore[arg-type]
    ids: list[int] = []
    async with open_chaos_proxy(info["base_url"], plan=plan) as proxy:
        async with local_client(proxy.url, info["token"]) as client:
            with trio.move_on_after(seconds):
                async with client.events("job_s00000", transport=transport, policy=POLICY) as s:
                    async for event in s:
                        ids.append(int(event.event_id or 0))  # noqa: PERF401  # stopped by a timeout
        records = proxy.records
    gaps = [
        (after.opened_at - before.cut_at) * 1e3
        for before, after in itertools.pairwise(records)
        if before.cut_at is not None
    ]
    lost, dup = check_ids(ids)
    return [
        mode,
        transport,
        len(gaps),
        f"{percentile(gaps, 50):.2f}",
        f"{percentile(gaps, 99):.2f}",
        f"{max(gaps):.1f}",
        len(ids),
        lost,
        dup,
    ]


async def gaps(rate: float, seconds: float) -> list[list[object]]:
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-wsr-") as tmp:
        backend = Backend(tmp, 1, rate)
        info = await backend.ready()
        backend.go()
        try:
            for mode, transport in itertools.product(
                ("clean", "mid_frame", "reset"), ("sse", "websocket")
            ):
                rows.append(await gap_row(info, transport, mode, seconds))
        finally:
            await backend.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    print(f"### Reconnect gap and loss, one job at {args.rate:,.0f} events/s\n")
    headers = ["fault", "transport", "cuts", "gap p50 ms", "p99", "max", "events", "lost", "dup"]
    print(table(headers, trio.run(gaps, args.rate, args.seconds)))


if __name__ == "__main__":
    main()
