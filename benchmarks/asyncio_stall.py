"""The asyncio loop under ``arkor_trio.aio``: its stalls while two runs train, and cancel latency.

An asyncio program (``asyncio.run``) holds the trio guest run. The local backend, with the real
NumPy engine, runs in its own process (two jobs at once). A ticker task in the asyncio loop
sleeps ``--tick`` seconds again and again and records how late each wake-up is (the stall):

* idle: the guest run is started, nothing else runs;
* two runs: two ``aio.run(trainer.run)`` with callbacks on every log (``logging_steps=1``),
  plus one ``aio.iterate(client.events(...))`` consumer following the first job.

Cancel latency: an asyncio task awaits ``aio.run(Trainer.attach(job).wait)`` on a job that is
training; once its first callback ran, the bench stamps ``perf_counter``, calls ``task.cancel()``
and stamps again when ``await task`` raised ``CancelledError`` (trio cancelled, unwound, control
back in asyncio). Also measured: the same with a bare ``trio.sleep_forever()`` call, and
``aio.run(trainer.run)``, whose cancel also sends the backend cancel (an HTTP round trip).

Usage: ``python benchmarks/asyncio_stall.py [--steps N] [--samples N] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
import trio.testing
from _common import ms, open_backend_process, percentile, table, write_json

from arkor_trio import ArkorClient, BlobDataset, Trainer, TrainingLog, aio, create_trainer

MODEL = "unsloth/gemma-4-E4B-it"


class Ticker:
    """Records how late each ``asyncio.sleep(tick)`` wakes up while ``recording`` is on."""

    def __init__(self, tick: float) -> None:
        self.tick = tick
        self.samples: dict[str, list[float]] = {}
        self.label: str | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.tick)
            if self.label is not None:
                self.samples.setdefault(self.label, []).append(loop.time() - before - self.tick)


def new_trainer(client: ArkorClient, name: str, steps: int, callbacks: Any = None) -> Trainer:
    return create_trainer(
        name=name,
        model=MODEL,
        dataset=BlobDataset.demo(),
        max_steps=steps,
        logging_steps=1,
        callbacks=callbacks,
        client=client,
    )


async def two_runs(client: ArkorClient, steps: int) -> dict[str, int]:
    logs = {"a": 0, "b": 0, "relayed": 0}

    def counter(key: str) -> dict[str, Any]:
        def on_log(ctx: Any) -> None:
            logs[key] += 1

        return {"on_log": on_log}

    first = new_trainer(client, "stall-a", steps, counter("a"))
    second = new_trainer(client, "stall-b", steps, counter("b"))
    job_id = await aio.run(first.start)

    async def relay() -> None:
        async with aio.iterate(client.events(job_id)) as events:
            async for event in events:
                if isinstance(event, TrainingLog):
                    logs["relayed"] += 1

    await asyncio.gather(aio.run(first.run), aio.run(second.run), relay())
    return logs


async def cancel_samples(make_call: Any, samples: int) -> list[float]:
    """Seconds from ``task.cancel()`` to ``await task`` raising, ``samples`` times."""
    out: list[float] = []
    for _ in range(samples):
        ready = asyncio.Event()
        task = asyncio.create_task(make_call(ready))
        await ready.wait()
        await aio.run(trio.testing.wait_all_tasks_blocked)
        started = time.perf_counter()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            out.append(time.perf_counter() - started)
        else:  # pragma: no cover - the call ended on its own
            raise AssertionError("the parked call returned")
    return out


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    ticker = Ticker(args.tick)
    ticking = asyncio.create_task(ticker.run())
    with tempfile.TemporaryDirectory(prefix="arkor-bench-") as tmp:
        backend_cm = open_backend_process(Path(tmp), max_jobs=2, engine="numpy")
        async with aio.context(backend_cm) as backend, aio.context(backend.client()) as client:
            await aio.run(client.list_jobs)  # the guest run is up, a connection is pooled
            ticker.label = "idle (guest run started)"
            await asyncio.sleep(args.idle)
            ticker.label = "two runs training"
            began = time.perf_counter()
            logs = await two_runs(client, args.steps)
            trained = time.perf_counter() - began
            ticker.label = None
            ticking.cancel()  # the cancel samples run on a quiet loop

            async def bare(ready: asyncio.Event) -> None:
                async def parked() -> None:
                    ready.set()
                    await trio.sleep_forever()

                await aio.run(parked)

            long_run = new_trainer(client, "stall-long", 1_000_000)
            long_id = await aio.run(long_run.start)

            async def follow(ready: asyncio.Event) -> None:
                trainer = Trainer.attach(
                    long_id, client=client, callbacks={"on_log": ready_cb(ready)}
                )
                await aio.run(trainer.wait)

            async def run_and_cancel_job(ready: asyncio.Event) -> None:
                trainer = new_trainer(
                    client, "stall-cancel", 1_000_000, {"on_log": ready_cb(ready)}
                )
                await aio.run(trainer.run)

            latencies = {
                "aio.run(trio.sleep_forever)": await cancel_samples(bare, args.samples),
                "aio.run(trainer.wait) on a training job": await cancel_samples(
                    follow, args.samples
                ),
            }
            await aio.run(long_run.cancel)
            latencies["aio.run(trainer.run), incl. backend cancel"] = await cancel_samples(
                run_and_cancel_job, max(3, args.samples // 10)
            )
    return {"stalls": ticker.samples, "latencies": latencies, "logs": logs, "trained": trained}


def ready_cb(ready: asyncio.Event) -> Any:
    def on_log(ctx: Any) -> None:
        ready.set()  # trio callbacks run on the loop's thread: asyncio objects are fine

    return on_log


def row(label: str, values: list[float]) -> list[object]:
    return [
        label, len(values), ms(percentile(values, 50)), ms(percentile(values, 99)),
        ms(max(values)),
    ]  # fmt: skip


def main(args: argparse.Namespace) -> None:
    result = asyncio.run(measure(args))
    stalls, latencies = result["stalls"], result["latencies"]
    headers = ["what", "n", "p50 ms", "p99 ms", "max ms"]
    print(
        f"asyncio loop stall: a ticker sleeping {args.tick * 1000:g} ms, lateness of each wake-up; "
        f"two runs of {args.steps} steps trained in {result['trained']:.1f} s "
        f"(callbacks saw {result['logs']['a']} + {result['logs']['b']} logs, "
        f"aio.iterate relayed {result['logs']['relayed']})."
    )
    print()
    print(table(headers, [row(label, values) for label, values in stalls.items()]))
    print()
    print("Cancel latency from asyncio: task.cancel() -> await task raises CancelledError.")
    print()
    print(table(headers, [row(label, values) for label, values in latencies.items()]))
    busy = stalls["two runs training"]
    cancel = latencies["aio.run(trainer.wait) on a training job"]
    print()
    print(
        f"Loop stall p99 while two runs train: {percentile(busy, 99) * 1000:.2f} ms (target < 50); "
        f"cancel latency p99: {percentile(cancel, 99) * 1000:.2f} ms (target < 10)"
    )
    write_json(
        args.json,
        {
            "stall_p50_ms": percentile(busy, 50) * 1000,
            "stall_p99_ms": percentile(busy, 99) * 1000,
            "stall_max_ms": max(busy) * 1000,
            "cancel_p50_ms": percentile(cancel, 50) * 1000,
            "cancel_p99_ms": percentile(cancel, 99) * 1000,
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="steps of each of the two runs")
    parser.add_argument("--samples", type=int, default=100, help="cancel samples per kind")
    parser.add_argument("--tick", type=float, default=0.002, help="ticker period, seconds")
    parser.add_argument("--idle", type=float, default=1.0, help="idle baseline, seconds")
    parser.add_argument("--json", default=None)
    main(parser.parse_args())
