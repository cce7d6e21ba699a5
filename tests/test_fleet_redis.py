"""A fleet of replica processes on a real redis-server and a real local backend.

The replicas and the backend are those of tests/_fleet_procs.py. Small ttls (1 s) keep it
quick; every wait is bounded.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from typing import TYPE_CHECKING

from tests._fleet_procs import (
    DISCOVERY,
    EVENTS_PER_JOB,
    SLACK,
    TTL,
    FakeBackend,
    Replica,
    backend,
    fleet,
    once_each,
    records,
    redis,
    until,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests._redis import RedisServer

__all__ = ["backend", "fleet", "redis"]  # fixtures


def test_three_replicas_follow_thirty_jobs_once_each_ten_apiece(
    tmp_path: Path, backend: FakeBackend, fleet: Callable[..., Replica]
) -> None:
    replicas = [fleet() for _ in range(3)]
    until(lambda: all(r.figure("members") == 3 for r in replicas), "three members")
    jobs = backend.create_jobs(30, logs=2, gate="g")
    until(lambda: sum(r.figure("held") for r in replicas) == 30, "all thirty held")
    held = sorted(r.figure("held") for r in replicas)
    assert held == [10, 10, 10]
    backend.fake.gates["g"].set()
    record = tmp_path / "record.jsonl"
    until(lambda: len(records(record)) >= 30 * EVENTS_PER_JOB, "every event")
    until(lambda: all(r.figure("held") == 0 for r in replicas), "all released")
    counts = once_each(record)
    assert {job for job, _ in counts} == set(jobs)
    assert len(counts) == 30 * EVENTS_PER_JOB
    # While all thirty ran each replica followed ten; as jobs end unevenly, a replica with
    # more than its fair share + 1 of what remains hands some on (between events).
    by_pid = Counter(r["pid"] for r in records(record) if r["type"] == "started")
    assert sorted(by_pid.values()) == [10, 10, 10]
    for replica in replicas:
        assert replica.stop() == 143  # SIGTERM: terminated, leases released


def test_kill_9_jobs_resume_on_the_others_within_ttl_plus_discovery(
    tmp_path: Path, backend: FakeBackend, fleet: Callable[..., Replica]
) -> None:
    replicas = [fleet() for _ in range(3)]
    until(lambda: all(r.figure("members") == 3 for r in replicas), "three members")
    backend.create_jobs(9, logs=2, gate="g")
    record = tmp_path / "record.jsonl"
    until(lambda: len(records(record)) >= 9 * 3, "the events before the gate")
    until(lambda: [r.figure("held") for r in replicas] == [3, 3, 3], "held 3/3/3")
    victim, survivors = replicas[0], replicas[1:]
    victim.process.kill()
    killed = time.monotonic()
    taken = until(lambda: sum(r.figure("held") for r in survivors) == 9, "the takeover")
    assert taken - killed <= TTL + DISCOVERY + SLACK, f"takeover took {taken - killed:.2f} s"
    assert sum(r.figure("takeovers") for r in survivors) == 3
    backend.fake.gates["g"].set()
    until(lambda: len(records(record)) >= 9 * EVENTS_PER_JOB, "every event")
    counts = once_each(record)
    assert len(counts) == 9 * EVENTS_PER_JOB
    after = [r for r in records(record) if r["type"] == "completed"]
    assert victim.pid not in {r["pid"] for r in after}


def test_sigstop_past_the_ttl_repeats_at_most_the_event_inside_a_callback(
    tmp_path: Path, backend: FakeBackend, fleet: Callable[..., Replica]
) -> None:
    replicas = [fleet(FLEET_SLOW="1.5") for _ in range(2)]
    until(lambda: all(r.figure("members") == 2 for r in replicas), "two members")
    jobs = backend.create_jobs(2, logs=1, gate="g")
    record = tmp_path / "record.jsonl"
    until(lambda: [r.figure("held") for r in replicas] == [1, 1], "held 1/1")
    until(lambda: len(records(record)) >= 2 * 2, "the events before the gate")
    backend.fake.gates["g"].set()
    sleeper = replicas[0]
    # Stop the replica inside its slow on_checkpoint (the callback sleeps 1.5 s).
    until(
        lambda: any(r["type"] == "checkpoint" and r["pid"] == sleeper.pid
                    for r in records(record)),
        "the sleeper's checkpoint callback",
    )  # fmt: skip
    sleeper.process.send_signal(signal.SIGSTOP)
    # Paused until the other replica has taken both jobs over and completed them (at least
    # the ttl: its lease must lapse first).
    other = replicas[1]
    until(
        lambda: {r["job"] for r in records(record) if r["type"] == "completed"} == set(jobs),
        "the other replica completes both jobs",
    )
    assert {r["pid"] for r in records(record) if r["type"] == "completed"} == {other.pid}
    sleeper.process.send_signal(signal.SIGCONT)
    # On waking, the sleeper finishes its callback; its commit (or lease check) fails.
    until(lambda: sleeper.figure("lease losses") >= 1, "the sleeper's lease loss")
    until(lambda: all(r.figure("held") == 0 for r in replicas), "all released")
    counts = Counter((r["job"], r["event"]) for r in records(record))
    twice = [k for k, n in counts.items() if n > 1]
    assert len(twice) == 1, counts  # the checkpoint the sleeper was inside
    assert len(counts) == 2 * 4  # started, 1 log, checkpoint, completed
    for job, event in twice:
        repeats = [r for r in records(record) if (r["job"], r["event"]) == (job, event)]
        assert [r["type"] for r in repeats] == ["checkpoint", "checkpoint"]
        assert len({r["token"] for r in repeats}) == 2  # two deliveries, two tokens
        assert repeats[0]["pid"] == sleeper.pid
    assert set(jobs) == {job for job, _ in counts}


def test_redis_killed_and_restarted_pauses_dispatch_and_loses_nothing(
    tmp_path: Path, backend: FakeBackend, redis: RedisServer, fleet: Callable[..., Replica]
) -> None:
    replicas = [fleet() for _ in range(2)]
    until(lambda: all(r.figure("members") == 2 for r in replicas), "two members")
    backend.create_jobs(4, logs=2, gate="g")
    record = tmp_path / "record.jsonl"
    until(lambda: sum(r.figure("held") for r in replicas) == 4, "all held")
    until(lambda: len(records(record)) >= 4 * 3, "the events before the gate")
    redis.stop()
    try:
        until(lambda: all(r.figure("held") == 0 for r in replicas), "leases lapse")
        backend.fake.gates["g"].set()  # events arrive while no replica may dispatch
        until(lambda: len(backend.fake.outcomes) == 4, "the jobs' last events in the log")
        assert len(records(record)) == 4 * 3  # dispatch paused
    finally:
        redis.start()
    until(lambda: len(records(record)) >= 4 * EVENTS_PER_JOB, "every event", timeout=60)
    counts = once_each(record)
    assert len(counts) == 4 * EVENTS_PER_JOB
