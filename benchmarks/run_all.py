"""Run every benchmark and write ``docs/benchmarks.md`` from this run.

Usage: ``.venv/bin/python benchmarks/run_all.py [--out docs/benchmarks.md]`` (what ``make bench``
runs). Each script runs in its own process; its tables are echoed as they come and copied into
the report with the exact command, the machine description, and a summary of the targets.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import HERE, ROOT, machine_info

#: (section title, script, arguments, what the section measures)
SECTIONS: list[tuple[str, str, list[str], str]] = [
    (
        "1. Reconnect gap under each fault",
        "reconnect.py",
        [],
        "Time from the proxy's cut to the next connection, and what each client delivered, for "
        "arkor-trio and three peers following the same backlog through the same seeded faults.",
    ),
    (
        "2. Cancel latency",
        "cancel_latency.py",
        [],
        "Leaving the cancel scope around `wait()` in each state, and `trainer.cancel()` until "
        "`on_cancelled` runs.",
    ),
    (
        "3. Throughput",
        "throughput.py",
        [],
        "Events per second from one backlog, per reader, as a ratio to a bare httpx-sse loop.",
    ),
    (
        "3b. Server replay (existing script)",
        "server_replay.py",
        ["100000", "--repeat", "2"],
        "The local backend's replay rate alone (its own fill and reader).",
    ),
    (
        "4. Memory and scale",
        "memory_scale.py",
        [],
        "RSS while following a 1M-event stream; 1,000 concurrent job streams in one process.",
    ),
    (
        "5. Dead connection detection",
        "dead_connection.py",
        [],
        "Stalled connections: how long each client takes to notice and reconnect.",
    ),
    (
        "6. asyncio loop stall and cancel latency (`arkor_trio.aio`)",
        "asyncio_stall.py",
        ["--steps", "100", "--samples", "100"],
        "An asyncio ticker's worst stalls while two real runs train under `aio`, and how long "
        "cancelling the awaiting asyncio task takes to give control back.",
    ),
    (
        "7. WebSocket feed: throughput and 1,000 running jobs",
        "websocket_feed.py",
        ["--events", "20000", "--jobs", "1000", "--rate", "1000", "--seconds", "15"],
        "One job's backlog over WebSocket vs SSE, and one process following 1,000 running jobs "
        "over one feed: latency from append to `async for`, loop lag, RSS per job.",
    ),
    (
        "7b. WebSocket feed: 10,000 running jobs at 10,000 events/s",
        "websocket_feed.py",
        ["--events", "20000", "--jobs", "10000", "--rate", "10000", "--seconds", "15", "--pin"],
        "The same with 10,000 jobs at 10,000 events/s in all, the backend process on one core "
        "and this client on the other (`--pin`).",
    ),
    (
        "7c. WebSocket reconnect gap",
        "websocket_reconnect.py",
        [],
        "Reconnect gaps and loss, WebSocket vs SSE, under the same seeded cuts.",
    ),
    (
        "7d. The restart herd: 1,000 followers across kill -9 and restart",
        "herd.py",
        ["--followers", "1000", "--runs", "3"],
        "1,000 followers (one feed, then SSE) of running jobs; the backend is killed with SIGKILL "
        "and restarted on the same port: time until every follower has its next event, the "
        "phases of the SSE herd, and the accept backlog (queue depth, kernel overflow counters).",
    ),
    (
        "7e. The restart herd with the default reconnect policy, restarted 5 s after the kill",
        "herd.py",
        ["--followers", "1000", "--transport", "sse", "--down", "5", "--default-policy"],
        "The same SSE herd following with `ReconnectPolicy()` (backoff up to 30 s), the backend "
        "started again 5 s after the kill: the streams resume together once one reaches it.",
    ),
    (
        "7f. Backend fan-out on one core: 10,000 subscribed jobs",
        "fanout.py",
        [],
        "The backend process pinned to one core, a minimal client (raw WebSocket, orjson) on "
        "the other, following 10,000 running jobs over one socket while the rate of appends "
        "rises: events/s written to the subscribers, latency, and the backend's CPU time per "
        "event (the load-independent figure).",
    ),
    (
        "7g. One feed, 100,000 jobs: memory, latency at 10,000 events/s, a reconnect",
        "feed_scale.py",
        ["--jobs", "100000", "--history", "3", "--rate", "10000", "--seconds", "10", "--one-task"],
        "Backend and client pinned to their own CPU; one feed follows 100,000 running jobs "
        "from one task (`feed.subscribe_many`): RSS per job once their history is replayed, "
        "event latency at 10,000 events/s, and a reset socket until every job delivered its "
        "next event; then the bytes per job of the feed's state, of a consumer task, and both "
        "ways in all: a task per job (`feed.subscribe`) or one task (tracemalloc).",
    ),
    (
        "8. Cursor commit cost",
        "cursor_commit.py",
        [],
        "What one per-event commit of a cursor store costs (the file store under its lock).",
    ),
    (
        "9. Metrics cost",
        "otel_cost.py",
        ["--events", "30000", "--rounds", "3"],
        "Throughput of the readers that record metrics, without an OpenTelemetry SDK (the "
        "API's no-ops) and with the SDK and an in-memory reader, in alternating processes.",
    ),
    (
        "10. A fleet on Redis: commit cost per event, takeover after kill -9",
        "fleet.py",
        ["--n", "2000", "--kills", "20", "--ttl", "1.0"],
        "Its own redis-server on loopback: the cost of one fenced commit, a load and a "
        "heartbeat; commits of many jobs of one replica with and without pipelining, side by "
        "side; how long a lease takes to be taken over after its holder is killed.",
    ),
    (
        "10b. A fleet under load: 1,000 jobs, 3 replicas, 1,000 events/s",
        "fleet_load.py",
        ["--jobs", "1000", "--replicas", "3", "--rate", "1000", "--seconds", "20"],
        "Three replica processes (a Fleet each, RedisCursorStore with pipelined commits) follow "
        "1,000 running jobs of the local backend (its own process) while it appends 1,000 "
        "events/s in all: dispatch lag from an event's append to its callback starting.",
    ),
]
#: Scripts that print tables only (no --json).
NO_JSON = frozenset(
    {
        "server_replay.py",
        "cursor_commit.py",
        "websocket_reconnect.py",
    }
)
BUDGET_S = 1200


def run(script: str, arguments: list[str], json_path: Path | None) -> tuple[str, float, int]:
    """Run one script, echoing its output; returns (stdout, seconds, exit code)."""
    command = [sys.executable, str(HERE / script), *arguments]
    if json_path is not None:
        command += ["--json", str(json_path)]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    code = process.wait()
    return "".join(lines), time.perf_counter() - started, code


def load(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "met" if ok else "**missed**"


def targets(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    """One row per target: what, target, measured, met."""
    rows: list[list[str]] = []

    def add(what: str, target: str, value: float | None, fmt: str, ok: bool | None) -> None:
        shown = "not measured" if value is None or math.isnan(value) else fmt.format(value)
        rows.append([what, target, shown, verdict(None if shown == "not measured" else ok)])

    summary = results.get("reconnect.py", {}).get("summary", {})
    p50, p99 = summary.get("p50_ms"), summary.get("p99_ms")
    add("Reconnect gap after progress, p50", "<= 5 ms", p50, "{:.2f} ms", (p50 or 0) <= 5)
    add("Reconnect gap after progress, p99", "<= 50 ms", p99, "{:.2f} ms", (p99 or 0) <= 50)
    bad = None
    if summary:
        bad = summary["lost"] + summary["dup"] + summary["corrupt"]
    add("arkor-trio lost + duplicated + corrupted, all rows", "0", bad, "{:.0f}", bad == 0)
    worst = results.get("cancel_latency.py", {}).get("local_worst_p99_ms")
    add("Local cancel p99 (worst state)", "<= 1 ms", worst, "{:.3f} ms", (worst or 0) <= 1)
    put = results.get("throughput.py", {})
    channel = put.get("channel_ratio")
    replay = put.get("server_replay")
    add("open_sse vs bare httpx-sse (no JSON either)", ">= 0.9x", channel, "{:.2f}x",
        (channel or 0) >= 0.9)  # fmt: skip
    stream_json, trainer_json = put.get("stream_ratio_json"), put.get("trainer_ratio_json")
    add("EventStream vs httpx-sse + json.loads", ">= 1.0x", stream_json, "{:.2f}x",
        (stream_json or 0) >= 1.0)  # fmt: skip
    add("Trainer vs httpx-sse + json.loads", ">= 0.8x", trainer_json, "{:.2f}x",
        (trainer_json or 0) >= 0.8)  # fmt: skip
    add("Server replay", ">= 50,000/s", replay, "{:,.0f}/s", (replay or 0) >= 50_000)
    aio = results.get("asyncio_stall.py", {})
    stall, cancel = aio.get("stall_p99_ms"), aio.get("cancel_p99_ms")
    add("asyncio loop stall p99, two runs training", "< 50 ms", stall, "{:.1f} ms",
        (stall or 0) < 50)  # fmt: skip
    add("Cancel from asyncio until control is back, p99", "< 10 ms", cancel, "{:.2f} ms",
        (cancel or 0) < 10)  # fmt: skip
    otel = results.get("otel_cost.py", {}).get("ratios", {}).get("arkor-trio EventStream")
    add("EventStream with an OpenTelemetry SDK vs without", ">= 0.95x", otel, "{:.2f}x",
        (otel or 0) >= 0.95)  # fmt: skip
    fanout = results.get("fanout.py", {})
    sustained = fanout.get("sustained")
    add("Backend fan-out, one core: events/s written to 10,000 subscribed jobs", ">= 20,000",
        sustained, "{:,.0f}/s", (sustained or 0) >= 20_000)  # fmt: skip
    ten_k, hundred_k = results.get("7b", {}), results.get("7g", {})
    followed = hundred_k.get("jobs_followed")
    add("Jobs followed by one process over one feed (nothing lost)", ">= 100,000", followed,
        "{:,.0f}", (followed or 0) >= 100_000)  # fmt: skip
    per_job = hundred_k.get("rss_per_job_kib")
    add("RSS growth per followed job, idle after replay (100,000 jobs)", "<= 2 KiB", per_job,
        "{:.2f} KiB", (per_job or 0) <= 2)  # fmt: skip
    p99 = ten_k.get("latency_p99_ms")
    add("Event latency p99, 10,000 events/s, 10,000 jobs", "<= 100 ms", p99, "{:.1f} ms",
        (p99 or 0) <= 100 and bool(ten_k.get("delivered_all")))  # fmt: skip
    p99 = hundred_k.get("latency_p99_ms")
    add("Event latency p99, 10,000 events/s, 100,000 jobs", "<= 250 ms", p99, "{:.1f} ms",
        (p99 or 0) <= 250)  # fmt: skip
    ratio = ten_k.get("ws_sse_ratio")  # pinned: backend and client on their own cores
    add("WebSocket vs SSE, one job, events/s (section 7b)", ">= 1.0x", ratio, "{:.2f}x",
        (ratio or 0) >= 1.0)  # fmt: skip
    again = hundred_k.get("reconnect_all_s")
    add("Feed reconnect with 100,000 subscriptions, until every job's next event", "<= 5 s",
        again, "{:.2f} s", (again or 0) <= 5)  # fmt: skip
    herd = results.get("herd.py", {}).get("sse", {})
    resumed = herd.get("all_resumed_ms")
    add("SSE herd: 1,000 followers resumed after kill -9 + restart (median)", "<= 2 s",
        None if resumed is None else resumed / 1e3, "{:.2f} s",
        (resumed or 0) <= 2000)  # fmt: skip
    growth = results.get("memory_scale.py", {}).get("million", {}).get("growth")
    add("RSS growth over a 1M-event stream", "< 10 MB", growth, "{:+.1f} MiB",
        growth is not None and growth * 1.048576 < 10)  # fmt: skip
    fleet = results.get("fleet.py", {})
    commit, amortised = fleet.get("commit_p99_ms"), fleet.get("amortised_ms")
    add("Redis commit per call p99 (one job, in a row)", "<= 0.5 ms", commit, "{:.3f} ms",
        (commit or 0) <= 0.5)  # fmt: skip
    add("Redis commit amortised, many jobs, pipelined", "<= 0.5 ms", amortised, "{:.3f} ms",
        (amortised or 0) <= 0.5)  # fmt: skip
    load = results.get("fleet_load.py", {})
    lag = load.get("lag_p99_ms")
    add("Fleet dispatch lag p99, 1,000 jobs / 3 replicas / 1,000 events/s", "<= 200 ms", lag,
        "{:.1f} ms", (lag or 0) <= 200)  # fmt: skip
    return rows


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(out: Path) -> int:
    started = time.perf_counter()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_before = os.getloadavg()
    outputs: list[tuple[str, str, str, str, float, int]] = []
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="arkor-bench-json-") as tmp:
        for title, script, arguments, about in SECTIONS:
            print(f"\n=== {title}: {script} {' '.join(arguments)}", flush=True)
            json_path = None if script in NO_JSON else Path(tmp) / f"{len(outputs)}-{script}.json"
            text, seconds, code = run(script, arguments, json_path)
            print(f"=== {script}: {seconds:.0f} s, exit {code}", flush=True)
            command = shlex.join([".venv/bin/python", f"benchmarks/{script}", *arguments])
            outputs.append((title, command, about, text, seconds, code))
            if json_path is not None:  # a script run twice: its first section's figures
                figures = load(json_path)
                results.setdefault(script, figures)
                results[title.split()[0].rstrip(".")] = figures  # and by section: "7b"
    total = time.perf_counter() - started
    load_after = os.getloadavg()
    info = machine_info()  # after the runs: reconnect.py installs the npm peer on first use
    parts = [
        "# Benchmarks",
        "",
        f"Generated on {stamp} by `.venv/bin/python benchmarks/run_all.py` (what `make bench` "
        f"runs), in {total:.0f} s (budget {BUDGET_S} s). This file is written by the run; do not "
        "edit it by hand. Each script also runs alone: the command is given in each section.",
        "",
        "## Machine",
        "",
        *[f"- {label}: {value}" for label, value in info.items()],
        f"- Load average (1/5/15 min) before the run: "
        f"{' / '.join(f'{x:.2f}' for x in load_before)}; after: "
        f"{' / '.join(f'{x:.2f}' for x in load_after)}",
        "",
        "## Targets",
        "",
        markdown_table(["target", "wanted", "measured", "verdict"], targets(results)),
        "",
    ]
    for title, command, about, text, seconds, code in outputs:
        status = "" if code == 0 else f" **(exit code {code}: the run failed; see above)**"
        parts += [
            f"## {title}",
            "",
            f"{about} Command: `{command}` ({seconds:.0f} s){status}.",
            "",
            text.strip(),
            "",
        ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts))
    print(f"\nwrote {out} ({total:.0f} s in all)")
    return 0 if all(code == 0 for *_, code in outputs) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    sys.exit(main(parser.parse_args().out))
