"""``GET /metrics``: Prometheus text behind the token, read with prometheus-client's parser."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from arkor_trio.server import open_local_backend
from arkor_trio.server._store import DB_NAME

from .conftest import SCOPE, FrameReader, create_job, headers_for

if TYPE_CHECKING:
    from pathlib import Path

    from arkor_trio.server import LocalBackend

    from .conftest import FakeEngine


async def scrape(http: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``: (name, sorted labels) -> value."""
    response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


async def follow_to_end(http: httpx.AsyncClient, job_id: str) -> int:
    """Read a job's stream to its ``end`` frame; the number of event frames."""
    count = 0
    url = f"/v1/jobs/{job_id}/events/stream"
    async with http.stream("GET", url, params=SCOPE) as response:
        reader = FrameReader(response)
        while (frame := await reader.next()) is not None and frame.get("event") != "end":
            count += "id" in frame
    return count


async def test_metrics_need_the_token(backend: LocalBackend) -> None:
    async with httpx.AsyncClient(base_url=backend.base_url) as anonymous:
        response = await anonymous.get("/metrics")
    assert response.status_code == 401
    assert "arkor_backend" not in response.text


async def test_counters_move_as_a_job_runs(http: httpx.AsyncClient) -> None:
    before = await scrape(http)
    assert before[("arkor_backend_jobs", (("status", "completed"),))] == 0
    assert before[("arkor_backend_events_appended_total", ())] == 0
    job = await create_job(http, logs=4)
    with trio.fail_after(10):
        sent = await follow_to_end(http, job["id"])
    after = await scrape(http)
    # started + 4 logs + checkpoint + completed
    assert sent == 7
    assert after[("arkor_backend_events_appended_total", ())] == 7
    assert after[("arkor_backend_events_read_total", ())] >= 7
    assert after[("arkor_backend_jobs", (("status", "completed"),))] == 1
    assert after[("arkor_backend_jobs", (("status", "queued"),))] == 0
    writes = after[("arkor_backend_store_write_seconds_count", ())]
    assert writes >= 2  # the job row, then the events (one transaction or several)
    assert after[("arkor_backend_store_write_seconds_sum", ())] > 0


async def test_open_streams_are_counted_by_transport(http: httpx.AsyncClient) -> None:
    job = await create_job(http, gate="hold")
    url = f"/v1/jobs/{job['id']}/events/stream"
    async with http.stream("GET", url, params=SCOPE) as response:
        reader = FrameReader(response)
        assert (await reader.next() or {}).get("event") == "training.started"
        during = await scrape(http)
        assert during[("arkor_backend_stream_connections", (("transport", "sse"),))] == 1
        assert during[("arkor_backend_stream_connections", (("transport", "websocket"),))] == 0


async def test_refused_writes_are_counted_with_their_reason(
    tmp_path: Path, fake: FakeEngine
) -> None:
    data = tmp_path / "data"
    async with (
        open_local_backend(data, engine=fake.engine(), busy_timeout=0.2) as backend,
        httpx.AsyncClient(base_url=backend.base_url, headers=headers_for(backend)) as http,
    ):
        other = sqlite3.connect(data / DB_NAME, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holding SQLite's write lock
        try:
            body = {"name": "x", "config": {"model": "fake/tiny-model"}}
            refused = await http.post("/v1/jobs", params=SCOPE, json=body)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert refused.status_code == 503
        metrics = await scrape(http)
        key = ("arkor_backend_store_refused_writes_total", (("reason", "database locked"),))
        assert metrics[key] == 1


async def test_a_scraper_needs_only_the_token(backend: LocalBackend) -> None:
    # Prometheus sends no X-Arkor-Client: /metrics asks only for the bearer token.
    bearer = {"Authorization": f"Bearer {backend.token}"}
    async with httpx.AsyncClient(base_url=backend.base_url, headers=bearer) as scraper:
        metrics = await scrape(scraper)
    assert ("arkor_backend_events_appended_total", ()) in metrics
