"""Exactly once across real processes sharing one FileCursorStore file (issue 14, items 1-3).

Each follower is a real process (``tests/_cursor_follower.py``) attached to jobs of a real local
backend (a background thread of this process, real sockets); it prints one JSON line per
callback. Every test counts callbacks over all processes and runs: each must be 1, and together
they must be every event of the backend's log. No sleeps: processes are read line by line, and
a watchdog kills one that would hang the suite.
"""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from arkor_trio import (
    CheckpointSaved,
    TrainingCancelled,
    TrainingCompleted,
    TrainingFailed,
    TrainingLog,
    TrainingStarted,
)
from tests._cli_backend import BackgroundBackend, client_env

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from arkor_trio import ArkorClient

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")

LIMIT = 60.0
Call = tuple[str, str, "int | None"]


@pytest.fixture(scope="module")
def bg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundBackend]:
    backend = BackgroundBackend(tmp_path_factory.mktemp("cursor-processes")).start()
    yield backend
    backend.stop()


@pytest.fixture(autouse=True)
def _reap() -> Iterator[None]:
    """Kill and close every follower a test started, whatever the test's outcome."""
    yield
    while Follower.started:
        Follower.started.pop().close()


class Follower:
    """One ``tests._cursor_follower`` process; stdout read line by line, killed after LIMIT."""

    started: ClassVar[list[Follower]] = []

    def __init__(self, bg: BackgroundBackend, store: Path, *jobs: str, options: tuple = ()):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests._cursor_follower", str(store), *jobs, *options],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=client_env(bg),
        )
        self.calls: list[Call] = []
        self._watchdog = threading.Timer(LIMIT, self.proc.kill)
        self._watchdog.daemon = True
        self._watchdog.start()
        Follower.started.append(self)

    def close(self) -> None:
        self._watchdog.cancel()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"the follower ended early: {self.proc.wait()} {self.stderr()}"
        return line.strip()

    def wait_for(self, wanted: str | dict[str, Any]) -> None:
        """Read stdout until ``wanted`` (a plain line, or a callback's fields) appears."""
        while True:
            line = self._line()
            if line == wanted:
                return
            if line.startswith("{"):
                call = json.loads(line)
                self.calls.append((call["job"], call["cb"], call["step"]))
                if isinstance(wanted, dict) and wanted.items() <= call.items():
                    return

    def wait_for_stderr(self, fragment: str) -> str:
        assert self.proc.stderr is not None
        while True:
            line = self.proc.stderr.readline()
            assert line, f"no {fragment!r} on stderr"
            if fragment in line:
                return line

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self) -> int:
        """Read to the end; the exit status."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                call = json.loads(line)
                self.calls.append((call["job"], call["cb"], call["step"]))
        code = self.proc.wait()
        self._watchdog.cancel()
        return code

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def backend_calls(bg: BackgroundBackend, job_id: str) -> list[Call]:
    """What one follower must see for ``job_id``: every event of the backend's log, in order."""
    names = {
        TrainingStarted: "started",
        TrainingLog: "log",
        CheckpointSaved: "checkpoint",
        TrainingCompleted: "completed",
        TrainingFailed: "failed",
        TrainingCancelled: "cancelled",
    }

    async def run(client: ArkorClient) -> list[Call]:
        async with client.events(job_id) as stream:
            return [(job_id, names[type(e)], getattr(e, "step", None)) async for e in stream]

    calls: list[Call] = bg.call(run)
    return calls


def assert_each_once(calls: list[Call], expected: list[Call]) -> None:
    counts = collections.Counter(calls)
    assert {call: n for call, n in counts.items() if n != 1} == {}  # nothing twice
    assert sorted(counts, key=repr) == sorted(expected, key=repr)  # nothing missing


def test_two_processes_two_jobs_one_file_restarted(bg, tmp_path):
    """Item 1: two followers of two jobs share the file; each stops mid-run; both restart."""
    jobs = [bg.train(steps=8, logging_steps=1, save_steps=4) for _ in range(2)]
    store = tmp_path / "cursors.json"
    first = [Follower(bg, store, job, options=("--gate", "--leave-after", "3")) for job in jobs]
    for follower in first:
        follower.wait_for("ready")  # both stores are open before either writes
    for follower in first:
        follower.go()
    assert [f.finish() for f in first] == [0, 0]
    on_disk = json.loads(store.read_text(encoding="utf-8"))["cursors"]
    assert sorted(on_disk) == sorted(jobs)  # neither process erased the other's cursor

    again = [Follower(bg, store, job) for job in jobs]
    assert [f.finish() for f in again] == [0, 0]
    calls = [call for f in first + again for call in f.calls]
    assert_each_once(calls, backend_calls(bg, jobs[0]) + backend_calls(bg, jobs[1]))
    for follower in first:
        assert [cb for _, cb, step in follower.calls if cb == "log"] == ["log"] * 3


def test_two_processes_attach_to_the_same_job_at_once(bg, tmp_path):
    """Item 2: one follower per job per store: the other waits, then finds the job finished."""
    job = bg.train(steps=6, logging_steps=1, save_steps=3)
    store = tmp_path / "cursors.json"
    both = [Follower(bg, store, job, options=("--gate",)) for _ in range(2)]
    for follower in both:
        follower.wait_for("ready")
    for follower in both:
        follower.go()
    assert [f.finish() for f in both] == [0, 0]
    assert_each_once(both[0].calls + both[1].calls, backend_calls(bg, job))
    assert sorted(len(f.calls) > 0 for f in both) == [False, True]  # one did it all


def test_a_dead_follower_never_blocks_the_job(bg, tmp_path):
    """Item 2: the waiting follower takes over, from the cursor, when the holder is killed."""
    job = bg.start_idle_job()  # logs step 1, then runs silently until cancelled
    store = tmp_path / "cursors.json"
    try:
        holder = Follower(bg, store, job)
        holder.wait_for({"cb": "log", "step": 1})
        waiter = Follower(bg, store, job)
        waiter.wait_for("ready")
        assert "followed by another follower (pid" in waiter.wait_for_stderr("waiting")
        holder.kill()  # SIGKILL: no cleanup ran; the kernel drops its flock
    finally:
        bg.call(lambda client: client.cancel_job(job))  # never leave a job running
    assert waiter.finish() == 0
    assert waiter.calls == [(job, "cancelled", None)]  # resumed after the holder's cursor
    assert_each_once(holder.calls + waiter.calls, backend_calls(bg, job))


def test_a_kill_between_cursor_and_finished_mark_never_refires_on_completed(bg, tmp_path):
    """Item 3: the terminal event's cursor and the finished mark are one write."""
    job = bg.train(steps=4, logging_steps=1, save_steps=2)
    store = tmp_path / "cursors.json"
    dying = Follower(bg, store, job, options=("--kill-between",))
    assert dying.finish() == 9  # os._exit right after the terminal event's write
    assert dying.calls[-1] == (job, "completed", None)
    restarted = Follower(bg, store, job)
    assert restarted.finish() == 0
    assert restarted.calls == []
    assert_each_once(dying.calls + restarted.calls, backend_calls(bg, job))
