"""Fleet in one process: the assignment rule, and replicas sharing a MemoryCursorStore.

The replicas here are Fleet objects in one trio run against a real local backend (real HTTP
over loopback, a fake engine); the process-level tests with Redis are in test_fleet_redis.py.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from arkor_trio import Callbacks, ConfigError, Fleet, MemoryCursorStore
from arkor_trio.server import open_local_backend
from arkor_trio.trainer import _fleet_metrics as fleet_metrics
from arkor_trio.trainer._fleet_assign import assign
from tests.server.conftest import FakeEngine, create_job, headers_for

if TYPE_CHECKING:
    from pathlib import Path


def test_jobs_arriving_one_by_one_are_dealt_round_robin() -> None:
    members = ["a", "b", "c"]
    dealt: Counter[str] = Counter()
    for index in range(30):  # each job ends before the next arrives
        owner = assign(members, [(index, f"j{index}")], {})[f"j{index}"]
        dealt[owner] += 1
    assert dealt == {"a": 10, "b": 10, "c": 10}


def test_holders_keep_their_jobs_up_to_the_cap_and_a_new_member_gets_the_rest() -> None:
    jobs = [(i, f"j{i}") for i in range(9)]
    held_by_a = {f"j{i}": "a" for i in range(9)}  # a was alone and took everything
    out = assign(["a", "b", "c"], jobs, held_by_a)
    load = Counter(out.values())
    assert load == {"a": 3, "b": 3, "c": 3}  # the new ones take the newest jobs of a
    assert [out[f"j{i}"] for i in range(3)] == ["a"] * 3
    # Stable: the same inputs with the new holders move nothing.
    assert assign(["a", "b", "c"], jobs, out) == out


def test_jobs_ending_unevenly_move_nothing_within_fair_share_plus_one() -> None:
    jobs = [(i, f"j{i}") for i in range(8)]  # fair share 3 (rounded up)
    holders = {f"j{i}": m for i, m in enumerate("aaaabbcc")}
    assert assign(["a", "b", "c"], jobs, holders) == holders


@pytest.mark.parametrize("count", range(1, 12))
def test_nobody_gets_more_than_fair_share_plus_one(count: int) -> None:
    jobs = [(i, f"j{i}") for i in range(count)]
    skewed = {f"j{i}": "a" for i in range(0, count, 2)}
    load = Counter(assign(["a", "b", "c"], jobs, skewed).values())
    assert max(load.values()) <= -(-count // 3) + 1  # fair share (rounded up) + 1
    assert max(load.values()) - min(load.get(m, 0) for m in "abc") <= 2


def test_a_fleet_needs_a_store_with_membership() -> None:
    from arkor_trio import ArkorClient

    class Plain:
        async def load(self, key: str) -> Any: ...

    with pytest.raises(ConfigError, match="heartbeat"):
        Fleet(ArkorClient("http://127.0.0.1:1", "t"), store=Plain())
    with pytest.raises(ConfigError, match="lease_ttl"):
        Fleet(ArkorClient("http://127.0.0.1:1", "t"), store=MemoryCursorStore(), lease_ttl=0)


async def _until(predicate: Any, what: str) -> None:
    """Wait (bounded) for a condition the fleets reach by themselves."""
    with trio.fail_after(20):
        while not predicate():
            await trio.sleep(0.01)


async def test_replicas_follow_every_job_once_and_a_new_one_takes_its_share(
    tmp_path: Path,
) -> None:
    fake = FakeEngine()
    store = MemoryCursorStore()
    seen: list[tuple[str, str | None, int, str]] = []

    def record(ctx: Any) -> None:
        d = ctx.delivery
        seen.append((d.job_id, d.event_id, d.token, d.holder))

    callbacks = Callbacks(
        on_started=record, on_log=record, on_checkpoint=record, on_completed=record
    )
    async with (
        open_local_backend(tmp_path / "d", engine=fake.engine(), max_concurrent_jobs=20) as backend,
        backend.client() as client,
        httpx.AsyncClient(base_url=backend.base_url, headers=headers_for(backend)) as http,
        trio.open_nursery() as nursery,
    ):
        fleets = [
            Fleet(client, store=store, callbacks=callbacks, lease_ttl=0.6,
                  discovery_interval=0.1, name=f"r{i}")
            for i in range(3)
        ]  # fmt: skip
        for fleet in fleets[:2]:
            nursery.start_soon(fleet.run)
        await _until(lambda: all(f.stats.members == 2 for f in fleets[:2]), "two members")
        jobs = [(await create_job(http, f"j{i}", logs=2, gate="g"))["id"] for i in range(6)]
        await _until(lambda: sum(f.stats.held for f in fleets[:2]) == 6, "all held")
        assert sorted(f.stats.held for f in fleets[:2]) == [3, 3]
        nursery.start_soon(fleets[2].run)  # a third replica takes its share, nobody restarts
        await _until(lambda: [f.stats.held for f in fleets] == [2, 2, 2], "rebalanced")
        fake.gates["g"].set()
        await _until(lambda: sum(1 for s in seen if s[1] and s[0] in jobs) >= 6 * 5, "done")
        await _until(lambda: all(f.stats.held == 0 for f in fleets), "released")
        for fleet in fleets:
            fleet.stop()
    per_event = Counter((job, event) for job, event, _, _ in seen)
    assert len(per_event) == 6 * 5  # started, 2 logs, checkpoint, completed
    assert set(per_event.values()) == {1}, "an event was dispatched twice"
    handoffs = sum(f.stats.handoffs for f in fleets)
    # The two jobs the third replica took (views that differ for a heartbeat may move more:
    # every hand-off is between events, as the count above shows).
    assert handoffs >= 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--store", "http://127.0.0.1:1/0"], "not a Redis URL"),
        (["--callbacks", "no_such_module_here:callbacks"], "cannot import no_such_module_here"),
        (["--callbacks", "arkor_trio:no_such_name"], "arkor_trio has no attribute no_such_name"),
        (["--callbacks", "arkor_trio"], "package.module:attribute"),
    ],
)
def test_fleet_command_rejects_a_bad_store_or_callbacks_in_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from arkor_trio.cli import main

    options = {"--store": "redis://127.0.0.1:1/0", "--callbacks": "arkor_trio:Callbacks"}
    options.update(zip(argv[::2], argv[1::2], strict=True))
    args = ["fleet", "--namespace", "n"] + [x for kv in options.items() for x in kv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1  # one line, no traceback


def _points(reader: InMemoryMetricReader) -> dict[str, float]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: point.value
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
        if isinstance(point, NumberDataPoint)
    }


async def test_fleet_instruments_read_the_replicas_at_collection(tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    fleet_metrics.register(provider.get_meter("test"))
    before = fleet_metrics.figures()  # counts folded by earlier tests of this process
    fake = FakeEngine()
    store = MemoryCursorStore()
    seen: list[str] = []
    callbacks = Callbacks(
        on_started=lambda ctx: seen.append("s"), on_log=lambda ctx: seen.append("l")
    )
    async with (
        open_local_backend(tmp_path / "d", engine=fake.engine(), max_concurrent_jobs=8) as backend,
        backend.client() as client,
        httpx.AsyncClient(base_url=backend.base_url, headers=headers_for(backend)) as http,
        trio.open_nursery() as nursery,
    ):
        fleets = [
            Fleet(client, store=store, callbacks=callbacks, lease_ttl=0.6,
                  discovery_interval=0.1, name=f"m{i}")
            for i in range(2)
        ]  # fmt: skip
        for fleet in fleets:
            nursery.start_soon(fleet.run)
        await _until(lambda: all(f.stats.members == 2 for f in fleets), "two members")
        for i in range(4):
            await create_job(http, f"j{i}", logs=1, gate="g")
        await _until(lambda: [f.stats.held for f in fleets] == [2, 2], "held 2/2")
        await _until(lambda: len(seen) == 4 * 2, "started and the log of each")
        got = _points(reader)
        assert got["arkor.fleet.jobs.held"] == 4  # summed over the process's fleets
        assert got["arkor.fleet.jobs.assigned"] == 4
        assert got["arkor.fleet.members"] == 2  # the largest view, not a sum
        assert got["arkor.fleet.store.up"] == 1
        assert got["arkor.fleet.dispatched"] - before["dispatched"] == 8
        assert got["arkor.fleet.commits"] - before["commits"] == sum(
            f.stats.commits for f in fleets
        )
        fake.gates["g"].set()
        await _until(lambda: all(f.stats.held == 0 for f in fleets) and len(seen) == 8, "done")
        for fleet in fleets:
            fleet.stop()
    await fleets[0].run()  # a stopped fleet run again returns at once: nothing counted twice
    got = _points(reader)
    assert "arkor.fleet.jobs.held" not in got  # no fleet runs: no gauge
    assert got["arkor.fleet.dispatched"] - before["dispatched"] == 8  # kept once they ended
    assert got["arkor.fleet.commits"] - before["commits"] == sum(f.stats.commits for f in fleets)
    assert got["arkor.fleet.commits.refused"] == before["commits_refused"]
    provider.shutdown()
