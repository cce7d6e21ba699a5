"""A fleet replica process while Redis is down, and what it serves to Prometheus.

The replicas and the backend are those of tests/_fleet_procs.py; each test has its own
redis-server, started and stopped on its own port.
"""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING

import pytest

from tests._fleet_procs import (
    DISCOVERY,
    EVENTS_PER_JOB,
    SLACK,
    TTL,
    FakeBackend,
    Replica,
    backend,
    once_each,
    records,
    replica_env,
    until,
)
from tests._redis import RedisServer

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["backend"]  # fixtures


@pytest.mark.parametrize("down", ["refusing", "silent"])
def test_redis_down_at_start_the_replica_says_so_and_follows_once_it_is_back(
    tmp_path: Path, backend: FakeBackend, down: str
) -> None:
    """Redis down before the first discovery: refusing connections (not started yet) or
    silent (stopped with SIGSTOP: connections open, nothing answers, as across a partition).
    The replica's loop must not hang on it: it reports and retries, and follows once back."""
    (tmp_path / "redis-dir").mkdir()
    redis = RedisServer(tmp_path / "redis-dir")  # its own port
    if down == "silent":
        redis.start()
        assert redis.process is not None
        redis.process.send_signal(signal.SIGSTOP)
    jobs = backend.create_jobs(2, logs=2, gate="g")
    replica = Replica(replica_env(tmp_path, backend), redis, f"outage-{down}")
    try:
        until(lambda: any("waiting for Redis" in line for line in replica.lines), "the status")
        assert replica.process.poll() is None
        assert replica.figure("held") == 0
        if redis.process is None:
            redis.start()
        else:
            redis.process.send_signal(signal.SIGCONT)
        back = time.monotonic()
        held = until(lambda: replica.figure("held") == 2, "both jobs held")
        assert held - back <= TTL + DISCOVERY + SLACK, f"resumed after {held - back:.2f} s"
        assert "waiting for Redis" not in replica.lines[-1]
        backend.fake.gates["g"].set()
        record = tmp_path / "record.jsonl"
        until(lambda: len(records(record)) >= 2 * EVENTS_PER_JOB, "every event")
        counts = once_each(record)
        assert {job for job, _ in counts} == set(jobs)
        assert replica.stop() == 143
    finally:
        replica.stop()
        if redis.process is not None:
            redis.process.send_signal(signal.SIGCONT)
        redis.stop()
