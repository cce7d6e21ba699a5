"""Replica processes of the fleet tests and the backend they follow (tests/test_fleet*.py).

Replicas are ``arkor-trio fleet`` processes (``tests._fleet_callbacks`` records every callback
with its ``ctx.delivery``); the backend runs in a thread of the test process with the fake
engine, whose gates hold jobs running until a test releases them. A replica can run under a
command prefix (``ip netns exec NS``: the partition test) and reach Redis and the backend at
another address than 127.0.0.1.
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
    from collections.abc import Callable, Iterator, Sequence

ROOT = Path(__file__).resolve().parent.parent
TTL = 1.0
DISCOVERY = 0.25
#: Allowance for a busy 2-core machine on top of a bound the fleet promises.
SLACK = 2.0


class FakeBackend(BackgroundBackend):
    """The local backend with the fake engine, in a thread."""

    def __init__(self, data_dir: Path, host: str = "127.0.0.1") -> None:
        super().__init__(data_dir)
        self.fake = FakeEngine()
        self.host = host

    async def _main(self) -> None:
        try:
            async with open_local_backend(
                self.data_dir, engine=self.fake.engine(), max_concurrent_jobs=64, host=self.host
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

    def __init__(
        self,
        env: dict[str, str],
        redis: RedisServer,
        namespace: str,
        *,
        prefix: Sequence[str] = (),
        args: Sequence[str] = (),
    ) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "arkor_trio.cli", "fleet", "--store", redis.url,
             "--namespace", namespace, "--callbacks", "tests._fleet_callbacks:callbacks",
             "--lease-ttl", str(TTL), "--discovery-interval", str(DISCOVERY), *args],
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


def replica_env(tmp_path: Path, backend: FakeBackend, **extra: str) -> dict[str, str]:
    """A replica's environment: the backend, its own HOME, the shared record file."""
    return {**os.environ, **backend.env(), "HOME": str(tmp_path),
            "FLEET_RECORD": str(tmp_path / "record.jsonl"), "PYTHONPATH": str(ROOT),
            **extra}  # fmt: skip


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

    def start(*, args: Sequence[str] = (), **extra_env: str) -> Replica:
        replica = Replica(replica_env(tmp_path, backend, **extra_env), redis, namespace, args=args)
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
