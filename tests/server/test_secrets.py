"""Dataset secrets never leave the request: not stored, not echoed, not in events or logs."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import httpx

from arkor_trio.server import open_local_backend
from arkor_trio.server._store import DB_NAME

from .conftest import FAKE_MODEL, SCOPE, data_of, headers_for, read_stream

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from arkor_trio.server import LocalBackend

SECRET = "s3cret-dataset-token"


async def test_dataset_token_is_redacted_everywhere(
    http: httpx.AsyncClient, backend: LocalBackend
) -> None:
    source = {
        "type": "blob",
        "url": f"http://user:{SECRET}@127.0.0.1:9/d.jsonl?sig={SECRET}",
        "token": SECRET,
        "headers": {"X-Api-Key": SECRET},
    }
    created = await http.post(
        "/v1/jobs",
        params=SCOPE,
        json={"name": "j", "config": {"model": FAKE_MODEL, "datasetSource": source}},
    )
    assert created.status_code == 201
    job_id = created.json()["job"]["id"]
    await read_stream(http, job_id)
    answers = [
        created.text,
        (await http.get(f"/v1/jobs/{job_id}", params=SCOPE)).text,
        (await http.get("/v1/jobs", params=SCOPE)).text,
    ]
    for text in answers:
        assert SECRET not in text
    shown = created.json()["job"]["config"]["datasetSource"]
    assert shown == {
        "type": "blob",
        "url": "http://user:***@127.0.0.1:9/d.jsonl?***",
        "token": "[redacted]",
        "headers": "[redacted]",
    }
    db = backend.data_dir / DB_NAME
    for path in (db, db.with_name(DB_NAME + "-wal")):
        if path.exists():
            assert SECRET.encode() not in path.read_bytes()


async def test_a_failing_http_dataset_names_its_url_without_secrets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://me:{SECRET}@127.0.0.1:9/missing.jsonl?sig={SECRET}"  # port 9: refused
    config = {
        "model": "unsloth/gemma-4-E4B-it",
        "datasetSource": {"type": "blob", "url": url, "token": SECRET},
    }
    caplog.set_level(logging.DEBUG)
    async with (
        open_local_backend(tmp_path / "data") as backend,
        httpx.AsyncClient(
            base_url=backend.base_url, headers=headers_for(backend), verify=False
        ) as http,
    ):
        created = await http.post("/v1/jobs", params=SCOPE, json={"name": "j", "config": config})
        assert created.status_code == 201
        frames = await read_stream(http, created.json()["job"]["id"])
    error = data_of(frames[-2])["error"]
    assert "http://me:***@127.0.0.1:9/missing.jsonl?***" in error
    assert SECRET not in "".join(f["data"] for f in frames)
    assert SECRET not in caplog.text
