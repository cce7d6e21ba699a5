"""Cancel latency: leaving the scope around ``wait()`` in each state, and ``trainer.cancel()``.

Local cancel: a task runs ``with scope: await trainer.wait()``; once the trainer is in the state
wanted and every task is blocked, the bench stamps ``perf_counter``, calls ``scope.cancel()``
and the waiting task stamps again right after its ``with`` block. States:

* connecting: the request is sent, the response head never comes (a raw stub server);
* reading: the stream is open and idle (a job parked after 3 logs), the callback returned;
* backing off: the stub answered 503 with ``Retry-After: 30``, the stream sleeps;
* inside a callback: ``on_log`` is awaiting ``trio.sleep_forever()``.

The local backend runs in its own process, and the stub does no work when a client goes away,
so the time measured is the client's own unwinding.

Backend cancel: a job parked after 3 logs; ``trainer.cancel()`` is stamped until ``on_cancelled``
runs (HTTP cancel -> runner stop flag -> ``training.cancelled`` appended -> streamed ->
dispatched). The benchmark engine reacts to the stop flag at once; the NumPy engine checks it
between steps, which adds up to one step.

Usage: ``python benchmarks/cancel_latency.py [--samples N] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import trio
import trio.testing
from _backend import BENCH_MODEL
from _common import SCOPE, ms, open_backend_process, percentile, table, write_json

from arkor_trio import ArkorClient, Callbacks, HuggingfaceDataset, Trainer, create_trainer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

STATES = ("connecting", "reading", "backing off", "inside a callback")


def new_trainer(client: ArkorClient, callbacks: Callbacks | None = None) -> Trainer:
    return create_trainer(
        name="cancel-bench",
        model=BENCH_MODEL,
        dataset=HuggingfaceDataset("bench/none"),
        callbacks=callbacks,
        client=client,
    )


async def one_sample(
    trainer: Trainer, ready: Callable[[], Awaitable[None]], nursery: trio.Nursery
) -> float:
    """Seconds from ``scope.cancel()`` to control returning after the ``with`` block."""
    scope = trio.CancelScope()
    finished = trio.Event()
    ended = 0.0

    async def waiter() -> None:
        nonlocal ended
        with scope:
            await trainer.wait()
            raise AssertionError("wait() returned: the job was not parked")
        ended = time.perf_counter()
        finished.set()

    nursery.start_soon(waiter)
    await ready()
    await trio.testing.wait_all_tasks_blocked()
    started = time.perf_counter()
    scope.cancel()
    await finished.wait()
    return ended - started


class StuckServer:
    """A raw HTTP server: answers job reads with a canned body, and for the event stream either
    never answers (``connecting``) or answers 503 with ``Retry-After: 30`` (``backing off``).

    It does nothing after answering, so a client's disconnect costs this process no work.
    """

    def __init__(self, job_body: bytes) -> None:
        self.job_body = job_body
        self.mode = "connecting"
        self.streams = 0
        self.changed = trio.Event()

    async def handle(self, stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            head += chunk
        if b"/events/stream" not in head.split(b"\r\n", 1)[0]:
            await stream.send_all(response(200, self.job_body))
            await trio.sleep_forever()
        if self.mode == "backing off":
            await stream.send_all(response(503, b'{"error": "busy"}', "Retry-After: 30\r\n"))
        self.streams += 1
        self.changed.set()
        self.changed = trio.Event()
        await trio.sleep_forever()

    async def wait_streams(self, count: int) -> None:
        while self.streams < count:
            await self.changed.wait()


def response(status: int, body: bytes, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode() + body


async def local_cancel(
    direct: ArkorClient, stuck_client: ArkorClient, stuck: StuckServer, job_id: str, samples: int
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {state: [] for state in STATES}
    async with trio.open_nursery() as nursery:
        for state in STATES:
            for _ in range(samples):
                logged = trio.Event()

                async def on_log(ctx: Any, logged: trio.Event = logged, state: str = state) -> None:
                    if ctx.step == 3:
                        logged.set()
                        if state == "inside a callback":
                            await trio.sleep_forever()

                client = direct
                ready: Callable[[], Awaitable[None]] = logged.wait
                if state in ("connecting", "backing off"):
                    client, stuck.mode = stuck_client, state

                    async def ready(count: int = stuck.streams + 1) -> None:
                        await stuck.wait_streams(count)

                trainer = Trainer.attach(job_id, client=client, callbacks=Callbacks(on_log=on_log))
                out[state].append(await one_sample(trainer, ready, nursery))
        nursery.cancel_scope.cancel()
    return out


async def backend_cancel(client: ArkorClient, samples: int) -> tuple[list[float], list[float]]:
    """Per job: (``cancel()`` round trip, ``cancel()`` -> ``on_cancelled``) in seconds."""
    round_trips, dispatched = [], []
    for _ in range(samples):
        running, cancelled = trio.Event(), trio.Event()
        stamp = 0.0

        def on_log(ctx: Any, running: trio.Event = running) -> None:
            if ctx.step == 3:
                running.set()

        def on_cancelled(ctx: Any, cancelled: trio.Event = cancelled) -> None:
            nonlocal stamp
            stamp = time.perf_counter()
            cancelled.set()

        trainer = new_trainer(client, Callbacks(on_log=on_log, on_cancelled=on_cancelled))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trainer.wait)
            await running.wait()
            await trio.testing.wait_all_tasks_blocked()
            started = time.perf_counter()
            await trainer.cancel()
            round_trips.append(time.perf_counter() - started)
            await cancelled.wait()
            dispatched.append(stamp - started)
    return round_trips, dispatched


def row(label: str, values: list[float]) -> list[object]:
    return [
        label, len(values), ms(percentile(values, 50)), ms(percentile(values, 95)),
        ms(percentile(values, 99)), ms(max(values)),
    ]  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="arkor-bench-") as tmp:
        async with (
            open_backend_process(Path(tmp), max_jobs=2) as backend,
            backend.client() as direct,
            trio.open_nursery() as nursery,
        ):
            parked = new_trainer(direct)
            job_id = await parked.start()
            async with httpx.AsyncClient(headers=backend.headers()) as http:
                url = f"{backend.base_url}/v1/jobs/{job_id}"
                stuck = StuckServer((await http.get(url, params=SCOPE)).content)
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, stuck.handle, 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            async with backend.client(base_url=f"http://127.0.0.1:{port}") as stuck_client:
                local = await local_cancel(direct, stuck_client, stuck, job_id, args.samples)
            await parked.cancel()
            round_trips, dispatched = await backend_cancel(direct, args.backend_samples)
            nursery.cancel_scope.cancel()
    headers = ["what", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"]
    print(
        "Local cancel: `scope.cancel()` -> control back after `with scope: await wait()`, "
        f"{args.samples} times per state (a fresh `Trainer.attach` each time)."
    )
    print()
    print(table(headers, [row(state, local[state]) for state in STATES]))
    print()
    print(
        "Backend cancel on the local backend (own process): HTTP cancel -> runner -> "
        "training.cancelled appended -> streamed -> on_cancelled. The benchmark engine stops "
        "at once; the NumPy engine checks its stop flag between steps (add up to one step)."
    )
    print()
    print(
        table(
            headers,
            [
                row("trainer.cancel() returns", round_trips),
                row("trainer.cancel() -> on_cancelled runs", dispatched),
            ],
        )
    )
    worst = max(percentile(local[state], 99) for state in STATES)
    print()
    print(f"Worst local-cancel p99 over the four states: {worst * 1000:.3f} ms (target <= 1 ms)")
    write_json(
        args.json,
        {
            "local_p99_ms": {state: percentile(local[state], 99) * 1000 for state in STATES},
            "local_worst_p99_ms": worst * 1000,
            "backend_cancel_p50_ms": percentile(dispatched, 50) * 1000,
            "backend_cancel_p99_ms": percentile(dispatched, 99) * 1000,
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="per local state")
    parser.add_argument("--backend-samples", type=int, default=100)
    parser.add_argument("--json", default=None)
    trio.run(main, parser.parse_args())
