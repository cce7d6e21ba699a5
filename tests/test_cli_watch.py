"""``arkor-trio jobs watch``: every running job over one feed, against a real backend."""

from __future__ import annotations

import io
import json

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
