"""``arkor_trio.aio``: trio code from asyncio through one trio guest run per loop.

The asyncio programs here run in the test's own (main) thread with ``asyncio.run`` or an
``asyncio.Runner``, exactly as a service or a notebook kernel would; the local backend they talk
to runs in a trio run of its own in another thread (fixture ``backend``), like a remote server.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import gc
import io
import signal
import sys
import threading
import time
import traceback
import types
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from arkor_trio import (
    BlobDataset,
    Callbacks,
    Trainer,
    TrainingCompleted,
    TrainingLog,
    TrainingStarted,
    aio,
    create_trainer,
)
from arkor_trio.cli._progress import ProgressDisplay, wants_live
from arkor_trio.server import LocalBackend, open_local_backend

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

MODEL = "unsloth/gemma-4-E4B-it"


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalBackend]:
    """A local backend in its own thread and trio run, for the asyncio programs of a test."""
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        try:
            async with open_local_backend(tmp_path / "backend", max_concurrent_jobs=2) as b:
                state["backend"], state["stop"] = b, trio.Event()
                state["token"] = trio.lowlevel.current_trio_token()
                ready.set()
                await state["stop"].wait()
        finally:
            ready.set()

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    assert ready.wait(60)
    assert "backend" in state, "the backend did not start"
    yield state["backend"]
    trio.from_thread.run_sync(state["stop"].set, trio_token=state["token"])
    thread.join(60)
    assert not thread.is_alive()


def trainer_for(backend: LocalBackend, name: str, max_steps: int, **callbacks: Any) -> Trainer:
    return create_trainer(
        name=name,
        model=MODEL,
        dataset=BlobDataset.demo(),
        max_steps=max_steps,
        callbacks=Callbacks(**callbacks),
        client=backend.client(),
    )


def assert_no_trio_left() -> None:
    """No trio run in this thread and no thread blocked in a guest run's I/O wait."""
    with pytest.raises(RuntimeError):
        trio.lowlevel.current_trio_token()
    for ident, frame in sys._current_frames().items():
        if ident == threading.get_ident():
            continue
        stack = traceback.extract_stack(frame)
        in_worker = any(f.filename.endswith("_thread_cache.py") for f in stack)
        assert not (in_worker and any(f.name == "get_events" for f in stack)), stack


# --- aio.run: results and exceptions -----------------------------------------------------------


async def add(a: int, b: int) -> int:
    await trio.sleep(0)
    return a + b


def test_run_returns_the_result_and_shuts_down_with_the_loop(backend: LocalBackend) -> None:
    async def main() -> tuple[int, list[Any]]:
        assert not aio.is_running()
        total = await aio.run(add, 2, 3)
        assert aio.is_running()
        async with aio.context(backend.client()) as client:  # entered and left in trio
            jobs = await aio.run(client.list_jobs)
        return total, jobs

    assert asyncio.run(main()) == (5, [])
    assert_no_trio_left()


def test_exceptions_arrive_as_themselves() -> None:
    error = ValueError("the very object")

    async def raises() -> None:
        await trio.sleep(0)
        raise error

    async def child_raises() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(raises)
            nursery.start_soon(trio.sleep_forever)

    async def fails(exc: Exception) -> None:
        raise exc  # no checkpoint before: both children fail, neither is cancelled first

    async def two_fail() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fails, KeyError("a"))
            nursery.start_soon(fails, OSError("b"))

    async def main() -> None:
        with pytest.raises(ValueError) as info:
            await aio.run(raises)
        assert info.value is error
        with pytest.raises(ValueError) as info:  # a nursery's group of one: unwrapped
            await aio.run(child_raises)
        assert info.value is error
        with pytest.raises(ExceptionGroup) as group:  # two real errors stay a group
            await aio.run(two_fail)
        assert sorted(type(e).__name__ for e in group.value.exceptions) == ["KeyError", "OSError"]
        assert await aio.run(add, 1, 1) == 2  # the guest run is unharmed

    asyncio.run(main())
    assert_no_trio_left()


def test_many_concurrent_calls_run_concurrently() -> None:
    count = 300
    arrived = 0

    async def meet(barrier: trio.Event, i: int) -> int:
        nonlocal arrived
        arrived += 1
        if arrived == count:
            barrier.set()
        await barrier.wait()  # sequential calls would never get here
        return i

    async def main() -> list[int]:
        barrier = await aio.run(make_event)
        async with asyncio.timeout(30):
            return await asyncio.gather(*(aio.run(meet, barrier, i) for i in range(count)))

    assert asyncio.run(main()) == list(range(count))


async def make_event() -> trio.Event:
    await trio.lowlevel.checkpoint()
    return trio.Event()


# --- cancellation --------------------------------------------------------------------------------


def test_cancelling_the_asyncio_task_cancels_the_trio_call_at_once() -> None:
    seen: list[str] = []

    async def parked(started: asyncio.Event) -> None:
        started.set()  # same thread: trio code may poke asyncio objects
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            seen.append("cancelled")
            raise
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(0.01)  # cleanup that takes a while is awaited, not dropped
            seen.append("cleaned up")

    async def main() -> float:
        started = asyncio.Event()
        task = asyncio.create_task(aio.run(parked, started))
        await started.wait()
        begin = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert seen == ["cancelled", "cleaned up"]
        return time.perf_counter() - begin

    elapsed = asyncio.run(main())
    assert elapsed < 2.0  # ~10 ms of cleanup plus a few hops; a stuck cancel would hang


def test_asyncio_timeout_around_aio_run_becomes_timeout_error() -> None:
    async def main() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await aio.run(trio.sleep_forever)
        assert await aio.run(add, 1, 2) == 3

    asyncio.run(main())


def test_cancel_reaches_the_backend_through_trainer_run(backend: LocalBackend) -> None:
    async def main() -> tuple[str, str]:
        running = asyncio.Event()

        def on_log(ctx: Any) -> None:
            if ctx.step >= 2:
                running.set()

        trainer = trainer_for(backend, "aio-cancel", 100_000, on_log=on_log)
        task = asyncio.create_task(aio.run(trainer.run))
        async with asyncio.timeout(60):
            await running.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await aio.run(trainer.client.aclose)
        assert trainer.job_id is not None
        async with asyncio.timeout(60), aio.context(backend.client()) as client:
            follower = Trainer.attach(trainer.job_id, client=client)
            result = await aio.run(follower.wait)
        return trainer.job_id, result.job.status

    job_id, status = asyncio.run(main())
    assert job_id.startswith("job")
    assert status == "cancelled"


def test_trio_side_cancellation_reaches_the_awaiting_task() -> None:
    async def main() -> None:
        started = asyncio.Event()

        async def parked() -> None:
            started.set()
            await trio.sleep_forever()

        task = asyncio.create_task(aio.run(parked))
        await started.wait()
        await aio.aclose()  # the trio run is cancelled from its own side
        assert task.done()
        with pytest.raises(asyncio.CancelledError):
            task.result()
        assert task.cancelling() == 0  # nobody cancelled the asyncio task itself
        assert not aio.is_running()
        assert await aio.run(add, 2, 2) == 4  # a later call starts a new guest run

    asyncio.run(main())
    assert_no_trio_left()


# --- loop lifetime -------------------------------------------------------------------------------


def test_shutdown_at_loop_close_cancels_what_is_in_flight(backend: LocalBackend) -> None:
    unwound: list[str] = []
    problems: list[dict[str, Any]] = []

    async def parked(started: asyncio.Event) -> None:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            unwound.append("call")

    async def held_by_the_run() -> None:
        # Not awaited by any asyncio task: only the guest run's shutdown can end it.
        try:
            await trio.sleep_forever()
        finally:
            unwound.append("trio task")

    async def spawn_trio_task() -> None:
        trio.lowlevel.spawn_system_task(held_by_the_run)
        await trio.lowlevel.checkpoint()

    async def uses_a_client(ready: asyncio.Event) -> None:
        async with aio.context(backend.client()) as client:
            await aio.run(client.list_jobs)  # a pooled keep-alive connection stays open
            ready.set()
            await asyncio.Event().wait()  # until asyncio.run cancels this task

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: problems.append(ctx))
        ready = asyncio.Event()
        asyncio.create_task(uses_a_client(ready))  # noqa: RUF006  # left running on purpose
        await ready.wait()
        await aio.run(spawn_trio_task)
        started = asyncio.Event()
        asyncio.create_task(aio.run(parked, started))  # noqa: RUF006  # left running on purpose
        await started.wait()

    asyncio.run(main())
    assert sorted(unwound) == ["call", "trio task"]
    assert problems == []
    assert_no_trio_left()


def test_two_loops_one_after_the_other(backend: LocalBackend) -> None:
    async def main(name: str) -> tuple[str, int]:
        async with asyncio.timeout(60):
            trainer = trainer_for(backend, name, 5)
            result = await aio.run(trainer.run)
            jobs = await aio.run(trainer.client.list_jobs)
            await aio.run(trainer.client.aclose)
        return result.job.status, len(jobs)

    assert asyncio.run(main("loop-one")) == ("completed", 1)
    assert_no_trio_left()
    assert asyncio.run(main("loop-two")) == ("completed", 2)
    assert_no_trio_left()


def test_loops_in_two_threads_each_get_their_own_guest_run() -> None:
    results: list[int] = []

    def in_thread(n: int) -> None:
        results.append(asyncio.run(aio.run(add, n, n)))

    threads = [threading.Thread(target=in_thread, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [2, 4]


async def test_aio_inside_a_trio_run_says_so() -> None:
    # An asyncio loop run synchronously inside a trio task: that thread already has a trio run.
    async def main() -> None:
        with pytest.raises(aio.GuestRunError, match="another trio run"):
            await aio.run(add, 1, 2)

    asyncio.run(main())
    await trio.lowlevel.checkpoint()


# --- aio.iterate ---------------------------------------------------------------------------------


def test_iterate_follows_a_job_stream(backend: LocalBackend) -> None:
    async def main() -> list[Any]:
        async with asyncio.timeout(60), aio.context(backend.client()) as client:
            trainer = trainer_for(backend, "aio-iterate", 12)
            job_id = await aio.run(trainer.start)
            async with aio.iterate(client.events(job_id)) as events:
                seen = [event async for event in events]
            await aio.run(trainer.client.aclose)
            return seen

    seen = asyncio.run(main())
    assert isinstance(seen[0], TrainingStarted)
    assert [e.step for e in seen if isinstance(e, TrainingLog)] == list(range(1, 13))
    assert isinstance(seen[-1], TrainingCompleted)
    assert_no_trio_left()


def test_iterate_reads_only_what_is_asked_for() -> None:
    produced: list[int] = []
    closed: list[str] = []

    async def numbers() -> AsyncIterator[int]:
        try:
            for i in range(1_000_000):
                produced.append(i)
                yield i
        finally:
            closed.append("source")

    async def main() -> list[int]:
        got: list[int] = []
        async with aio.iterate(numbers()) as items:
            async for item in items:
                got.append(item)
                if len(got) == 3:
                    await aio.run(trio.testing.wait_all_tasks_blocked)
                    assert produced == [0, 1, 2]  # nothing read ahead while we wait
                    break
        assert closed == ["source"]  # leaving the block closed the trio side
        return got

    assert asyncio.run(main()) == [0, 1, 2]


def test_iterate_errors_and_cancellation() -> None:
    closed: list[str] = []

    async def fails() -> AsyncIterator[int]:
        yield 1
        raise KeyError("from the source")

    async def stalls() -> AsyncIterator[int]:
        try:
            yield 1
            await trio.sleep_forever()
            yield 2  # pragma: no cover
        finally:
            closed.append("stalls")

    async def main() -> None:
        source = aio.iterate(fails())
        assert await anext(source) == 1
        with pytest.raises(KeyError, match="from the source"):
            await anext(source)

        items = aio.iterate(stalls())
        assert await anext(items) == 1
        waiting = asyncio.create_task(anext(items))
        await asyncio.sleep(0)
        await aio.run(trio.testing.wait_all_tasks_blocked)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert closed == ["stalls"]
        with pytest.raises(StopAsyncIteration):
            await anext(items)

    asyncio.run(main())


# --- notebook ----------------------------------------------------------------------------------


def run_cell(runner: asyncio.Runner, source: str, namespace: dict[str, Any]) -> Any:
    """What IPython's autoawait does with a cell: compile with top-level await, run in the loop."""
    code = compile(source, "<cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)  # a coroutine when the cell awaits
    if asyncio.iscoroutine(result):
        return runner.run(result)
    return result


CELL_TRAIN = """
from arkor_trio import BlobDataset, aio, create_trainer

def on_log(ctx):
    print(f"step {ctx.step} loss {ctx.loss:.3f}")  # shows in the cell's output as it happens

trainer = create_trainer(
    name="notebook",
    model="unsloth/gemma-4-E4B-it",
    dataset=BlobDataset.demo(),
    max_steps=6,
    callbacks={"on_log": on_log, "on_completed": lambda ctx: print("done", ctx.job.status)},
)
result = await aio.run(trainer.run)  # the kernel stays responsive while it trains
"""

CELL_INTERRUPTED = """
import signal

def interrupt(ctx):  # the first log: the user presses "interrupt the kernel"
    signal.raise_signal(signal.SIGINT)

long_run = create_trainer(
    name="interrupted", model=MODEL, dataset=BlobDataset.demo(), max_steps=100_000,
    callbacks={"on_log": interrupt}, client=client,
)
await aio.run(long_run.run)
"""

CELL_CHECK = """
from arkor_trio import Trainer
after = await aio.run(Trainer.attach(long_run.job_id, client=client).wait)
await aio.run(client.aclose)
"""


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals: main thread"
)
def test_notebook_cells_share_one_loop(
    backend: LocalBackend,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.setenv("ARKOR_CLOUD_API_URL", backend.base_url)  # the first cell (as in
    monkeypatch.setenv("ARKOR_TOKEN", backend.token)  # docs/asyncio.md) uses the environment
    monkeypatch.setenv("HOME", str(tmp_path))
    namespace: dict[str, Any] = {"MODEL": MODEL, "client": backend.client()}
    with asyncio.Runner() as runner:
        run_cell(runner, CELL_TRAIN, namespace)
        assert namespace["result"].job.status == "completed"
        printed = capsys.readouterr().out.splitlines()
        assert [line.split()[1] for line in printed[:-1]] == [str(s) for s in range(1, 7)]
        assert printed[-1] == "done completed"
        assert aio.is_running(runner.get_loop())  # the guest run waits for the next cell

        with pytest.raises(KeyboardInterrupt):
            run_cell(runner, CELL_INTERRUPTED, namespace)
        run_cell(runner, CELL_CHECK, namespace)  # the kernel lives on
        assert namespace["after"].job.status == "cancelled"  # run() cancelled the job
    assert_no_trio_left()


def test_progress_display_prints_plain_lines_in_a_kernel(
    backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "xterm")
    assert wants_live(Tty())
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    assert not wants_live(Tty())  # a kernel's stdout may claim to be a tty: still plain lines

    out = Tty()
    display = ProgressDisplay(out)

    async def cell() -> str:
        trainer = trainer_for(backend, "kernel-display", 4)
        trainer.callbacks = trainer.callbacks + display.callbacks()
        with display:
            result = await aio.run(trainer.run)
        await aio.run(trainer.client.aclose)
        return result.job.status

    assert asyncio.run(cell()) == "completed"
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("started job ")
    steps = [line.split()[1] for line in lines if line.startswith("step ")]
    assert steps == ["1/4", "2/4", "3/4", "4/4"]  # one plain line per log, no bar frames
    assert lines[-1].startswith("completed job ")


def test_keyboard_interrupt_in_a_loop_driven_by_hand(backend: LocalBackend) -> None:
    # No asyncio.run: no asyncio SIGINT handler, so trio installs its own for the run's life.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    def interrupt(ctx: Any) -> None:
        signal.raise_signal(signal.SIGINT)

    trainer = trainer_for(backend, "by-hand", 100_000, on_log=interrupt)
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(aio.run(trainer.run))
        follower = Trainer.attach(trainer.job_id or "", client=trainer.client)
        result = loop.run_until_complete(aio.run(follower.wait))
        assert result.job.status == "cancelled"  # run() cancelled the job on its way out
        loop.run_until_complete(aio.run(trainer.client.aclose))
        loop.run_until_complete(loop.shutdown_asyncgens())  # what asyncio.run would do
    finally:
        loop.close()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert_no_trio_left()


def test_a_dropped_iterator_closes_its_source() -> None:
    closed: list[str] = []

    async def numbers() -> AsyncIterator[int]:
        try:
            for i in range(1_000_000):
                yield i
        finally:
            closed.append("source")

    async def main() -> None:
        items = aio.iterate(numbers())
        async for item in items:  # no `async with`, no aclose(): just dropped
            if item == 2:
                break
        del items
        gc.collect()
        await aio.run(trio.testing.wait_all_tasks_blocked)
        assert closed == ["source"]

    asyncio.run(main())


def test_context_reports_errors_from_entering_and_leaving() -> None:
    @contextlib.asynccontextmanager
    async def fails_on_enter() -> AsyncIterator[int]:
        await trio.sleep(0)
        raise LookupError("enter")
        yield 1  # pragma: no cover

    @contextlib.asynccontextmanager
    async def fails_on_exit() -> AsyncIterator[int]:
        yield 1
        await trio.sleep(0)
        raise OSError("exit")

    async def main() -> None:
        with pytest.raises(LookupError, match="enter"):
            async with aio.context(fails_on_enter()):
                pass  # pragma: no cover
        with pytest.raises(OSError, match="exit"):
            async with aio.context(fails_on_exit()) as value:
                assert value == 1

    asyncio.run(main())


def test_uvloop_works_the_same_way(backend: LocalBackend) -> None:
    uvloop = pytest.importorskip("uvloop")
    unwound: list[str] = []

    async def parked(started: asyncio.Event) -> None:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            unwound.append("call")

    async def main() -> str:
        assert await aio.run(add, 20, 22) == 42
        started = asyncio.Event()
        task = asyncio.create_task(aio.run(parked, started))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        trainer = trainer_for(backend, "uvloop", 5)
        result = await aio.run(trainer.run)
        await aio.run(trainer.client.aclose)
        started = asyncio.Event()
        asyncio.create_task(aio.run(parked, started))  # noqa: RUF006  # ended by the shutdown
        await started.wait()
        return result.job.status

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(main()) == "completed"
    assert unwound == ["call", "call"]
    assert_no_trio_left()


def test_the_exit_hook_rides_through_a_stop_the_host_left_queued() -> None:
    # A Jupyter kernel stops its loop without shutting it down and, in most restarts, leaves
    # one more loop.stop() queued; the exit hook must still run the loop until the guest run
    # has unwound (before, it gave up at that stop: background runs trained on).
    from arkor_trio.aio import _guest

    unwound: list[str] = []

    async def parked(started: asyncio.Event) -> None:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):  # unwinding takes more than one loop pass
                await trio.sleep(0.01)
            unwound.append("call")

    async def start() -> None:
        started = asyncio.Event()
        asyncio.get_running_loop().create_task(aio.run(parked, started))
        await started.wait()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(start())

        def stop_twice() -> None:  # the second stop() stays queued past run_forever
            loop.stop()
            loop.call_soon(loop.stop)

        loop.call_soon(stop_twice)
        loop.run_forever()
        assert unwound == []
        _guest._stop_at_exit()
        assert unwound == ["call"]
    finally:
        loop.close()
    assert_no_trio_left()
