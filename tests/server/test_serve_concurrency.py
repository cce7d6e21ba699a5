"""``serve(max_concurrent_jobs=N)`` (``arkor-trio serve --max-concurrent-jobs N``): N train at once.

The rest wait ``queued`` and start, first come first served, as slots free up.
"""

from __future__ import annotations

from functools import partial

import httpx
import trio

from arkor_trio import ArkorClient, TrainingCompleted, TrainingLog
from arkor_trio.server import serve
from tests.server.conftest import SCOPE, FakeEngine, create_job, headers_for


async def statuses(http: httpx.AsyncClient, ids: list[str]) -> list[str]:
    return [(await http.get(f"/v1/jobs/{i}", params=SCOPE)).json()["job"]["status"] for i in ids]


async def first_event(client: ArkorClient, job_id: str, kind: type) -> None:
    """Wait (bounded) until the job's stream has an event of type ``kind``."""
    with trio.fail_after(20):
        async with client.events(job_id) as events:
            async for event in events:
                if isinstance(event, kind):
                    return


async def test_serve_trains_at_most_n_jobs_at_once(tmp_path, capsys) -> None:
    fake = FakeEngine()
    async with trio.open_nursery() as nursery:
        run = partial(serve, "127.0.0.1", 0, tmp_path / "d", engine=fake.engine(),
                      max_concurrent_jobs=2)  # fmt: skip
        backend = await nursery.start(run)
        async with httpx.AsyncClient(base_url=backend.base_url, headers=headers_for(backend)) as h:
            ids = [(await create_job(h, f"j{n}", logs=1, gate=f"g{n}"))["id"] for n in range(3)]
            async with backend.client() as client:
                await first_event(client, ids[0], TrainingLog)
                await first_event(client, ids[1], TrainingLog)
                assert await statuses(h, ids) == ["running", "running", "queued"]
                fake.gates["g0"].set()  # a slot frees up: the queued job starts
                await first_event(client, ids[0], TrainingCompleted)
                await first_event(client, ids[2], TrainingLog)
                assert await statuses(h, ids) == ["completed", "running", "running"]
            fake.gates["g1"].set()
            fake.gates["g2"].set()
        nursery.cancel_scope.cancel()
    assert "listening on" in capsys.readouterr().out
