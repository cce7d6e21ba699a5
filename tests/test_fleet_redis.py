"""A fleet of replica processes on a real redis-server and a real local backend.

Replicas are ``arkor-trio fleet`` processes (``tests._fleet_callbacks`` records every callback
with its ``ctx.delivery``); the backend runs in a thread of this process with the fake engine,
whose gates hold jobs running until a test releases them. Small ttls (1 s) keep it quick; every
wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from arkor_trio.server import open_local_backend
from tests._cli_backend import BackgroundBackend
from tests._redis import RedisServer, redis_server
from tests.server.conftest import SCOPE, FakeEngine, headers_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
TTL = 1.0
DISCOVERY = 0.25
#: Allowance for a busy 2-core machine on top of a bound the fleet promises.
SLACK = 2.0


class FakeBackend(BackgroundBackend):
    """The local backend with the fake engine, in a thread."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.fake = FakeEngine()

    async def _main(self) -> None:
        try:
            async with open_local_backend(
                self.data_dir, engine=self.fake.engine(), max_concurrent_jobs=64
            ) as backend:
                self._backend = backend
                self._token = trio.lowlevel.current_trio_token()
                self._stop = trio.Event()
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            raise

    def create_jobs(self, count: int, **config: Any) -> list[str]:
        b = self.backend
        ids = []
        with httpx.Client(base_url=b.base_url, headers=headers_for(b), timeout=30) as http:
            for i in range(count):
                body = {"name": f"j{i}", "config": {"model": "fake/tiny-model", **config}}
                response = http.post("/v1/jobs", params=SCOPE, json=body)
                assert response.status_code == 201, response.text
                ids.append(response.json()["job"]["id"])
        return ids


class Replica:
    """One ``arkor-trio fleet`` process; its status lines are read by a thread."""

    def __init__(self, env: dict[str, str], redis: RedisServer, namespace: str) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "arkor_trio.cli", "fleet", "--store", redis.url,
             "--namespace", namespace, "--callbacks", "tests._fleet_callbacks:callbacks",
             "--lease-ttl", str(TTL), "--discovery-interval", str(DISCOVERY)],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.strip())

    @property
    def pid(self) -> int:
        return self.process.pid

    def figure(self, name: str) -> int:
        for line in reversed(self.lines):
            match = re.search(rf"\b{name} (\d+)", line)
            if match:
                return int(match.group(1))
        return -1

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
        try:
            code = self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(10)
        self._reader.join(10)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return code


def until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> float:
    """Wait for a condition the processes reach by themselves; return when (monotonic)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return time.monotonic()


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis"), appendonly=True) as server:
        yield server


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[FakeBackend]:
    bg = FakeBackend(tmp_path / "backend").start()
    try:
        yield bg
    finally:
        for gate in list(bg.fake.gates.values()):
            gate.set()
        bg.stop()


@pytest.fixture
def fleet(
    tmp_path: Path, backend: FakeBackend, redis: RedisServer, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Replica]]:
    started: list[Replica] = []
    namespace = re.sub(r"\W", "-", request.node.name)

    def start(**extra_env: str) -> Replica:
        env = {**os.environ, **backend.env(), "HOME": str(tmp_path),
               "FLEET_RECORD": str(tmp_path / "record.jsonl"), "PYTHONPATH": str(ROOT),
               **extra_env}  # fmt: skip
        replica = Replica(env, redis, namespace)
        started.append(replica)
        return replica

    yield start
    for replica in started:
        replica.stop()


def once_each(path: Path) -> Counter[tuple[str, str]]:
    counts = Counter((r["job"], r["event"]) for r in records(path))
    twice = {k: n for k, n in counts.items() if n > 1}
    assert not twice, f"dispatched more than once: {twice}"
    return counts


EVENTS_PER_JOB = 5  # started, 2 logs, checkpoint, completed


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
