"""``arkor-trio jobs watch``: every running job over one feed, against a real backend."""

from __future__ import annotations

import io
import json
from functools import partial

import httpx
import trio

from arkor_trio.cli import build_parser
from arkor_trio.cli._watch import jobs_watch
from arkor_trio.server import open_local_backend
from tests.server.conftest import FakeEngine, create_job, headers_for, prefill


class Sink(io.StringIO):
    """Collects the output; ``seen`` is set once ``want`` lines were written."""

    def __init__(self, want: int) -> None:
        super().__init__()
        self.want = want
        self.seen = trio.Event()

    def write(self, text: str) -> int:
        written = super().write(text)
        if self.getvalue().count("\n") >= self.want:
            self.seen.set()
        return written


def test_watch_is_registered_under_jobs() -> None:
    args = build_parser().parse_args(["jobs", "watch", "--once", "--poll", "0.5"])
    assert args.handler.__name__ == "_cmd_watch"
    assert (args.once, args.poll) == (True, 0.5)


async def test_watch_follows_every_running_job_and_only_those(tmp_path) -> None:
    fake = FakeEngine()
    async with (
        open_local_backend(tmp_path / "d", engine=fake.engine(), max_concurrent_jobs=2) as b,
        httpx.AsyncClient(base_url=b.base_url, headers=headers_for(b)) as http,
        b.client() as client,
    ):
        prefill(b.data_dir, "job_old", 1)  # finished before the watch: not shown
        first = await create_job(http, "first", logs=2, gate="w")
        second = await create_job(http, "second", logs=1, gate="w")
        out = Sink(5)  # started + 2 logs, started + 1 log: both jobs are live
        async with trio.open_nursery() as nursery:
            codes = []

            async def watch() -> None:
                codes.append(await jobs_watch(client, out, once=True, poll=0.05, as_json=True))

            nursery.start_soon(watch)
            await out.seen.wait()
            fake.gates["w"].set()
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert codes == [0]
    by_job: dict[str, list[str]] = {}
    for line in lines:
        by_job.setdefault(line["name"], []).append(line["type"])
    assert by_job == {
        "first": ["training.started", "training.log", "training.log", "checkpoint.saved",
                  "training.completed"],
        "second": ["training.started", "training.log", "checkpoint.saved",
                   "training.completed"],
    }  # fmt: skip
    assert {line["job"] for line in lines} == {first["id"], second["id"]}


class Lines(io.StringIO):
    """Collects the output; ``wait_for(text)`` returns once a line containing ``text`` arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = trio.Event()

    def write(self, text: str) -> int:
        written = super().write(text)
        self.changed.set()
        self.changed = trio.Event()
        return written

    def lines(self) -> list[str]:
        return self.getvalue().splitlines()

    async def wait_for(self, text: str) -> None:
        with trio.fail_after(20):
            while not any(text in line for line in self.lines()):
                await self.changed.wait()


async def test_watch_prints_one_summary_line_per_event_with_step_loss_and_eta(tmp_path) -> None:
    fake = FakeEngine()
    async with (
        open_local_backend(tmp_path / "d", engine=fake.engine()) as b,
        httpx.AsyncClient(base_url=b.base_url, headers=headers_for(b)) as http,
        b.client() as client,
    ):
        await create_job(http, "summary", logs=3, gate="w", maxSteps=10)
        out = Lines()
        async with trio.open_nursery() as nursery:
            codes = []

            async def watch() -> None:
                codes.append(await jobs_watch(client, out, once=True, poll=0.05))

            nursery.start_soon(watch)
            await out.wait_for("summary  step 3/10")
            fake.gates["w"].set()
    assert codes == [0]
    lines = out.lines()
    assert lines[0] in ("watching 1 job(s)", "summary  queued (" + lines[0].split("(")[-1])
    body = [line for line in lines if line.startswith("summary  ") and "queued" not in line]
    assert body[0] == "summary  started"
    assert body[1] == "summary  step 1/10  loss 1.0000"  # no rate yet: no eta
    assert body[2].startswith("summary  step 2/10  loss 0.5000  eta 0:")
    assert body[3].startswith("summary  step 3/10  loss 0.3333  eta 0:")
    assert body[4:] == ["summary  checkpoint at step 3", "summary  completed"]
    assert lines[-1] == "all 1 followed job(s) ended"
    assert "{" not in out.getvalue()  # no metadata JSON in the summary view


async def test_watch_events_mode_keeps_every_field(tmp_path) -> None:
    fake = FakeEngine()
    async with (
        open_local_backend(tmp_path / "d", engine=fake.engine()) as b,
        httpx.AsyncClient(base_url=b.base_url, headers=headers_for(b)) as http,
        b.client() as client,
    ):
        await create_job(http, "full", logs=1, gate="w")
        out = Lines()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(jobs_watch, client, out, once=True, poll=0.05, events=True))
            await out.wait_for("training.log")
            fake.gates["w"].set()
    started = next(line for line in out.lines() if "training.started" in line)
    assert started.startswith("full      1  training.started  metadata=")


async def test_watch_says_so_when_nothing_runs(tmp_path) -> None:
    async with open_local_backend(tmp_path / "d", engine=FakeEngine().engine()) as b:
        prefill(b.data_dir, "job_old", 1)
        async with b.client() as client:
            out = Lines()
            with trio.fail_after(20):
                assert await jobs_watch(client, out, once=True, poll=0.05) == 0
            assert out.lines() == ["no queued or running jobs"]
            out = Lines()
            with trio.move_on_after(0.3):
                await jobs_watch(client, out, poll=5)
            assert out.lines() == ["no queued or running jobs; waiting for one (looking every 5 s)"]


def test_watch_options_parse() -> None:
    args = build_parser().parse_args(["jobs", "watch", "--events"])
    assert (args.events, args.json) == (True, False)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_watch_survives_a_backend_restart_and_shows_the_job_it_failed(tmp_path) -> None:
    # A real backend, stopped while a job trains and started again on the same port and data
    # dir: the watcher says it is reconnecting, then shows the job failing ("backend
    # restarted", written by the new process) instead of exiting with "cannot reach".
    data, port = tmp_path / "d", _free_port()
    out = Lines()
    codes: list[int] = []
    async with trio.open_nursery() as nursery:
        async with open_local_backend(data, port, engine=FakeEngine().engine()) as first:
            async with httpx.AsyncClient(base_url=first.base_url, headers=headers_for(first)) as h:
                await create_job(h, "across", logs=1, gate="never")
            client = first.client()

            async def watch() -> None:
                async with client:
                    codes.append(await jobs_watch(client, out, once=True, poll=0.05))

            nursery.start_soon(watch)
            await out.wait_for("across  step 1")
        await out.wait_for("reconnecting: ")  # the backend is down; the watcher stays
        async with open_local_backend(data, port, engine=FakeEngine().engine()):
            await out.wait_for("across  failed: backend restarted")
            await out.wait_for("all 1 followed job(s) ended")
    assert codes == [0]
    lines = out.lines()
    down = next(i for i, line in enumerate(lines) if line.startswith("reconnecting: "))
    assert "cannot reach" in lines[down] or "ConnectError" in lines[down]
    assert lines.index("reconnected: the backend answers again") > down
    assert lines.index("across  failed: backend restarted") > down
