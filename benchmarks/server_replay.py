"""Replay throughput of the local backend's event stream.

Fills a store with one completed job of N events, starts the backend on it, and has one httpx
client read the whole replay over a real loopback socket: once counting frames in the raw bytes
(the server's cost) and once parsing every frame with ``arkor_trio.sse`` when it is available.
Prints a small table. Usage: ``python benchmarks/server_replay.py [N] [--repeat K]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from arkor_trio._version import USER_AGENT
from arkor_trio.server import Engine, open_local_backend
from arkor_trio.server._store import Store

SCOPE = {"orgSlug": "local", "projectSlug": "default"}
JOB = "job_bench"


def fill(data_dir: Path, events: int) -> float:
    """Write a completed job with ``events`` events; returns the seconds it took."""
    started = time.perf_counter()
    store = Store.in_dir(data_dir)
    store.create_job(job_id=JOB, org_id="org_local", project_id="proj_default", name=JOB, config={})
    payloads: list[dict[str, Any]] = [{"type": "training.started", "metadata": {}}]
    payloads += [
        {"type": "training.log", "step": s, "loss": 2.0 / s, "learningRate": 3e-3, "epoch": s / 1e3}
        for s in range(1, events - 1)
    ]
    payloads.append({"type": "training.completed", "artifacts": [{"pathname": "adapter.npz"}]})
    for i in range(0, len(payloads), 10_000):
        store.append_many(JOB, payloads[i : i + 10_000])
    store.close()
    return time.perf_counter() - started


def _no_engine() -> Engine:
    def unused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the benchmark runs no job")

    return Engine(
        name="none",
        supported_models=(),
        validate_config=unused,
        run_training=unused,
        load_weights=unused,
        base_model=unused,
        generate=unused,
        score_choices=unused,
        config_rejected=ValueError,
        training_failure=RuntimeError,
        inference_rejected=ValueError,
    )


async def replay(base_url: str, token: str, *, parse: bool) -> tuple[int, int, int, float]:
    """Read the whole stream; returns (frames, bytes, body chunks received, seconds)."""
    headers = {"Authorization": f"Bearer {token}", "X-Arkor-Client": USER_AGENT}
    decoder = None
    if parse:
        from arkor_trio.sse import SSEDecoder

        decoder = SSEDecoder()
    frames = size = chunks = 0
    async with httpx.AsyncClient(base_url=base_url, headers=headers, verify=False) as http:
        started = time.perf_counter()
        async with http.stream("GET", f"/v1/jobs/{JOB}/events/stream", params=SCOPE) as response:
            response.raise_for_status()
            async for chunk in response.aiter_raw():
                chunks += 1
                size += len(chunk)
                if decoder is None:
                    frames += chunk.count(b"\n\n")
                else:
                    frames += len(decoder.feed(chunk))
        elapsed = time.perf_counter() - started
    return frames, size, chunks, elapsed


async def main(events: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="arkor-bench-") as tmp:
        fill_seconds = fill(Path(tmp), events)
        print(f"filled {events:,} events in {fill_seconds:.2f} s (append_many, 10k per commit)")
        print()
        print(
            f"{'client':<22} {'frames':>9} {'MB':>7} {'chunks':>7} {'seconds':>8} {'events/s':>10}"
        )
        async with open_local_backend(tmp, engine=_no_engine()) as backend:
            for parse in (False, True):
                if parse:
                    try:
                        import arkor_trio.sse  # noqa: F401  # only to see if it exists
                    except ImportError:
                        print("(arkor_trio.sse not available: parsing row skipped)")
                        continue
                for _ in range(repeat):
                    frames, size, chunks, seconds = await replay(
                        backend.base_url, backend.token, parse=parse
                    )
                    label = "httpx + SSEDecoder" if parse else "httpx, count frames"
                    rate = (frames - 1) / seconds  # the end frame is not an event
                    print(
                        f"{label:<22} {frames:>9,} {size / 1e6:>7.1f} {chunks:>7,} "
                        f"{seconds:>8.3f} {rate:>10,.0f}"
                    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("events", nargs="?", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    trio.run(main, args.events, args.repeat)
