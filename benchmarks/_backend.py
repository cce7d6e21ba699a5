"""The local backend with a benchmark engine, in its own process; stops when stdin closes.

Usage: ``python benchmarks/_backend.py DATA_DIR [--max-jobs N] [--ping-interval S] [--engine E]``
(``--engine numpy``: the real NumPy training engine instead of the benchmark one). Prints one
JSON line ``{"base_url", "token", "pid"}`` once it listens. The engine trains nothing: a job's
config picks what it emits (see :class:`BenchEngine`), so the benchmarks measure the HTTP side.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

import trio

from arkor_trio.server import Engine, open_local_backend

BENCH_MODEL = "bench/fake"


class BenchRejected(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class BenchFailure(Exception):
    step: int | None = None


def _stop_event(should_stop: Any) -> threading.Event | None:
    """The runner's stop flag is ``threading.Event.is_set``: wait on the event itself."""
    owner = getattr(should_stop, "__self__", None)
    return owner if isinstance(owner, threading.Event) else None


def _sleep_unless_stopped(should_stop: Any, seconds: float) -> bool:
    """Sleep, waking at once on a stop request; True when stopped."""
    event = _stop_event(should_stop)
    if event is not None:
        return event.wait(max(0.0, seconds))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if should_stop():
            return True
        time.sleep(0.001)
    return bool(should_stop())


_GO: dict[Path, threading.Event] = {}
_GO_LOCK = threading.Lock()


def _go_signal(path: Path) -> threading.Event:
    """An event set once ``path`` exists; one watcher thread per path polls it every 10 ms."""
    with _GO_LOCK:
        if path in _GO:
            return _GO[path]
        event = _GO[path] = threading.Event()

    def watch() -> None:
        while not path.exists():
            time.sleep(0.01)
        event.set()

    threading.Thread(target=watch, daemon=True, name="go-watcher").start()
    return event


class BenchEngine:
    """Config ``bench`` picks the behaviour.

    * ``"gate"`` (default): ``training.started``, ``logs`` (3) logs, then wait for a cancel;
      reacts to it at once (the real engine checks between steps).
    * ``"ticks"``: ``training.started``; then, once the file ``go`` exists, from the wall time
      written in it plus ``offset``, one ``bench.tick`` every ``interval`` s, ``ticks`` times,
      each stamped with ``sent`` (``time.time()``); then ``training.completed``.
    """

    def engine(self) -> Engine:
        def unused(*args: Any, **kwargs: Any) -> Any:
            raise BenchRejected("model", "the benchmark engine does no inference")

        return Engine(
            name="bench-engine",
            supported_models=(BENCH_MODEL,),
            validate_config=self.validate_config,
            run_training=self.run_training,
            load_weights=unused,
            base_model=unused,
            generate=unused,
            score_choices=unused,
            config_rejected=BenchRejected,
            training_failure=BenchFailure,
            inference_rejected=BenchRejected,
        )

    @staticmethod
    def validate_config(config: Any) -> None:
        if config.get("model") != BENCH_MODEL:
            raise BenchRejected("model", f"the benchmark backend runs {BENCH_MODEL!r} only")

    @staticmethod
    def run_training(*, job_id, config, data_dir, emit, should_stop) -> str:
        emit({"type": "training.started", "metadata": {"backend": "local", "engine": "bench"}})
        if config.get("bench", "gate") == "ticks":
            return BenchEngine._ticks(config, emit, should_stop)
        for step in range(1, int(config.get("logs", 3)) + 1):
            emit({"type": "training.log", "step": step, "loss": 1.0 / step})
        while not _sleep_unless_stopped(should_stop, 3600):
            pass
        return "cancelled"

    @staticmethod
    def _ticks(config: Any, emit: Any, should_stop: Any) -> str:
        go = _go_signal(Path(config["go"]))
        while not go.wait(1.0):
            if should_stop():
                return "cancelled"
        begin = float(Path(config["go"]).read_text()) + float(config.get("offset", 0.0))
        interval = float(config.get("interval", 1.0))
        for n in range(1, int(config.get("ticks", 10)) + 1):
            if _sleep_unless_stopped(should_stop, begin + (n - 1) * interval - time.time()):
                return "cancelled"
            emit({"type": "bench.tick", "n": n, "sent": time.time()})
        if _sleep_unless_stopped(should_stop, float(config.get("linger", 0.0))):
            return "cancelled"
        emit({"type": "training.completed", "artifacts": []})
        return "completed"


def raise_fd_limit() -> None:
    """Lift the soft limit on open files to the hard one (a thousand streams need sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def main(data_dir: Path, max_jobs: int, ping_interval: float, engine: str = "bench") -> None:
    async with open_local_backend(
        data_dir,
        engine=BenchEngine().engine() if engine == "bench" else None,
        max_concurrent_jobs=max_jobs,
        ping_interval=ping_interval,
    ) as backend:
        info = {"base_url": backend.base_url, "token": backend.token, "pid": os.getpid()}
        print(json.dumps(info), flush=True)
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        async with stdin:
            while await stdin.receive_some(4096):
                pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--max-jobs", type=int, default=1)
    parser.add_argument("--ping-interval", type=float, default=15.0)
    parser.add_argument("--engine", choices=["bench", "numpy"], default="bench")
    args = parser.parse_args()
    raise_fd_limit()
    trio.run(main, args.data_dir, args.max_jobs, args.ping_interval, args.engine)
