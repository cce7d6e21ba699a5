"""Dead connection detection: a stream that stalls (open, silent) after a few frames.

Every client follows the tick backlog through its own chaos proxy whose every connection stalls
after a draw of 4..16 frames: the proxy stops forwarding (recording the time) and closes the
connection only after ``STALL_LONG`` (8) seconds. The time from the stall to the client's next
connection is what a dead connection costs. arkor-trio reconnects after
``ReconnectPolicy.idle_timeout`` (+ no backoff, since the connection made progress); the peers
have no idle timeout of their own and wait for a read timeout or for the proxy to give up.

All clients run at once, each in its own process (``_follow.py``). Usage:
``python benchmarks/dead_connection.py [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio
from _common import (
    BACKLOG_JOB,
    BackendProcess,
    ensure_eventsource,
    fill,
    ms,
    open_backend_process,
    percentile,
    table,
    tick_payloads,
    write_json,
)
from _follow import STALL_LONG

HERE = Path(__file__).resolve().parent
#: (label, worker client, extra worker options, stalls to measure)
CLIENTS: list[tuple[str, str, list[str], int]] = [
    ("arkor-trio, idle_timeout=0.5 s", "arkor", ["--idle-timeout", "0.5"], 10),
    ("arkor-trio, idle_timeout=2 s", "arkor", ["--idle-timeout", "2"], 4),
    ("(a) httpx-sse loop, httpx default timeout (5 s read)", "httpx-sse", [], 2),
    ("(a) httpx-sse loop, timeout=None", "httpx-sse", ["--read-timeout", "0"], 2),
    ("(b) TS SDK policy (no idle timeout)", "ts-policy", [], 2),
    ("(c) eventsource (Node, no idle timeout)", "eventsource", [], 2),
]


async def run_client(
    backend: BackendProcess, client: str, extra: list[str], stalls: int, args: argparse.Namespace
) -> dict[str, Any]:
    command = [
        sys.executable, str(HERE / "_follow.py"), client, "stall-long",
        "--base-url", backend.base_url, "--token", backend.token, "--job", BACKLOG_JOB,
        "--cuts", str(stalls), "--budget", str(stalls * (STALL_LONG + 4) + 10),
        "--module-dir", str(args.module_dir or ""), *extra,
    ]  # fmt: skip
    done = await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)
    lines = done.stdout.decode().strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.decode().strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        return {"error": tail[0]}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


async def main(args: argparse.Namespace) -> None:
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="arkor-bench-") as tmp:
        fill(Path(tmp), BACKLOG_JOB, [*tick_payloads(2000), {"type": "training.completed"}])
        async with open_backend_process(Path(tmp)) as backend, trio.open_nursery() as nursery:
            for label, client, extra, stalls in CLIENTS:
                if client == "eventsource" and args.module_dir is None:
                    results[label] = {"error": args.node_reason}
                    continue

                async def one(label: str = label, client: str = client, extra: list[str] = extra,
                              stalls: int = stalls) -> None:  # fmt: skip
                    results[label] = await run_client(backend, client, extra, stalls, args)

                nursery.start_soon(one)
    rows = []
    summary = {}
    for label, *_ in CLIENTS:
        r = results[label]
        if "error" in r:
            rows.append([label, "-", "-", "-", "-", "-", f"cannot do this: {r['error']}"])
            continue
        gaps = [g for g, kind, _ in r["gaps"] if kind == "stall"]
        hung = sum(g >= STALL_LONG for g in gaps)
        verdict = (
            f"hung until the proxy closed the stalled connection ({STALL_LONG:g} s)"
            if hung == len(gaps) and gaps
            else "detected it (own timeout)"
            if hung == 0
            else f"hung {hung} of {len(gaps)} times"
        )
        rows.append([
            label, len(gaps), ms(percentile(gaps, 50)), ms(max(gaps, default=float("nan"))),
            f"{r['lost']}/{r['dup']}/{r['corrupt']}", r["conns"], verdict,
        ])  # fmt: skip
        summary[label] = {"n": len(gaps), "p50_ms": percentile(gaps, 50) * 1000}
    print(
        f"Every connection stalls after 4..16 frames; the proxy closes a stalled connection "
        f"after {STALL_LONG:g} s. Gap = stall start -> next connection (wall clock)."
    )
    print()
    print(
        table(["client", "n", "gap p50 ms", "max ms", "lost/dup/corrupt", "conns", "verdict"], rows)
    )
    write_json(args.json, {"stall_s": STALL_LONG, "clients": summary})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    arguments = parser.parse_args()
    folder, why = ensure_eventsource()
    arguments.module_dir, arguments.node_reason = folder, why
    trio.run(main, arguments)
