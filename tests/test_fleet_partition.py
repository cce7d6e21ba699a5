"""A replica cut off from the network past its ttl (a network namespace whose link goes down).

One replica runs in its own network namespace (tests/_netns.py), reaching Redis and the local
backend through a veth pair; the other runs here. Redis and the backend listen on this side's
address of the pair. The link goes down while the isolated replica is inside a (slow) callback
and stays down until that replica reports it lost Redis and the other has completed both jobs
(at least the ttl: the lease must lapse first), and for 3 x ttl at least; then it comes back
up. As for SIGSTOP: only the event that was inside a callback can run twice, with two tokens.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING

from tests._fleet_procs import (
    DISCOVERY,
    SLACK,
    TTL,
    FakeBackend,
    Replica,
    records,
    replica_env,
    until,
)
from tests._netns import isolated_namespace
from tests._redis import redis_server

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def firsts(**conditions: Callable[[], bool]) -> dict[str, float]:
    """When (monotonic) each condition first held; bounded like ``until``."""
    seen: dict[str, float] = {}
    until(lambda: seen.update({k: time.monotonic() for k, c in conditions.items()
                               if k not in seen and c()}) or len(seen) == len(conditions),
          ", ".join(conditions))  # fmt: skip
    return seen


def test_partition_past_the_ttl_repeats_at_most_the_event_inside_a_callback(
    tmp_path: Path,
) -> None:
    (tmp_path / "redis").mkdir()
    with isolated_namespace() as ns, redis_server(tmp_path / "redis", host=ns.host) as redis:
        backend = FakeBackend(tmp_path / "backend", host=ns.host).start()
        env = replica_env(tmp_path, backend, FLEET_SLOW="1.5")
        isolated = Replica(env, redis, "partition", prefix=ns.prefix)
        other = Replica(env, redis, "partition")
        try:
            until(lambda: all(r.figure("members") == 2 for r in (isolated, other)), "members")
            jobs = backend.create_jobs(2, logs=1, gate="g")
            record = tmp_path / "record.jsonl"
            until(lambda: [isolated.figure("held"), other.figure("held")] == [1, 1], "1/1")
            until(lambda: len(records(record)) >= 2 * 2, "the events before the gate")
            backend.fake.gates["g"].set()
            # Cut the link while the isolated replica is inside its slow on_checkpoint.
            until(
                lambda: any(r["type"] == "checkpoint" and r["pid"] == isolated.pid
                            for r in records(record)),
                "the isolated replica's checkpoint callback",
            )  # fmt: skip
            ns.down()
            cut = time.monotonic()
            # Each condition's first moment, polled together (the order they happen in varies).
            seen = firsts(
                takeover=lambda: other.figure("takeovers") >= 1,
                completed=lambda: (
                    {r["job"] for r in records(record) if r["type"] == "completed"} == set(jobs)
                ),
                noticed=lambda: (
                    "waiting for Redis" in isolated.lines[-1] and isolated.figure("held") == 0
                ),
            )
            took = seen["takeover"] - cut
            assert took <= TTL + DISCOVERY + SLACK, f"takeover took {took:.2f} s"
            # The partition lasts 3 x ttl as the issue puts it (an input, not a wait for a state).
            until(lambda: time.monotonic() - cut >= 3 * TTL, "3 x ttl")
            down_for = time.monotonic() - cut
            ns.up()
            # Back on the network: its commit or lease check failed; it follows nothing more.
            until(lambda: isolated.figure("lease losses") >= 1, "the isolated replica's loss")
            until(lambda: "waiting for Redis" not in isolated.lines[-1], "Redis reached again")
            rejoined = until(lambda: isolated.figure("members") == 2, "the replica rejoins")
            # Its callbacks for started, the log and the checkpoint it was inside; none after.
            assert isolated.figure("dispatched") == 3
            counts = Counter((r["job"], r["event"]) for r in records(record))
            twice = [k for k, n in counts.items() if n > 1]
            assert len(twice) == 1, counts  # the checkpoint the isolated replica was inside
            assert len(counts) == 2 * 4  # started, 1 log, checkpoint, completed
            ((job, event),) = twice
            repeats = [r for r in records(record) if (r["job"], r["event"]) == (job, event)]
            assert [r["type"] for r in repeats] == ["checkpoint", "checkpoint"]
            assert len({r["token"] for r in repeats}) == 2  # two deliveries, two tokens
            assert [r["pid"] for r in repeats] == [isolated.pid, other.pid]
            assert {r["pid"] for r in records(record) if r["type"] == "completed"} == {other.pid}
            print(f"after the cut: takeover {seen['takeover'] - cut:.2f} s, both jobs completed "
                  f"{seen['completed'] - cut:.2f} s, the cut-off replica says 'waiting for "
                  f"Redis' {seen['noticed'] - cut:.2f} s; link down {down_for:.2f} s; "
                  f"rejoined {rejoined - cut - down_for:.2f} s after the link came up")  # fmt: skip
            assert isolated.stop() == 143
            assert other.stop() == 143
        finally:
            isolated.stop()
            other.stop()
            for gate in list(backend.fake.gates.values()):
                gate.set()
            backend.stop()
