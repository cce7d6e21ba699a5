"""What recording metrics costs the hot path: throughput without and with the OpenTelemetry SDK.

Runs ``benchmarks/throughput.py`` in fresh processes, alternating a round without an SDK (the
API's no-op instruments: what every user gets) and a round with the SDK and an in-memory reader
(an application exporting metrics), ``--rounds`` times each, and compares the medians of the
readers that record: ``open_sse``, ``EventStream`` and ``Trainer``. A round without the SDK is
also the baseline for "no measurable change" against the same code before metrics existed.

Targets (issue 22): with an SDK, ``EventStream`` >= 0.95x of the same run without one.

Usage: ``python benchmarks/otel_cost.py [--events N] [--rounds R] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import table, write_json

HERE = Path(__file__).resolve().parent
READERS = (
    "arkor-trio open_sse (frames, no JSON)",
    "arkor-trio EventStream",
    "arkor-trio Trainer (no-op callbacks)",
)


def one_round(events: int, sdk: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="arkor-otel-") as tmp:
        out = Path(tmp) / "round.json"
        command = [sys.executable, str(HERE / "throughput.py"), "--events", str(events)]
        command += ["--rounds", "1", "--json", str(out), *(["--otel-sdk"] if sdk else [])]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        rates: dict[str, float] = json.loads(out.read_text())["events_per_s"]
        return rates


def main(args: argparse.Namespace) -> None:
    without: dict[str, list[float]] = {name: [] for name in READERS}
    with_sdk: dict[str, list[float]] = {name: [] for name in READERS}
    for _ in range(args.rounds):
        for sdk, into in ((False, without), (True, with_sdk)):
            rates = one_round(args.events, sdk)
            for name in READERS:
                into[name].append(rates[name])
    rows = []
    ratios = {}
    for name in READERS:
        off, on = statistics.median(without[name]), statistics.median(with_sdk[name])
        ratios[name] = on / off
        rows.append([name, f"{off:,.0f}", f"{on:,.0f}", f"{on / off:.2f}x"])
    print(f"{args.events:,} events, {args.rounds} alternating rounds per setting (median).")
    print()
    print(table(["reader", "events/s, no SDK", "events/s, SDK", "SDK / no SDK"], rows))
    print()
    print(f"Target: EventStream with an SDK >= 0.95x: {ratios['arkor-trio EventStream']:.2f}x.")
    write_json(args.json, {"ratios": ratios, "without": without, "with_sdk": with_sdk})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None)
    main(parser.parse_args())
