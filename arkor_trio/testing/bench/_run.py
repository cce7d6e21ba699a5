"""The engine: a client behind the chaos proxy, one profile at a time, scored from the outside.

:func:`run_through_proxy` is the one harness (``arkor-trio bench`` and ``benchmarks/reconnect.py``
both use it): open the proxy with a plan, run a client against it, stop it after a budget or a
number of gaps, and hand back the proxy's records. :func:`run_bench` adds the scripted source and
the client command, and turns each profile into a :class:`ProfileResult`.
"""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING, Generic, TypeVar

import attrs
import trio

from .._proxy import open_chaos_proxy
from .._records import ConnectionRecord
from ._client import ClientRun, run_client
from ._profiles import DEFAULT_PROFILES, PROFILES, make_plan
from ._score import Gap, LeidCheck, Tally, gaps_of, last_event_id_checks
from ._source import Source, script

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from .._plan import Plan

__all__ = [
    "BenchConfig",
    "BenchReport",
    "ProfileResult",
    "Trial",
    "run_bench",
    "run_through_proxy",
]

T = TypeVar("T")
#: The path the source answers on (any path works; this one reads well in logs).
PATH = "/events"


@attrs.frozen
class Trial(Generic[T]):
    """One client run through the proxy: its result (None when stopped), why it was stopped."""

    result: T | None
    stopped: str | None
    wall: float
    records: list[ConnectionRecord]


async def run_through_proxy(
    upstream: tuple[str, int] | str,
    plan: Plan,
    client: Callable[[str], Awaitable[T]],
    *,
    seed: int = 0,
    budget: float | None = None,
    stop_after_gaps: int = 0,
) -> Trial[T]:
    """Run ``client(proxy_url)`` behind a chaos proxy with ``plan``, within ``budget`` seconds.

    With ``stop_after_gaps``, the client is cancelled once that many gaps (:func:`gaps_of`) are
    recorded. The records are taken when the client has returned or been cancelled.
    """
    result: T | None = None
    stopped: str | None = None
    async with open_chaos_proxy(upstream, plan=plan, seed=seed) as proxy:
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:

            async def follow() -> None:
                nonlocal result, stopped
                with trio.move_on_after(budget if budget is not None else float("inf")) as scope:
                    result = await client(proxy.url)
                if scope.cancelled_caught:
                    stopped = "budget"
                nursery.cancel_scope.cancel()

            async def count_gaps() -> None:
                nonlocal stopped
                seen = 1
                while True:
                    seen += 1
                    await proxy.wait_connections(seen)
                    if len(gaps_of(proxy.records)) >= stop_after_gaps:
                        stopped = "gaps"
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(follow)
            if stop_after_gaps:
                nursery.start_soon(count_gaps)
        wall = time.perf_counter() - started
        records = proxy.records
    return Trial(result, stopped, wall, records)


@attrs.frozen(kw_only=True)
class BenchConfig:
    """What ``arkor-trio bench`` runs: the client command (``{url}`` is replaced) and the script."""

    command: tuple[str, ...]
    profiles: tuple[str, ...] = DEFAULT_PROFILES
    events: int = 200
    seed: int = 1
    deadline: float = 60.0
    retry_ms: int = 100


@attrs.frozen(kw_only=True)
class ProfileResult:
    """The figures of one profile (see docs/bench.md for what each means)."""

    profile: str
    description: str
    connections: int
    gaps: list[Gap]
    deliveries: int
    lost: int
    unreached: int
    dup: int
    corrupt: int
    out_of_order: int
    leid: list[LeidCheck]
    wall: float
    ended: str
    completed: bool
    returncode: int | None
    ignored_lines: int
    oversized_lines: int
    stdout_bytes: int
    stderr: str
    started: float
    records: list[ConnectionRecord]
    timeline: list[tuple[float, int, str]]

    @property
    def leid_ok(self) -> int:
        return sum(check.ok for check in self.leid)


@attrs.frozen
class BenchReport:
    """Every profile's result, with the script's size and seed."""

    config: BenchConfig
    results: list[ProfileResult]

    def wall_ratio(self, result: ProfileResult) -> float | None:
        """``result``'s wall time over the clean profile's (None without a completed clean run)."""
        clean = next((r for r in self.results if r.profile == "clean"), None)
        if clean is None or not clean.completed or clean.wall <= 0:
            return None
        return result.wall / clean.wall

    def count(self, result: ProfileResult, name: str) -> int:
        """The count ``--fail-on`` names: lost, dup, corrupt, order, last-event-id, unfinished."""
        return {
            "lost": result.lost,
            "dup": result.dup,
            "corrupt": result.corrupt,
            "order": result.out_of_order,
            "last-event-id": len(result.leid) - result.leid_ok,
            "unfinished": 0 if result.completed else 1,
        }[name]


FAIL_ON = ("lost", "dup", "corrupt", "order", "last-event-id", "unfinished")


async def run_bench(
    config: BenchConfig, *, on_result: Callable[[ProfileResult], None] | None = None
) -> BenchReport:
    """Serve the script, and run the client once per profile in ``config.profiles``, in order."""
    events = script(config.events, seed=config.seed)
    source = Source(events, retry_ms=config.retry_ms, seed=config.seed)
    results = []
    async with trio.open_nursery() as nursery:
        await nursery.start(source.run)
        for name in config.profiles:
            result = await _run_profile(source, name, config)
            results.append(result)
            if on_result is not None:
                on_result(result)
        nursery.cancel_scope.cancel()
    return BenchReport(config, results)


async def _run_profile(source: Source, name: str, config: BenchConfig) -> ProfileResult:
    profile = PROFILES[name]
    source.reset(restart=profile.restart, seed=config.seed)
    await source.wait_up()  # the previous profile may have left it restarting
    tally = Tally(source.events)
    run = ClientRun()

    async def client(base: str) -> ClientRun:
        url = base + PATH
        argv = [part.replace("{url}", url) for part in config.command]
        env = {**os.environ, "ARKOR_BENCH_URL": url}
        return await run_client(argv, env, tally, deadline=config.deadline)

    started = time.perf_counter()
    trial = await run_through_proxy(
        ("127.0.0.1", source.port), make_plan(name, config.seed), client, seed=config.seed
    )
    run = trial.result or run
    first = trial.records[0].opened_wall if trial.records else run.started
    lost, unreached = tally.missing(whole=run.stopped != "deadline")
    return ProfileResult(
        profile=name,
        description=profile.description,
        connections=len(trial.records),
        gaps=gaps_of(trial.records),
        deliveries=tally.deliveries,
        lost=lost,
        unreached=unreached,
        dup=tally.dup,
        corrupt=tally.corrupt,
        out_of_order=tally.out_of_order,
        leid=last_event_id_checks(trial.records, source.events, config.retry_ms),
        wall=max(0.0, run.ended - first),
        ended=_ended(run, tally),
        completed=tally.final_seen,
        returncode=run.returncode,
        ignored_lines=tally.ignored,
        oversized_lines=run.oversized,
        stdout_bytes=run.stdout_bytes,
        stderr=run.stderr,
        started=started,
        records=trial.records,
        timeline=[(at - started, position, verdict) for at, position, verdict in tally.timeline],
    )


def _exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


def _ended(run: ClientRun, tally: Tally) -> str:
    """How the run ended, in a few words (the report's 'ended' column)."""
    if tally.final_seen:
        if run.stopped is not None:
            return "completed, but did not exit (stopped)"
        return "completed" if run.returncode == 0 else f"completed, {_exit(run.returncode)}"
    if run.stdout_bytes == 0:
        prefix = "no output, "
    elif tally.deliveries == 0:
        prefix = "no bench lines, "
    else:
        prefix = ""
    if run.stopped == "deadline":
        how = "killed at deadline" + (" (ignored SIGTERM)" if run.ignored_sigterm else "")
    else:
        how = f"{_exit(run.returncode)} before the final event"
    return prefix + how


def check_command(command: Sequence[str]) -> str | None:
    """Why ``command`` cannot run (one line), or None: the program must exist and be executable."""
    import shutil

    if not command:
        return "no client command after --"
    program = command[0]
    if os.sep in program:
        if not os.path.isfile(program):
            return f"client command not found: {program}"
        if not os.access(program, os.X_OK):
            return f"client command not executable: {program}"
    elif shutil.which(program) is None:
        return f"client command not found: {program}"
    return None
