"""Reconnect gaps under each fault, for arkor-trio and three peers, over one shared backlog.

A local backend (its own process) holds a completed job of ``--events`` checksummed ticks. For
each fault row, every client follows that job through its own chaos proxy running the same
seeded plan (each cut after a draw of 4..16 frames), in its own process (``_follow.py``). The
proxy records when it cut a connection and when the next one arrived (``time.perf_counter``):
that difference is the gap. The client's deliveries are checked for lost, duplicated and
corrupted events (every tick carries ``n`` = its id and a crc32).

arkor-trio and the httpx-sse loop read the whole backlog, one after the other (the fast
clients, measured alone). The TypeScript-policy peer (about 1 s per reconnect) and the Node
``eventsource`` peer (3 s) run at the same time in the background and are stopped after a few
cuts: their ``n`` says how many. Their wall-time ratio is scaled per event delivered.

Usage: ``python benchmarks/reconnect.py [--events N] [--rows a,b] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
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
from _follow import PLANS

HERE = Path(__file__).resolve().parent
CLIENT_NAMES = {
    "arkor": "arkor-trio EventStream",
    "open-sse": "arkor-trio open_sse (plain SSE)",
    "httpx-sse": "(a) httpx-sse + simple loop",
    "ts-policy": "(b) TS SDK policy",
    "eventsource": "(c) eventsource (Node)",
}
#: client -> (stop after this many cuts, 0 = read the whole backlog; time budget in s)
Limits = dict[str, tuple[int, float]]
FAST: Limits = {"arkor": (0, 90), "open-sse": (0, 90), "httpx-sse": (0, 90)}
SLOW: Limits = {"ts-policy": (6, 15), "eventsource": (3, 15)}
SLOWER: Limits = {"ts-policy": (5, 20), "eventsource": (3, 20)}
ROWS: list[tuple[str, Limits, Limits]] = [
    (
        "none",
        {"arkor": (0, 60), "open-sse": (0, 60), "httpx-sse": (0, 60)},
        {"ts-policy": (0, 60), "eventsource": (0, 60)},
    ),
    ("clean", FAST, SLOW),
    ("mid-frame", FAST, SLOW),
    ("reset", FAST, SLOW),
    ("after-id", FAST, SLOW),
    ("503", {"arkor": (16, 30), "open-sse": (16, 30), "httpx-sse": (0, 60)}, SLOWER),
    ("stall", {"arkor": (30, 30), "open-sse": (30, 30), "httpx-sse": (8, 20)}, SLOWER),
    ("refuse", FAST, SLOW),
    ("mix", FAST, SLOW),
]
NOTES = """\
- n: gaps measured (cuts followed by another connection); conns: TCP connections the proxy
  accepted. arkor-trio and (a) follow the whole backlog; (b) and (c) take about 1 s and 3 s per
  reconnect, so they are stopped after the few cuts their n shows ("ended").
- gap: from the proxy's cut (stamped when the fault fires, before the proxy tears its side
  down) to its accept of the next connection; both `time.perf_counter()` in the worker process
  that runs the proxy and the client.
- wall s: time to follow the backlog; x no-fault compares the time per event delivered with the
  same client's no-fault row, so the clients stopped early are comparable.
- arkor-trio (both rows) uses the default `ReconnectPolicy` (idle_timeout 0.25 s in the stall
  and mix rows); open_sse follows the same stream URL as a plain SSE endpoint (no Arkor client).
  (b) treats a cut body (no final chunk) as a body read error: backoff 1 s +-25 %; a clean end
  waits exactly 1 s. (c) waits its fixed 3 s reconnection time and stops for good on a non-200
  answer. (a) reconnects at once, whatever happened."""
#: arkor-trio's ReconnectPolicy.idle_timeout per row (default 45 s elsewhere).
IDLE_TIMEOUT = {"stall": 0.25, "mix": 0.25}


async def run_worker(
    backend: BackendProcess,
    client: str,
    plan: str,
    limits: tuple[int, float],
    *,
    expected_last: int,
    seed: int,
    module_dir: Path | None,
) -> dict[str, Any]:
    cuts, budget = limits
    command = [
        sys.executable, str(HERE / "_follow.py"), client, plan,
        "--base-url", backend.base_url, "--token", backend.token, "--job", BACKLOG_JOB,
        "--expected-last", str(expected_last), "--seed", str(seed),
        "--cuts", str(cuts), "--budget", str(budget),
        "--idle-timeout", str(IDLE_TIMEOUT.get(plan, 0.0)),
        "--module-dir", str(module_dir or ""),
    ]  # fmt: skip
    done = await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)
    lines = done.stdout.decode().strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.decode().strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        return {"client": client, "plan": plan, "error": tail[0]}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


async def run_row(
    backend: BackendProcess,
    plan: str,
    fast: Limits,
    slow: Limits,
    *,
    expected_last: int,
    seed: int,
    module_dir: Path | None,
    node_reason: str,
) -> list[dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}

    async def one(client: str, limits: tuple[int, float]) -> None:
        results[client] = await run_worker(
            backend, client, plan, limits, expected_last=expected_last, seed=seed,
            module_dir=module_dir,
        )  # fmt: skip

    async with trio.open_nursery() as nursery:
        for client, limits in slow.items():
            if client == "eventsource" and module_dir is None:
                results[client] = {"client": client, "plan": plan, "error": node_reason}
                continue
            nursery.start_soon(one, client, limits)
        for client, limits in fast.items():
            await one(client, limits)
    return [results[c] for c in CLIENT_NAMES if c in results]


def per_event(result: dict[str, Any]) -> float:
    return float(result["wall"]) / max(1, int(result["unique"]))


def render(rows: list[list[dict[str, Any]]], events: int) -> str:
    baseline = {r["client"]: r for r in rows[0] if "error" not in r}
    lines = []
    for results in rows:
        for r in results:
            label = f"{r['plan']}"
            name = CLIENT_NAMES[r["client"]]
            if "error" in r:
                lines.append([label, name, *["-"] * 10, f"cannot do this: {r['error']}"])
                continue
            gaps = [g for g, _, _ in r["gaps"]]
            base = baseline.get(r["client"])
            ratio = "-" if base is None else f"{per_event(r) / per_event(base):.1f}x"
            wall = f"{r['wall']:.2f}"
            lines.append([
                label, name, len(gaps), r["conns"],
                ms(percentile(gaps, 50)), ms(percentile(gaps, 95)), ms(percentile(gaps, 99)),
                ms(max(gaps)) if gaps else "-",
                r["lost"], r["dup"], r["corrupt"], f"{wall} ({ratio})", r["outcome"],
            ])  # fmt: skip
    headers = [
        "fault", "client", "n", "conns", "gap p50 ms", "p95", "p99", "max", "lost", "dup",
        "corrupt", "wall s (x no-fault)", "ended",
    ]  # fmt: skip
    return table(headers, lines)


def arkor_summary(rows: list[list[dict[str, Any]]]) -> dict[str, Any]:
    mine = [r for results in rows for r in results if r["client"] == "arkor" and "error" not in r]
    progress = [g for r in mine for g, _, after_progress in r["gaps"] if after_progress]
    return {
        "progress_gaps": len(progress),
        "p50_ms": percentile(progress, 50) * 1000,
        "p95_ms": percentile(progress, 95) * 1000,
        "p99_ms": percentile(progress, 99) * 1000,
        "max_ms": max(progress, default=float("nan")) * 1000,
        "lost": sum(r["lost"] for r in mine),
        "dup": sum(r["dup"] for r in mine),
        "corrupt": sum(r["corrupt"] for r in mine),
        "rows": len(mine),
        "failed_rows": [r["plan"] for results in rows for r in results
                        if r["client"] == "arkor" and "error" in r],
    }  # fmt: skip


async def main(args: argparse.Namespace, module_dir: Path | None, node_reason: str) -> None:
    wanted = [row for row in ROWS if not args.rows or row[0] in args.rows.split(",")]
    if wanted[0][0] != "none":
        wanted.insert(0, ROWS[0])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="arkor-bench-") as tmp:
        payloads = [*tick_payloads(args.events), {"type": "training.completed", "artifacts": []}]
        fill(Path(tmp), BACKLOG_JOB, payloads)
        expected_last = args.events + 1
        rows = []
        async with open_backend_process(Path(tmp)) as backend:
            for plan, fast, slow in wanted:
                rows.append(
                    await run_row(
                        backend,
                        plan,
                        fast,
                        slow,
                        expected_last=expected_last,
                        seed=args.seed,
                        module_dir=module_dir,
                        node_reason=node_reason,
                    )
                )
                elapsed = time.perf_counter() - started
                print(f"  row {plan!r} done at {elapsed:.0f} s", file=sys.stderr, flush=True)
    summary = arkor_summary(rows)
    print()
    print(
        f"Backlog: {args.events:,} ticks + 1 terminal event; each client has its own proxy with "
        f"the same plan (seed {args.seed}, cut after 4..16 frames). eventsource: "
        f"{'eventsource@' + node_reason if module_dir else 'cannot do this: ' + node_reason}."
    )
    print()
    print(render(rows, args.events))
    print()
    print(NOTES)
    print()
    print("Fault rows:")
    for plan, *_ in wanted:
        extra = f"; arkor-trio idle_timeout={IDLE_TIMEOUT[plan]} s" if plan in IDLE_TIMEOUT else ""
        print(f"- {plan}: {PLANS[plan].description}{extra}")
    print()
    print(
        f"arkor-trio, all cuts after progress (clean/mid-frame/reset/after-id, every row): "
        f"n={summary['progress_gaps']}, p50 {summary['p50_ms']:.2f} ms, "
        f"p95 {summary['p95_ms']:.2f} ms, p99 {summary['p99_ms']:.2f} ms, "
        f"max {summary['max_ms']:.2f} ms; lost {summary['lost']}, dup {summary['dup']}, "
        f"corrupt {summary['corrupt']} over {summary['rows']} rows."
    )
    write_json(args.json, {"summary": summary, "rows": rows})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--rows", default="", help=f"comma-separated subset of {[r[0] for r in ROWS]}"
    )
    parser.add_argument("--json", default=None)
    arguments = parser.parse_args()
    folder, why = ensure_eventsource()
    trio.run(main, arguments, folder, why)
