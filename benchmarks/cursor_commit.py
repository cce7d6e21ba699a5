"""Cost of a per-event cursor commit: what a follower pays after each callback (issue 14).

Each row commits ``--n`` cursors through one store, one key, the file already holding ``jobs``
other keys, and reports microseconds per call (median of ``--repeat`` timed runs):

* ``MemoryCursorStore.commit_nowait``: the floor (what a follower's ledger calls inline);
* ``FileCursorStore.commit_nowait``: flock, re-read and parse the file, write ``.tmp``, link
  ``.prev``, rename; ``peek`` takes a shared lock and re-reads;
* ``try_claim`` + release: the flock half of a lease;
* ``lease`` acquire + release: a follower's lease of a job (flock + token bump), once per
  ``wait()``;
* ``fsync=True``: the same plus a file and a directory ``fsync`` (fewer samples: a disk sync);
* the same commits through ``await store.commit`` inside trio: inline for the default store, a
  worker thread for ``fsync=True`` (``blocking``), which keeps the event loop free.

Usage: ``python benchmarks/cursor_commit.py [--n 2000] [--repeat 3] [--dir DIR]``; ``--dir``
picks the filesystem measured (default: a temporary directory under ``bench-scratch/``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from arkor_trio import FileCursorStore, MemoryCursorStore

if TYPE_CHECKING:
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parent.parent


def per_call_us(fn: Callable[[int], Any], n: int, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(runs)


def per_call_async_us(store: Any, n: int, repeat: int) -> float:
    async def main() -> float:
        runs = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            for i in range(n):
                await store.commit("job-bench", str(i))
            runs.append((time.perf_counter() - t0) / n * 1e6)
        return statistics.median(runs)

    return trio.run(main)


def file_store(directory: Path, name: str, jobs: int, *, fsync: bool = False) -> FileCursorStore:
    store = FileCursorStore(directory / name, fsync=fsync)
    for j in range(jobs):
        store.commit_nowait(f"job-{j:05d}", str(j * 1000), finished=j % 2 == 0)
    return store


def claim_cycle(store: FileCursorStore) -> Callable[[int], None]:
    def cycle(i: int) -> None:
        release = store.try_claim("job-bench")
        assert release is not None
        release()

    return cycle


def lease_cycle_us(store: FileCursorStore, n: int, repeat: int) -> float:
    async def main() -> float:
        runs = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            for _ in range(n):
                async with store.lease("job-lease", ttl=30.0):
                    pass
            runs.append((time.perf_counter() - t0) / n * 1e6)
        return statistics.median(runs)

    return trio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    n, repeat = args.n, args.repeat
    scratch = ROOT / "bench-scratch"
    scratch.mkdir(exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="cursor-", dir=args.dir or scratch))
    rows: list[tuple[str, float]] = []
    try:
        memory = MemoryCursorStore()
        rows.append(
            (
                "MemoryCursorStore.commit_nowait",
                per_call_us(lambda i: memory.commit_nowait("j", str(i)), n, repeat),
            )
        )
        for jobs in (1, 100, 1000):
            store = file_store(directory, f"c{jobs}.json", jobs - 1)
            rows.append(
                (
                    f"FileCursorStore.commit_nowait, file of {jobs} job(s)",
                    per_call_us(lambda i, s=store: s.commit_nowait("job-bench", str(i)), n, repeat),
                )
            )
        store = file_store(directory, "load.json", 99)
        store.commit_nowait("job-bench", "1")
        load = per_call_us(lambda i: store.peek("job-bench"), n, repeat)
        rows.append(("FileCursorStore.peek, 100 jobs", load))
        rows.append(("try_claim + release", per_call_us(claim_cycle(store), n, repeat)))
        rows.append(("lease acquire + release, 100 jobs", lease_cycle_us(store, n // 4, repeat)))
        rows.append(("await store.commit (inline), 100 jobs", per_call_async_us(store, n, repeat)))
        synced = file_store(directory, "sync.json", 0, fsync=True)
        small = max(n // 20, 20)
        rows.append(
            (
                "FileCursorStore(fsync=True).commit_nowait, 1 job",
                per_call_us(lambda i: synced.commit_nowait("job-bench", str(i)), small, repeat),
            )
        )
        rows.append(
            (
                "await store.commit (thread), fsync=True",
                per_call_async_us(synced, small, repeat),
            )
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    width = max(len(name) for name, _ in rows)
    print(f"| {'operation':<{width}} | us per call |")
    print(f"|{'-' * (width + 2)}|-------------|")
    for name, us in rows:
        print(f"| {name:<{width}} | {us:>11.1f} |")


if __name__ == "__main__":
    main()
