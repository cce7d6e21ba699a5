"""A fleet replica process while Redis is down, and what it serves to Prometheus.

The replicas and the backend are those of tests/_fleet_procs.py; each test has its own
redis-server, started and stopped on its own port.
"""

from __future__ import annotations

import signal
import socket
import sys
import time
from typing import TYPE_CHECKING

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

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
from tests._redis import RedisServer, redis_server

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


def scrape(replica: Replica) -> dict[str, float]:
    """The replica's ``--metrics-port`` figures, read with prometheus-client's own parser."""
    url = next(line.split(": ", 1)[1] for line in replica.lines if line.startswith("fleet metrics"))
    text = httpx.get(url, timeout=10).text
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_metrics_port_serves_the_figures_the_status_line_shows(
    tmp_path: Path, backend: FakeBackend
) -> None:
    (tmp_path / "redis-dir").mkdir()
    with redis_server(tmp_path / "redis-dir") as redis:
        env = replica_env(tmp_path, backend)
        watched = Replica(env, redis, "metrics", args=["--metrics-port", "0"])
        other = Replica(env, redis, "metrics", args=["--transport", "sse"])
        try:
            until(lambda: all(r.figure("members") == 2 for r in (watched, other)), "members")
            until(lambda: any(x.startswith("fleet metrics: ") for x in watched.lines), "the URL")
            backend.create_jobs(4, logs=2, gate="g")
            record = tmp_path / "record.jsonl"
            until(lambda: [watched.figure("held"), other.figure("held")] == [2, 2], "2/2")
            until(lambda: len(records(record)) >= 4 * 3, "the events before the gate")
            until(lambda: watched.figure("dispatched") == 2 * 3, "the status line settles")
            got = scrape(watched)
            assert got["arkor_fleet_jobs_held"] == watched.figure("held") == 2
            assert got["arkor_fleet_jobs_assigned"] == 2
            assert got["arkor_fleet_members"] == 2
            assert got["arkor_fleet_store_up"] == 1
            assert got["arkor_fleet_takeovers_total"] == 0
            assert got["arkor_fleet_dispatched_total"] == watched.figure("dispatched") == 6
            # Every handled event is committed (also those without a callback), none refused.
            assert got["arkor_fleet_commits_total"] == watched.figure("commits") >= 6
            assert got["arkor_fleet_commits_refused_total"] == 0
            assert got["arkor_fleet_lag_seconds"] == 0
            # The local backend offers the job feed: 'auto' takes it, '--transport sse' not.
            assert watched.lines[-1].endswith(", one feed")
            assert other.lines[-1].endswith(", a stream per job")
            other.process.kill()  # its two jobs are taken over by the watched replica
            until(lambda: watched.figure("held") == 4, "the takeover")
            until(lambda: watched.figure("members") == 1, "the other drops out")
            got = scrape(watched)
            assert got["arkor_fleet_takeovers_total"] == watched.figure("takeovers") == 2
            assert got["arkor_fleet_jobs_held"] == 4
            assert got["arkor_fleet_members"] == 1
            backend.fake.gates["g"].set()
            until(lambda: len(records(record)) >= 4 * EVENTS_PER_JOB, "every event")
            until(lambda: watched.figure("held") == 0, "all released")
            until(lambda: "lag 0.0s" in watched.lines[-1], "the status line settles")
            got = scrape(watched)
            mine = [r for r in records(record) if r["pid"] == watched.pid]
            assert got["arkor_fleet_dispatched_total"] == watched.figure("dispatched") == len(mine)
            assert got["arkor_fleet_commits_total"] == watched.figure("commits")
            assert got["arkor_fleet_jobs_held"] == 0
            assert watched.stop() == 143
        finally:
            watched.stop()
            other.stop()


def test_metrics_port_in_use_is_one_line_and_exit_code_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from arkor_trio.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["fleet", "--store", "redis://127.0.0.1:1/0", "--namespace", "n",
                "--callbacks", "arkor_trio:Callbacks", "--metrics-port", str(port)]  # fmt: skip
        assert main(args) == 2
    err = capsys.readouterr().err
    assert f"--metrics-port {port}: cannot listen on 127.0.0.1" in err
    assert err.count("\n") == 1


def test_metrics_port_without_prometheus_client_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from arkor_trio.cli import main

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    args = ["fleet", "--store", "redis://127.0.0.1:1/0", "--namespace", "n",
            "--callbacks", "arkor_trio:Callbacks", "--metrics-port", "0"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--metrics-port needs prometheus-client: pip install 'arkor-trio[server]'" in err
